"""The TURN server as one Twisted service: engine + UDP/TCP/TLS listeners + the expiry tick."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
from collections.abc import Callable

from twisted.application import internet, service
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.protocols.tls import TLSMemoryBIOFactory

from certs import tls
from edge.config_schema import ROLES, Config
from edge.listeners import listeners
from edge.msturn.pseudotls import PseudoTlsFactory
from edge.node_identity import auth_secrets
from edge.pool.service import PoolMembership, describe_node
from edge.pool.store import open_store
from edge.turn.auth import Authenticator
from edge.turn.engine import RelayAddresses, TurnEngine
from edge.turn.io import (
    TurnStreamFactory,
    UdpTurnListener,
    bind_stream,
    bind_udp,
    relay_binder,
)
from edge.turn.policy import Limits, PeerPolicy
from edge.turn.ports import PortPool
from um.netguard import ConnectionGuard, ConnectionLimits, RateLimiter


def limits_from(config: Config) -> Limits:
    e = config.edge
    return Limits(max_allocations=e.max_allocations, max_allocations_per_user=e.max_allocations_per_user,
                  bandwidth_bytes_per_second=e.allocation_bandwidth_kbps * 1000 // 8,
                  max_pending=config.limits.max_pending_allocations)


def build_engine(config: Config, loop: asyncio.AbstractEventLoop, clock=time.time,  # type: ignore[no-untyped-def]
                 pool: PoolMembership | None = None) -> TurnEngine:
    e = config.edge
    secrets = auth_secrets(config)
    # Derived from the signing secret, so every process and pool node accepts the others' nonces.
    nonce_key = hmac.new(secrets[0].encode(), b"umedge turn nonce key", hashlib.sha256).digest()
    limits = limits_from(config)
    authenticator = Authenticator(e.realm, lambda: secrets, nonce_key, limits.nonce_lifetime, clock)
    specific = lambda *addresses: {a for a in addresses if a and a not in ("0.0.0.0", "::")}  # noqa: E731
    listener_ports = {row.port for row in listeners(config, ROLES) if not row.is_range}
    policy = PeerPolicy.from_config(
        e.allowed_peer_networks, e.denied_peer_networks,
        specific(e.listen_address, config.node.listen_address),
        specific(e.relay_address, e.relay_address_v6, e.external_address), listener_ports)
    bind = {4: e.relay_address} if ":" not in e.relay_address else {6: e.relay_address}
    if e.relay_address_v6:
        bind[6] = e.relay_address_v6
    advertise = {4: e.external_address} if e.external_address and ":" not in e.external_address else {}
    alternates = list(e.alternate_servers)
    quota = None
    if pool is not None:
        name = config.node.name
        quota = pool.quota_gate(name, limits.max_allocations_per_user)

        def alternates_now() -> list[tuple[str, int]]:  # least loaded live peers first, then configured
            return [(m.relay_host, m.udp_port) for m in pool.others(name)] + alternates

    return TurnEngine(authenticator, limits, policy, RelayAddresses(bind, advertise),
                      PortPool(e.relay_port_min, e.relay_port_max), relay_binder(loop), clock,
                      alternates=alternates_now if pool is not None else alternates, quota=quota,
                      ms_turn=e.ms_turn)


def pool_membership(config: Config, allocations: Callable[[], int],
                    local_counts: Callable[[], dict[str, int]]) -> PoolMembership:
    """This node's membership in the pool store of `[pool] store`."""
    e, p = config.edge, config.pool
    intranet = config.node.fqdn if e.listen_address in ("0.0.0.0", "::") else e.listen_address
    describe = describe_node(config.node.name, e.external_address or intranet, intranet, e.external_address,
                             e.turn_udp_port, e.turn_tcp_port, e.turn_tls_port, allocations, e.max_allocations)
    return PoolMembership(open_store(p.store, p.key_prefix), describe, p.heartbeat_interval, p.member_ttl,
                          local_counts)


class AdoptedStreamPort(service.Service):
    """Twisted serving a listening socket bound elsewhere (so it can carry SO_REUSEPORT)."""

    def __init__(self, sock: socket.socket, factory: Factory) -> None:
        self._sock, self._factory = sock, factory
        self._port = None

    def startService(self) -> None:
        from twisted.internet import reactor

        super().startService()
        self._port = reactor.adoptStreamPort(self._sock.fileno(), self._sock.family, self._factory)
        self._sock.close()  # the port holds its own duplicate of the descriptor

    def stopService(self):  # type: ignore[no-untyped-def]
        super().stopService()
        if self._port is not None:
            port, self._port = self._port, None
            return port.stopListening()
        return None


def _bind(binder, host: str, port: int, reuse_port: bool, kind: str) -> socket.socket:  # type: ignore[no-untyped-def]
    try:
        return binder(host, port, reuse_port)
    except OSError as error:
        raise CannotListenError(host, port, f"{kind}: {error.strerror}") from None


class TurnService(service.MultiService):
    """UDP via raw asyncio readers; TCP and TLS via Twisted; one engine for all three.

    With `reuse_port` the listening sockets carry SO_REUSEPORT, so `[edge]
    workers` processes share the TURN ports and the kernel spreads clients
    (by 4-tuple for UDP, per connection for TCP) across them.
    """

    def __init__(self, config: Config, reuse_port: bool = False, in_pool: bool = True) -> None:
        super().__init__()
        self.config = config
        self.reuse_port = reuse_port
        self.in_pool = in_pool  # extra relay processes share the main process's membership
        self.engine: TurnEngine | None = None
        self.pool: PoolMembership | None = None
        self._udp: UdpTurnListener | None = None

    def startService(self) -> None:
        e, node = self.config.edge, self.config.node
        loop = asyncio.get_event_loop()
        if self.in_pool:
            self.pool = pool_membership(
                self.config, lambda: len(self.engine.allocations) if self.engine else 0,
                lambda: dict(self.engine.per_identity) if self.engine else {})
            self.pool.setServiceParent(self)
        self.engine = engine = build_engine(self.config, loop, pool=self.pool)
        # RFC 7443 names TURN over TLS "stun.turn"; coturn's clients offer it.
        options = tls.server_options(node.certs_dir, node.name, client_cert="none", alpn=(b"stun.turn",))
        udp = _bind(bind_udp, e.listen_address, e.turn_udp_port, self.reuse_port, "UDP")
        try:
            tcp = _bind(bind_stream, e.listen_address, e.turn_tcp_port, self.reuse_port, "TCP")
            try:
                tls_sock = _bind(bind_stream, e.listen_address, e.turn_tls_port, self.reuse_port, "TLS")
            except CannotListenError:
                tcp.close()
                raise
        except CannotListenError:
            udp.close()
            raise
        lim = self.config.limits
        limiter = RateLimiter(lim.stun_requests_per_second, lim.stun_burst)  # one bucket per source address
        guard = ConnectionLimits.of(self.config.limits)
        self._udp = UdpTurnListener(loop, udp, engine, limiter)
        # Streams are bounded by the connection caps and timeouts instead: a STUN request silently
        # dropped on TCP is never retransmitted, so a rate limit there would hang honest clients.
        # The TLS port also takes [MS-TURN]'s fixed pseudo-TLS handshake (edge.msturn.pseudotls).
        tls_port = PseudoTlsFactory(TLSMemoryBIOFactory(options, False, TurnStreamFactory(engine, "tls")), engine)
        self.guards = [ConnectionGuard(TurnStreamFactory(engine, "tcp"), guard, "TURN over TCP"),
                       ConnectionGuard(tls_port, guard, "TURN over TLS", settle_on_data=False)]
        AdoptedStreamPort(tcp, self.guards[0]).setServiceParent(self)
        AdoptedStreamPort(tls_sock, self.guards[1]).setServiceParent(self)
        internet.TimerService(1.0, engine.tick).setServiceParent(self)
        super().startService()

    def stopService(self):  # type: ignore[no-untyped-def]
        result = super().stopService()
        if self.engine is not None:
            self.engine.close_all()
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        return result
