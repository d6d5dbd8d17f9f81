"""The TURN listeners as one Twisted service: UDP/TCP/TLS sockets around an engine, and its expiry tick.

The engine, its policies and the pool membership are built by the composition
root (edge.node.build); this service only binds and serves.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from twisted.application import internet, service
from twisted.internet.defer import Deferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorSocket
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from edge.turn.discovery import BehaviourDiscovery
from edge.turn.engine import TurnEngine
from edge.turn.io import SOCKET_BUFFER, TurnStreamFactory, UdpTurnListener, admit, bind_stream, bind_udp
from edge.turn.offload import DatagramBatches
from um.netguard import ConnectionGuard, ConnectionLimits, RateLimiter

log = Logger(namespace="umedge.turn")
EXHAUSTED_LOG_INTERVAL = 60.0  # seconds between reports of refused Allocates for want of relay ports

# Wraps the TLS port's factory, e.g. so a dialect can accept its own handshake beside real TLS.
TlsPortWrapper = Callable[[TLSMemoryBIOFactory, TurnEngine], IProtocolFactory]


class AdoptedStreamPort(service.Service):
    """Twisted serving a listening socket bound elsewhere (so it can carry SO_REUSEPORT)."""

    def __init__(self, sock: socket.socket, factory: IProtocolFactory) -> None:
        self._sock, self._factory = sock, factory
        self._port: IListeningPort | None = None

    def startService(self) -> None:
        from twisted.internet import reactor

        service.Service.startService(self)
        adopt = IReactorSocket(reactor).adoptStreamPort
        # Twisted annotates the factory as a ServerFactory; any IProtocolFactory serves.
        self._port = adopt(self._sock.fileno(), self._sock.family, cast(Any, self._factory))
        self._sock.close()  # the port holds its own duplicate of the descriptor

    def stopService(self) -> Deferred[None] | None:
        service.Service.stopService(self)
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None


def _bind(binder: Callable[[str, int, bool], socket.socket], host: str, port: int, reuse_port: bool,
          kind: str) -> socket.socket:
    try:
        return binder(host, port, reuse_port)
    except OSError as error:
        raise CannotListenError(host, port, f"{kind}: {error.strerror}") from None


@dataclass(frozen=True)
class TurnPorts:
    """Where the TURN listeners bind, and how hard each is guarded."""

    address: str
    udp: int
    tcp: int
    tls: int
    reuse_port: bool = False  # [edge] workers > 1: the processes share the ports (SO_REUSEPORT)
    stun_requests_per_second: float = 200.0
    stun_burst: int = 400
    socket_buffer: int = SOCKET_BUFFER  # bytes, [edge] socket_buffer_kb


class OffloadLifecycle(Protocol):
    """A fast path's start (may raise OSError: start-up fails) and stop (detach, clean up)."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


class TurnService(service.MultiService):
    """UDP via raw asyncio readers; TCP and TLS via Twisted; one engine (built by the caller) for all three.

    With `reuse_port` the listening sockets carry SO_REUSEPORT, so `[edge]
    workers` processes share the TURN ports and the kernel spreads clients
    (by 4-tuple for UDP, per connection for TCP) across them.
    """

    def __init__(self, engine: TurnEngine, ports: TurnPorts, guard: ConnectionLimits,
                 tls_options: Callable[[], Any], tls_port_wrapper: TlsPortWrapper | None = None,
                 discovery: BehaviourDiscovery | None = None, offload: OffloadLifecycle | None = None,
                 batches: DatagramBatches | None = None) -> None:
        """`discovery` (RFC 5780) gets the UDP socket and binds its three others when the service starts;
        `offload` (the engine's fast path) is started first and stopped after the engine's allocations;
        the UDP listener reads through `batches` (the native forwarder) when that is active then."""
        service.MultiService.__init__(self)
        self.engine = engine
        self.ports = ports
        self.guard = guard
        self._tls_options = tls_options
        self._wrap_tls_port = tls_port_wrapper
        self.discovery = discovery
        self.offload = offload
        self.batches = batches
        self.guards: list[ConnectionGuard] = []
        self._udp: UdpTurnListener | None = None
        self._exhausted_logged, self._exhausted_at = 0, float("-inf")

    def startService(self) -> None:
        p, engine = self.ports, self.engine
        loop = asyncio.get_event_loop()
        options = self._tls_options()
        if self.offload is not None:
            self.offload.start()  # "on" that cannot: OSError before anything is bound
        udp = _bind(lambda host, port, reuse: bind_udp(host, port, reuse, p.socket_buffer), p.address, p.udp,
                    p.reuse_port, "UDP")
        try:
            tcp = _bind(bind_stream, p.address, p.tcp, p.reuse_port, "TCP")
            try:
                tls_sock = _bind(bind_stream, p.address, p.tls, p.reuse_port, "TLS")
            except CannotListenError:
                tcp.close()
                raise
        except CannotListenError:
            udp.close()
            raise
        limiter = RateLimiter(p.stun_requests_per_second, p.stun_burst)  # one bucket per source address
        if self.discovery is not None:
            try:
                self.discovery.start(loop, udp, lambda host, port: _bind(bind_udp, host, port, p.reuse_port,
                                                                          "UDP (RFC 5780)"),
                                     lambda host: admit(limiter, host, engine, "udp"))
            except CannotListenError:
                for sock in (udp, tcp, tls_sock):
                    sock.close()
                raise
        self._udp = UdpTurnListener(loop, udp, engine, limiter, self.batches)
        # Streams are bounded by the connection caps and timeouts instead: a STUN request silently
        # dropped on TCP is never retransmitted, so a rate limit there would hang honest clients.
        tls_factory = TLSMemoryBIOFactory(options, False, TurnStreamFactory(engine, "tls"))
        tls_port: IProtocolFactory = tls_factory
        if self._wrap_tls_port is not None:  # e.g. [MS-TURN]'s pseudo-TLS handshake (edge.msturn.pseudotls)
            tls_port = self._wrap_tls_port(tls_factory, engine)
        self.guards = [ConnectionGuard(TurnStreamFactory(engine, "tcp"), self.guard, "TURN over TCP"),
                       ConnectionGuard(tls_port, self.guard, "TURN over TLS", settle_on_data=False)]
        children: list[service.Service] = [AdoptedStreamPort(tcp, self.guards[0]),
                                           AdoptedStreamPort(tls_sock, self.guards[1]),
                                           internet.TimerService(1.0, self._tick)]
        for child in children:
            service.Service.setServiceParent(child, self)
        service.MultiService.startService(self)

    def _tick(self) -> None:
        """Every second: expiries (the engine's tick), and once a minute at most, exhausted relay ports."""
        self.engine.tick()
        refused = self.engine.stats["relay_ports_exhausted"]
        now = self.engine.now
        if refused > self._exhausted_logged and now - self._exhausted_at >= EXHAUSTED_LOG_INTERVAL:
            ports = self.engine.ports
            log.warn("relay ports exhausted: {n} Allocate(s) refused since the last report; {used} of {size} "
                     "ports in use ([edge] relay_port_min..relay_port_max)", n=refused - self._exhausted_logged,
                     used=ports.in_use, size=ports.size)
            self._exhausted_logged, self._exhausted_at = refused, now

    def stopService(self) -> Deferred[None] | None:
        result: Deferred[None] | None = service.MultiService.stopService(self)
        self.engine.close_all()
        if self.offload is not None:
            self.offload.stop()
        if self.discovery is not None:
            self.discovery.close()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        return result
