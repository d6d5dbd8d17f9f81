"""The edge's STUN listeners over UDP, TCP and TLS: Binding answered on all of them.

`answer` is the sans-I/O part (bytes in, bytes out); the UDP side is a raw
asyncio datagram protocol (the hot path stays off Twisted), the stream side a
Twisted protocol framed by edge.stun.framing. TURN methods get a clear error
until the relay engine serves them.
"""

from __future__ import annotations

import asyncio
import socket

from twisted.application import service
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from edge.stun.attributes import encode_software, encode_xor_address
from edge.stun.constants import Attr, Method, MessageClass
from edge.stun.errors import StunDecodeError
from edge.stun.framing import next_frame_length
from edge.stun.message import decode
from edge.stun.responses import make_error, make_success, make_unknown_attributes_error

SOFTWARE = encode_software("umedge 0.1")
MAX_DATAGRAM = 65535
MAX_STREAM_BUFFER = 65535 + 20

log = Logger(namespace="umedge.stun")


def answer(data: bytes, source: tuple[str, int]) -> bytes | None:
    """The response to one STUN message from `source`, or None (malformed input, indications)."""
    try:
        message = decode(data)
    except StunDecodeError:
        return None  # RFC 8489 §6.3: malformed messages are discarded silently
    if message.msg_class != MessageClass.REQUEST:
        return None
    unknown = message.unknown_comprehension_required()
    if unknown:
        return make_unknown_attributes_error(message, unknown).encode(fingerprint=True)
    if message.method == Method.BINDING:
        mapped = encode_xor_address(source[0], source[1], message.transaction_id)
        reply = make_success(message, [(Attr.XOR_MAPPED_ADDRESS, mapped), (Attr.SOFTWARE, SOFTWARE)])
        return reply.encode(fingerprint=True)
    return make_error(message, 400, "Bad Request: the TURN relay is not enabled on this listener",
                      [(Attr.SOFTWARE, SOFTWARE)]).encode(fingerprint=True)


def _unmapped(address: tuple) -> tuple[str, int]:  # type: ignore[type-arg]
    """An IPv4-mapped IPv6 source (dual-stack socket) as the IPv4 address it is."""
    host = address[0]
    return (host[7:] if host.startswith("::ffff:") else host, address[1])


class _DatagramProtocol(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[type-arg]
        reply = answer(data, _unmapped(addr))
        if reply is not None:
            self.transport.sendto(reply, addr)  # type: ignore[attr-defined]


class UdpStunService(service.Service):
    """A UDP STUN listener on the asyncio loop; the socket is bound when the service starts."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._transport: asyncio.BaseTransport | None = None

    def startService(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((self.host, self.port))  # fail start-up now if the port is taken
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        super().startService()
        loop = asyncio.get_event_loop()
        future = asyncio.ensure_future(loop.create_datagram_endpoint(_DatagramProtocol, sock=sock))
        future.add_done_callback(self._started)

    def _started(self, future: asyncio.Future) -> None:  # type: ignore[type-arg]
        self._transport = future.result()[0]

    def stopService(self) -> None:
        super().stopService()
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class StunStreamProtocol(Protocol):
    """STUN over TCP or TLS (RFC 8489 §6.2.2): frames by length; garbage closes the connection."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def dataReceived(self, data: bytes) -> None:
        self._buffer += data
        while self._buffer:
            try:
                size = next_frame_length(self._buffer)
            except StunDecodeError as error:
                peer = self.transport.getPeer()
                log.info("closing STUN stream from {host}: {reason}", host=peer.host, reason=str(error))
                self.transport.loseConnection()
                self._buffer.clear()
                return
            if size is None:
                if len(self._buffer) > MAX_STREAM_BUFFER:
                    self.transport.loseConnection()
                    self._buffer.clear()
                return
            frame = bytes(self._buffer[:size])
            del self._buffer[:size]
            peer = self.transport.getPeer()
            reply = answer(frame, (peer.host, peer.port))
            if reply is not None:
                self.transport.write(reply)


class StunStreamFactory(Factory):
    protocol = StunStreamProtocol
    noisy = False

    def __init__(self, transport_name: str) -> None:
        self.transport_name = transport_name
