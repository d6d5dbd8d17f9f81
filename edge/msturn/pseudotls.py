"""[MS-TURN] over TCP on the TURN TLS port: the fixed "pseudo-TLS" handshake, then 4-byte framing.

Office Communicator / Lync (and libnice in OC2007 / OC2007R2 mode with
``NICE_RELAY_TYPE_TURN_TLS``) do not run TLS to the TURN server: they send a
fixed ClientHello blob, expect a fixed ServerHello blob back, and from then
on speak plain [MS-TURN] in frames.  Sources (libnice, read in full):

* ``socket/pseudossl.c`` (libnice/libnice, commit b80bc3a1): the blobs.
  ``SSL_CLIENT_MSOC_HANDSHAKE`` (46 bytes, a TLS 1.0 record header
  ``16 03 01 00 2d``) is what the client sends in MSOC mode, which
  ``agent.c`` picks for OC2007 and OC2007R2; ``SSL_SERVER_MSOC_HANDSHAKE``
  (83 bytes) is the answer.  The client checks the answer in
  ``server_handshake_valid``: one ``recv`` of exactly
  ``sizeof(SSL_SERVER_MSOC_HANDSHAKE)`` bytes must come back with exactly
  that length, and it must equal the blob after bytes 11..42 and 44..75
  (the random and the session id) are zeroed.  So the server answers the
  whole blob in one write and nothing else before the client's first frame.
  A mismatch closes the client's socket.  The GOOGLE mode pair
  (``SSL_CLIENT_GOOGLE_HANDSHAKE``, 72 bytes, an SSLv2-style hello starting
  ``80 46``, answered by the 79-byte ``SSL_SERVER_GOOGLE_HANDSHAKE``, compared
  byte for byte) is accepted too; it is the only pair older libnice has.
* ``socket/udp-turn-over-tcp.c`` (same repository, commit 1513ce23), OC2007
  compatibility: every frame is ``type (1 byte) | 0 (1 byte) | length
  (16 bits, big endian, of the payload)`` then the payload, no padding.
  Type ``MS_TURN_CONTROL_MESSAGE = 2`` carries a STUN / [MS-TURN] message,
  ``MS_TURN_END_TO_END_DATA = 3`` unframed end-to-end data.  The client picks
  2 when the MAGIC-COOKIE attribute sits first in the message and 3
  otherwise (raw data after Set Active Destination); on receipt it accepts
  both types and treats any other type as a broken stream.

The server answers here with type 2 for whatever the engine sends (responses
and Data indications, which carry the MAGIC-COOKIE) and type 3 only for
bytes that are not a STUN message (ChannelData).  Type-2 frames from the
client go to the engine like one UDP datagram; type-3 frames go to the
allocation's active destination, or are dropped.

Not interoperable yet: libnice 0.1.21 itself (Debian, OC2007R2 with
``Nice.RelayType.TLS``) completes this handshake here, then sends its
Allocate as ``03 00`` followed by the bare STUN message, without the 16-bit
length: its TURN control messages skip the RFC 4571 length that the
type-picking code in udp-turn-over-tcp.c expects (``MAGIC_COOKIE_OFFSET``
counts it). Such a frame is read as a frame of the wrong size, and the
connection is closed.

The decision between pseudo-TLS and real TLS is taken on the first bytes:
the client blobs are fixed, a real ClientHello differs within them (its
record length, at least), so the connection is buffered only while it is
still a prefix of a blob.  Everything else is replayed unchanged into the
real TLS stack, so TURN over TLS keeps working on the same port.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IAddress, IProtocolFactory, ITransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from edge.turn.streams import transport_of
from um.netguard import settle_connection

from .message import is_ms_turn
from .server import dialect_of

if TYPE_CHECKING:
    from edge.turn.allocation import Allocation
    from edge.turn.engine import TurnEngine

__all__ = [
    "CLIENT_GOOGLE_HANDSHAKE",
    "CLIENT_MSOC_HANDSHAKE",
    "CONTROL",
    "DATA",
    "SERVER_GOOGLE_HANDSHAKE",
    "SERVER_MSOC_HANDSHAKE",
    "MsStreamProtocol",
    "PseudoTlsFactory",
    "frame",
]

log = Logger(namespace="umedge.msturn")

#: libnice socket/pseudossl.c SSL_CLIENT_MSOC_HANDSHAKE (OC2007 / OC2007R2 over TURN_TLS).
CLIENT_MSOC_HANDSHAKE = bytes([
    0x16, 0x03, 0x01, 0x00, 0x2d, 0x01, 0x00, 0x00,
    0x29, 0x03, 0x01, 0xc1, 0xfc, 0xd5, 0xa3, 0x6d,
    0x93, 0xdd, 0x7e, 0x0b, 0x45, 0x67, 0x3f, 0xec,
    0x79, 0x85, 0xfb, 0xbc, 0x3f, 0xd6, 0x60, 0xc2,
    0xce, 0x84, 0x85, 0x08, 0x1b, 0x81, 0x21, 0xbc,
    0xaa, 0x10, 0xfb, 0x00, 0x00, 0x02, 0x00, 0x18,
    0x01, 0x00])

#: libnice socket/pseudossl.c SSL_SERVER_MSOC_HANDSHAKE (random and session id all zero).
SERVER_MSOC_HANDSHAKE = bytes([
    0x16, 0x03, 0x01, 0x00, 0x4e, 0x02, 0x00, 0x00,
    0x46, 0x03, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x18, 0x00, 0x0e,
    0x00, 0x00, 0x00])

#: libnice socket/pseudossl.c SSL_CLIENT_GOOGLE_HANDSHAKE.
CLIENT_GOOGLE_HANDSHAKE = bytes([
    0x80, 0x46, 0x01, 0x03, 0x01, 0x00, 0x2d, 0x00,
    0x00, 0x00, 0x10, 0x01, 0x00, 0x80, 0x03, 0x00,
    0x80, 0x07, 0x00, 0xc0, 0x06, 0x00, 0x40, 0x02,
    0x00, 0x80, 0x04, 0x00, 0x80, 0x00, 0x00, 0x04,
    0x00, 0xfe, 0xff, 0x00, 0x00, 0x0a, 0x00, 0xfe,
    0xfe, 0x00, 0x00, 0x09, 0x00, 0x00, 0x64, 0x00,
    0x00, 0x62, 0x00, 0x00, 0x03, 0x00, 0x00, 0x06,
    0x1f, 0x17, 0x0c, 0xa6, 0x2f, 0x00, 0x78, 0xfc,
    0x46, 0x55, 0x2e, 0xb1, 0x83, 0x39, 0xf1, 0xea])

#: libnice socket/pseudossl.c SSL_SERVER_GOOGLE_HANDSHAKE.
SERVER_GOOGLE_HANDSHAKE = bytes([
    0x16, 0x03, 0x01, 0x00, 0x4a, 0x02, 0x00, 0x00,
    0x46, 0x03, 0x01, 0x42, 0x85, 0x45, 0xa7, 0x27,
    0xa9, 0x5d, 0xa0, 0xb3, 0xc5, 0xe7, 0x53, 0xda,
    0x48, 0x2b, 0x3f, 0xc6, 0x5a, 0xca, 0x89, 0xc1,
    0x58, 0x52, 0xa1, 0x78, 0x3c, 0x5b, 0x17, 0x46,
    0x00, 0x85, 0x3f, 0x20, 0x0e, 0xd3, 0x06, 0x72,
    0x5b, 0x5b, 0x1b, 0x5f, 0x15, 0xac, 0x13, 0xf9,
    0x88, 0x53, 0x9d, 0x9b, 0xe8, 0x3d, 0x7b, 0x0c,
    0x30, 0x32, 0x6e, 0x38, 0x4d, 0xa2, 0x75, 0x57,
    0x41, 0x6c, 0x34, 0x5c, 0x00, 0x04, 0x00])

#: client blob -> the server's answer
HANDSHAKES = {
    CLIENT_MSOC_HANDSHAKE: SERVER_MSOC_HANDSHAKE,
    CLIENT_GOOGLE_HANDSHAKE: SERVER_GOOGLE_HANDSHAKE,
}

#: udp-turn-over-tcp.c MsTurnPayloadType
CONTROL = 2  # MS_TURN_CONTROL_MESSAGE
DATA = 3  # MS_TURN_END_TO_END_DATA
_HEADER = struct.Struct("!BBH")


def frame(payload: bytes, kind: int | None = None) -> bytes:
    """One OC2007 stream frame; the type is CONTROL for STUN / [MS-TURN] messages, else DATA."""
    if kind is None:
        kind = CONTROL if payload and (payload[0] < 0x40 or is_ms_turn(payload)) else DATA
    return _HEADER.pack(kind, 0, len(payload)) + payload


class MsStreamProtocol(Protocol):
    """A client link after the pseudo-TLS handshake: OC2007 frames in and out of the engine.

    What the engine expects of a link (edge.turn.allocation.ClientLink):
    allocation, address, kind, stream, send() and, like TurnStreamProtocol,
    ``connected`` and client_closed() when the connection goes.
    """

    stream = True
    kind = "tls"  # counted with TURN over TLS: it is that port's second dialect

    def __init__(self, engine: TurnEngine) -> None:
        self._engine = engine
        self._dialect = dialect_of(engine)
        self._buffer = bytearray()
        self.allocation: Allocation | None = None
        self.address: tuple[str, int] = ("", 0)

    def connectionMade(self) -> None:
        self._stream = transport_of(self)
        peer = self._stream.getPeer()
        self.address = (peer.host.removeprefix("::ffff:"), peer.port)
        settle_connection(self)  # the pseudo-TLS handshake is done: only the idle timeout applies now

    def send(self, data: bytes) -> None:
        self._stream.write(frame(data))

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        engine = self._engine
        while len(buffer) >= _HEADER.size:
            kind, _, size = _HEADER.unpack_from(buffer)
            if kind not in (CONTROL, DATA):
                log.info("closing pseudo-TLS client {host}: frame type {kind}", host=self.address[0], kind=kind)
                buffer.clear()
                self._stream.loseConnection()
                return
            end = _HEADER.size + size
            if len(buffer) < end:
                return
            payload = bytes(buffer[_HEADER.size:end])
            del buffer[:end]
            if kind == CONTROL:
                engine.from_client(self, payload)
            elif self._dialect is None or not self._dialect.raw_to_destination(self, payload):
                engine.stats["ms_turn_dropped_send"] += 1

    def connectionLost(self, reason: object = None) -> None:
        self.connected = False  # a pending Allocate must not outlive its connection
        self._engine.client_closed(self)


class _Inner(TypingProtocol):
    """What _Switch hands the connection to: MsStreamProtocol or the real TLS protocol."""

    def makeConnection(self, transport: ITransport) -> None: ...
    def dataReceived(self, data: bytes) -> None: ...
    def connectionLost(self, reason: Failure) -> None: ...


class _Switch(Protocol):
    """Buffers the first bytes until they are a pseudo-TLS ClientHello or cannot be one."""

    def __init__(self, factory: PseudoTlsFactory, addr: IAddress) -> None:
        self._factory, self._addr = factory, addr
        self._buffer = b""
        self._inner: _Inner | None = None

    def dataReceived(self, data: bytes) -> None:
        if self._inner is not None:
            self._inner.dataReceived(data)
            return
        buffer = self._buffer = self._buffer + data
        if dialect_of(self._factory.engine) is not None:
            for hello, answer in HANDSHAKES.items():
                if buffer[: len(hello)] != hello[: len(buffer)]:
                    continue
                if len(buffer) < len(hello):
                    return  # still a prefix of this blob: wait for the rest
                transport_of(self).write(answer)  # in one write: libnice checks one recv of exactly this
                self._factory.pseudo_tls += 1
                self._switch(MsStreamProtocol(self._factory.engine), buffer[len(hello):])
                return
        inner = self._factory.tls.buildProtocol(self._addr)
        if inner is None:
            transport_of(self).loseConnection()
            return
        self._switch(inner, buffer)

    def _switch(self, inner: _Inner, rest: bytes) -> None:
        self._inner, self._buffer = inner, b""
        assert self.transport is not None  # data arrived: connected
        inner.makeConnection(self.transport)
        if rest:
            inner.dataReceived(rest)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._inner is not None:
            self._inner.connectionLost(reason)


class PseudoTlsFactory(Factory):
    """For the TURN TLS port: pseudo-TLS [MS-TURN] clients here, everything else to `tls`.

    `tls` is the real TLS factory (a TLSMemoryBIOFactory around the TURN
    stream factory); `engine` serves the pseudo-TLS clients' frames.
    """

    noisy = False

    def __init__(self, tls: IProtocolFactory, engine: TurnEngine) -> None:
        self.tls, self.engine = tls, engine
        self.pseudo_tls = 0  # connections that took the pseudo-TLS handshake

    def doStart(self) -> None:
        super().doStart()  # type: ignore[no-untyped-call]  # Twisted leaves Factory.doStart unannotated
        self.tls.doStart()

    def doStop(self) -> None:
        self.tls.doStop()
        super().doStop()  # type: ignore[no-untyped-call]  # Twisted leaves Factory.doStop unannotated

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        if addr is None:  # Twisted always passes the peer's address for an accepted connection
            raise ValueError("a pseudo-TLS connection needs its peer address")
        protocol = _Switch(self, addr)
        protocol.factory = self
        return protocol
