"""Sockets for the TURN engine: raw non-blocking UDP on the asyncio loop, streams on Twisted.

UDP (client listener and every relay) is read with loop.add_reader and
recvfrom in a bounded loop and written with sendto directly: no transport
objects or futures per packet, which is what lets Python relay at a useful
rate. TCP and TLS clients use Twisted protocols framed by edge.stun.framing.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import Callable

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from edge.stun import StunDecodeError, next_frame_length
from edge.turn.allocation import Address, Allocation
from edge.turn.engine import TurnEngine
from edge.turn.offload import DatagramBatches, SocketKey
from edge.turn.streams import transport_of
from um.netguard import RateLimiter, settle_connection

log = Logger(namespace="umedge.turn")
READ_BATCH = 64  # datagrams per readiness callback, so one busy socket cannot starve the rest
MAX_DATAGRAM = 65536
MAX_STREAM_BUFFER = 65536 + 4
# <linux/in.h>: Python's socket module names IP_MTU_DISCOVER only from 3.12 on.
_IP_MTU_DISCOVER = 10
_IP_PMTUDISC_DO = 2
# <asm-generic/socket.h>: like SO_SNDBUF/SO_RCVBUF but past net.core.wmem_max/rmem_max (CAP_NET_ADMIN).
_SO_SNDBUFFORCE, _SO_RCVBUFFORCE = 32, 33
SOCKET_BUFFER = 4 * 1024 * 1024  # [edge] socket_buffer_kb's default


def size_buffers(sock: socket.socket, size: int) -> None:
    """Receive and send buffers of `size` bytes, beyond the sysctl caps where the process may."""
    for forced, plain in ((_SO_RCVBUFFORCE, socket.SO_RCVBUF), (_SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, forced, size)
        except OSError:
            try:
                sock.setsockopt(socket.SOL_SOCKET, plain, size)
            except OSError:
                pass


def _family_constant(family: int) -> int:
    return socket.AF_INET6 if family == 6 else socket.AF_INET


def _plain(address: tuple) -> Address:  # type: ignore[type-arg]
    """(host, port) without IPv6 flow info/scope, IPv4-mapped IPv6 as IPv4."""
    host = address[0]
    return (host[7:] if host.startswith("::ffff:") else host, address[1])


def _watch(loop: asyncio.AbstractEventLoop, sock: socket.socket, batches: DatagramBatches | None,
           plain: Callable[[], None], native: Callable[[], None]) -> SocketKey | None:
    """Read `sock` with `native` when the native forwarder is active and takes it, else with `plain`.

    Returns the socket's bound address as the forwarder's entries key it, or None when read in Python."""
    key = batches.bound(sock) if batches is not None and batches.active else None
    loop.add_reader(sock.fileno(), plain if key is None else native)
    return key


class UdpRelay:
    """One relay socket of an allocation (a RelayEndpoint); read through `batches` when that is active."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, family: int,
                 batches: DatagramBatches | None = None) -> None:
        self._loop, self._sock, self.family = loop, sock, family
        self.address: Address = sock.getsockname()[:2]
        self.receiver: Callable[[bytes, Address], None] | None = None
        self._fd = self.fd = sock.fileno()
        self._batches = batches
        self._key = _watch(loop, sock, batches, self._readable, self._readable_native)
        self.native = self._key is not None

    def _readable_native(self) -> None:
        assert self._batches is not None and self._key is not None
        passed, _ = self._batches.from_peers(self._fd, self._key)
        receiver = self.receiver
        if receiver is not None:
            for data, address in passed:
                receiver(data, address)

    def _readable(self) -> None:
        recvfrom, receiver = self._sock.recvfrom, self.receiver
        for _ in range(READ_BATCH):
            try:
                data, address = recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error queued on the socket: skip it, keep reading
            if receiver is not None:
                receiver(data, _plain(address) if self.family == 6 else address)

    def sendto(self, data: bytes, address: Address) -> bool:
        try:
            self._sock.sendto(data, address)
            return True
        except OSError:  # full buffer or unreachable: UDP may drop
            return False

    def set_dont_fragment(self) -> bool:
        try:
            if self.family == 4:
                if not sys.platform.startswith("linux"):
                    return False
                self._sock.setsockopt(socket.IPPROTO_IP, _IP_MTU_DISCOVER, _IP_PMTUDISC_DO)
            else:
                self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_DONTFRAG, 1)
            return True
        except (OSError, AttributeError):
            return False

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._fd = -1
            self._sock.close()


def relay_binder(loop: asyncio.AbstractEventLoop, buffer_bytes: int = 0,
                 batches: DatagramBatches | None = None) -> Callable[[int, int, str], UdpRelay | None]:
    def bind(family: int, port: int, host: str) -> UdpRelay | None:
        sock = socket.socket(_family_constant(family), socket.SOCK_DGRAM)
        try:
            if family == 6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if buffer_bytes:
                size_buffers(sock, buffer_bytes)
            sock.bind((host, port))
        except OSError:
            sock.close()
            return None
        sock.setblocking(False)
        return UdpRelay(loop, sock, family, batches)

    return bind


class UdpClientLink:
    """A UDP client as the engine sees it: its 5-tuple key and how to answer it."""

    __slots__ = ("allocation", "address", "connected", "listener", "_sock")
    kind = "udp"
    stream = False

    def __init__(self, listener: UdpTurnListener, address: Address) -> None:
        self.allocation: Allocation | None = None
        self.address = address
        self.connected = True  # False once evicted from the link table: a pending grant must not land here
        self.listener = listener  # the native forwarder keys and answers by it
        self._sock = listener.sock

    def send(self, data: bytes) -> None:
        try:
            self._sock.sendto(data, self.address)
        except OSError:
            pass


class UdpTurnListener:
    """The UDP listener: datagrams from clients into the engine (through `batches` when that is active)."""

    MAX_LINKS = 100_000

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: socket.socket, engine: TurnEngine,
                 limiter: RateLimiter | None = None, batches: DatagramBatches | None = None) -> None:
        self._loop, self.sock, self._engine = loop, sock, engine
        self._limiter = limiter
        self._links: dict[Address, UdpClientLink] = {}
        self._fd = self.fd = sock.fileno()
        self.address: Address = sock.getsockname()[:2]
        self._batches = batches
        self._key = _watch(loop, sock, batches, self._readable, self._readable_native)
        self.native = self._key is not None

    def _readable_native(self) -> None:
        assert self._batches is not None and self._key is not None
        passed, _ = self._batches.from_clients(self._fd, self._key)
        for data, address in passed:
            self._receive(data, address)

    def _receive(self, data: bytes, address: Address) -> None:
        """One datagram the native forwarder left for the engine (the same steps as `_readable`'s loop)."""
        if (not data or not 0x40 <= data[0] < 0x80) and not self._admit(address[0]):
            return
        link = self._links.get(address)
        if link is None:
            link = self._new_link(address)
        self._engine.from_client(link, data)

    def _readable(self) -> None:
        recvfrom, links, from_client = self.sock.recvfrom, self._links, self._engine.from_client
        for _ in range(READ_BATCH):
            try:
                data, address = recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            address = address[:2]
            if (not data or not 0x40 <= data[0] < 0x80) and not self._admit(address[0]):
                continue  # a STUN request over this source's rate: dropped before decoding
            link = links.get(address)
            if link is None:
                link = self._new_link(address)
            from_client(link, data)

    def _admit(self, host: str) -> bool:
        return admit(self._limiter, host, self._engine, "udp")

    def _new_link(self, address: Address) -> UdpClientLink:
        links = self._links
        if len(links) >= self.MAX_LINKS:  # keep only the clients that hold an allocation or wait for one
            for gone in [a for a, link in links.items() if not self._engine.holds(link)]:
                links.pop(gone).connected = False  # in place: _readable holds this dict
        link = links[address] = UdpClientLink(self, address)
        return link

    def close(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._fd = -1
            self.sock.close()


def _listening_socket(kind: int, host: str, port: int, reuse_port: bool,
                      buffer_bytes: int = SOCKET_BUFFER) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind)
    try:
        if reuse_port:  # several relay processes share the port; the kernel spreads clients
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_DGRAM:
            size_buffers(sock, buffer_bytes)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bind_udp(host: str, port: int, reuse_port: bool = False, buffer_bytes: int = SOCKET_BUFFER) -> socket.socket:
    """The UDP listening socket, bound now so a taken port fails start-up at once."""
    return _listening_socket(socket.SOCK_DGRAM, host, port, reuse_port, buffer_bytes)


def bind_stream(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket for Twisted to adopt (Twisted's listenTCP has no SO_REUSEPORT)."""
    return _listening_socket(socket.SOCK_STREAM, host, port, reuse_port)


def admit(limiter: RateLimiter | None, host: str, engine: TurnEngine, transport: str) -> bool:
    """Whether a STUN message from `host` is within its rate; counts and logs (once a minute) if not."""
    if limiter is None or limiter.allow(host):
        return True
    engine.stats["rate_limited"] += 1
    if limiter.should_log(host):
        log.warn("STUN requests from {host} over {transport} exceed {rate}/s: dropping the excess",
                 host=host, transport=transport, rate=limiter.rate)
    return False


class TurnStreamProtocol(Protocol):
    """A TCP or TLS client: STUN and ChannelData frames in, engine output back."""

    stream = True

    def __init__(self, engine: TurnEngine, transport_name: str, limiter: RateLimiter | None = None) -> None:
        self._engine = engine
        self._limiter = limiter
        self.kind = transport_name
        self._buffer = bytearray()
        self._settled = False
        self.allocation: Allocation | None = None
        self.address: Address = ("", 0)

    def connectionMade(self) -> None:
        self._stream = transport_of(self)
        peer = self._stream.getPeer()
        self.address = _plain((peer.host, peer.port))

    def send(self, data: bytes) -> None:
        self._stream.write(data)

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while buffer:
            try:
                size = next_frame_length(buffer)
            except StunDecodeError as error:
                log.info("closing {transport} client {host}: {reason}", transport=self.kind,
                         host=self.address[0], reason=str(error))
                buffer.clear()
                self._stream.loseConnection()
                return
            if size is None:
                if len(buffer) > MAX_STREAM_BUFFER:
                    buffer.clear()
                    self._stream.loseConnection()
                return
            frame = bytes(buffer[:size])
            del buffer[:size]
            if not self._settled:
                self._settled = True
                settle_connection(self)  # a whole frame: the handshake/first-data timeout is over
            if frame[0] >= 0x40 or admit(self._limiter, self.address[0], self._engine, self.kind):
                self._engine.from_client(self, frame)

    def connectionLost(self, reason: object = None) -> None:
        self.connected = False  # a pending Allocate must not outlive its connection
        self._engine.client_closed(self)


class TurnStreamFactory(Factory):
    noisy = False

    def __init__(self, engine: TurnEngine, transport_name: str, limiter: RateLimiter | None = None) -> None:
        self.engine, self.transport_name, self.limiter = engine, transport_name, limiter

    def buildProtocol(self, addr: object) -> TurnStreamProtocol:
        protocol = TurnStreamProtocol(self.engine, self.transport_name, self.limiter)
        protocol.factory = self
        return protocol
