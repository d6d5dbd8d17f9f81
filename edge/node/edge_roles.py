"""The A/V Edge's parts, built from config: the TURN engine with its policies, the pool membership,
the TURN listeners. Only the composition root (edge.node.build) calls these.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet.interfaces import IProtocolFactory
from twisted.protocols.tls import TLSMemoryBIOFactory

from certs import tls
from edge.auth.secrets import auth_secrets
from edge.msturn.server import MsTurnServer
from edge.node.listeners import listeners
from edge.node.schema import Config
from edge.offload.fastpath import KernelOffload
from edge.offload.native import NativeForwarder
from edge.offload.paths import FastPaths
from edge.pool.service import PoolMembership, describe_node
from edge.pool.store import open_store
from edge.stun.discovery import DiscoveryAddresses
from edge.turn.auth import Authenticator
from edge.turn.discovery import BehaviourDiscovery
from edge.turn.engine import RelayAddresses, TurnEngine
from edge.turn.io import relay_binder
from edge.turn.policy import Limits, PeerPolicy
from edge.turn.ports import PortPool
from edge.turn.service import TurnPorts, TurnService
from um.config import ROLES
from um.netguard import ConnectionLimits


def limits_from(config: Config) -> Limits:
    e = config.edge
    return Limits(max_allocations=e.max_allocations, max_allocations_per_user=e.max_allocations_per_user,
                  bandwidth_bytes_per_second=e.allocation_bandwidth_kbps * 1000 // 8,
                  max_pending=config.limits.max_pending_allocations,
                  permission_lifetime=e.permission_lifetime)


def behaviour_discovery(config: Config) -> BehaviourDiscovery | None:
    """RFC 5780 on the TURN UDP port when [edge] alternate_address is set (checked by the config loader)."""
    e = config.edge
    if not e.alternate_address:
        return None
    return BehaviourDiscovery(DiscoveryAddresses((e.listen_address, e.turn_udp_port),
                                                 (e.alternate_address, e.alternate_port)))


def build_engine(config: Config, loop: asyncio.AbstractEventLoop, clock: Callable[[], float] = time.time,
                 pool: PoolMembership | None = None, discovery: BehaviourDiscovery | None = None) -> TurnEngine:
    """The TURN engine with its policies: auth, limits, peer policy, relay addresses, quotas, dialects."""
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

    cache = Path(config.node.state_dir) / "offload"
    offload = FastPaths(KernelOffload(e.kernel_offload, (e.listen_address, e.turn_udp_port), e.relay_address, cache),
                        NativeForwarder(e.native_forwarder, cache))  # started (or not) with the TURN service
    return TurnEngine(authenticator, limits, policy, RelayAddresses(bind, advertise),
                      PortPool(e.relay_port_min, e.relay_port_max),
                      relay_binder(loop, e.socket_buffer_kb * 1024, offload.native),
                      clock, alternates=alternates_now if pool is not None else alternates, quota=quota,
                      dialects=[MsTurnServer()] if e.ms_turn else [], binding=discovery,
                      offload=offload)


def pool_membership(config: Config, allocations: Callable[[], int],
                    local_counts: Callable[[], dict[str, int]]) -> PoolMembership:
    """This node's membership in the pool store of `[pool] store`."""
    e, p = config.edge, config.pool
    intranet = config.node.fqdn if e.listen_address in ("0.0.0.0", "::") else e.listen_address
    describe = describe_node(config.node.name, e.external_address or intranet, intranet, e.external_address,
                             e.turn_udp_port, e.turn_tcp_port, e.turn_tls_port, allocations, e.max_allocations)
    return PoolMembership(open_store(p.store, p.key_prefix), describe, p.heartbeat_interval, p.member_ttl,
                          local_counts)


def turn_service(config: Config, engine: TurnEngine, reuse_port: bool,
                 discovery: BehaviourDiscovery | None = None) -> TurnService:
    """The TURN listeners (UDP, TCP, TLS) around `engine`."""
    e, node, lim = config.edge, config.node, config.limits
    ports = TurnPorts(e.listen_address, e.turn_udp_port, e.turn_tcp_port, e.turn_tls_port, reuse_port,
                      lim.stun_requests_per_second, lim.stun_burst, e.socket_buffer_kb * 1024)

    def tls_options() -> Any:  # RFC 7443 names TURN over TLS "stun.turn"; coturn's clients offer it.
        return tls.server_options(node.certs_dir, node.name, client_cert="none", alpn=(b"stun.turn",))

    wrapper = None
    if e.ms_turn:
        from edge.msturn.pseudotls import PseudoTlsFactory

        def wrapper(tls_factory: TLSMemoryBIOFactory, engine: TurnEngine) -> IProtocolFactory:
            return PseudoTlsFactory(tls_factory, engine)  # [MS-TURN]'s pseudo-TLS handshake beside real TLS
    offload = engine.offload if isinstance(engine.offload, FastPaths) else None
    service = TurnService(engine, ports, ConnectionLimits.of(lim), tls_options, wrapper, discovery, offload,
                          offload.native if offload is not None else None)
    service.setName("edge/turn")
    return service
