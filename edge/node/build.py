"""The composition root: config -> one Twisted MultiService with a child per role and listener.

Only this module reads the whole config and builds services; each service
gets what it needs injected (the pool membership is one named service handed
to TURN, auth and mediation; the mailbox service gets the worker's calls in
its constructor). Starting the tree binds every socket (so a port in use
fails start-up at once), stopping it closes them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from twisted.application import internet, service

from certs import tls
from edge.auth.issuer import TokenIssuer
from edge.auth.relays import Members
from edge.auth.service import https_service, mras_service
from edge.mediation.setup import enabled as mediation_enabled
from edge.mediation.setup import mediation_service
from edge.node import edge_roles, um_roles
from edge.node.console import build_console
from edge.node.listeners import Listener, listeners
from edge.node.schema import Config
from edge.node.state import NodeState, StateSampler
from edge.node.web import status_site
from edge.pool.members import Member
from um.callrouter import GatewayTable
from um.netguard import LISTEN_BACKLOG, ConnectionLimits, RateLimiter, guarded
from um.services import DailyRecycle
from um.sip.responder import OptionsResponder
from um.sip.stream import Handler, SipStreamFactory
from um.worker.service import WorkerService
from um.worker.webapi import web_factory


class NodeTree(service.MultiService):
    """The root service; `state` is the one typed view of what runs (status page, CLI, metrics, drain)."""

    def __init__(self, state: NodeState) -> None:
        super().__init__()
        self.state = state
        self.setName("umedge")


def _sip_handler(row: Listener, state: NodeState) -> Handler | None:
    """The SIP handler of a listener row: call router, UM service or a worker slot."""
    if row.role == "callrouter" and state.callrouter is not None:
        return state.callrouter.router
    mailbox = state.mailbox
    if row.role == "mailbox" and mailbox is not None:
        return mailbox.handle_um_service
    if row.role == "worker" and mailbox is not None:
        for slot in mailbox.slots:
            if row.port in (slot.tcp_port, slot.tls_port):
                return mailbox.worker_handler(slot.number)
    return None


def _sip_service(row: Listener, config: Config, state: NodeState) -> service.Service:
    sip = SipStreamFactory(_sip_handler(row, state) or OptionsResponder(row.role), row.transport, row.role,
                           limiter=state.sip_limiter, server=config.node.server_header or None)
    options = None
    if row.transport == "tls":
        options = tls.server_options(config.node.certs_dir, config.node.name, client_cert="required")
    # The guard outside TLS: it closes over-cap sockets and times the handshake; SIP settles it per message.
    factory = guarded(sip, ConnectionLimits.of(config.limits), f"{row.service} SIP/{row.transport.upper()}",
                      options)
    state.guards.append(factory)
    return internet.TCPServer(row.port, factory, backlog=LISTEN_BACKLOG, interface=row.address)


def _web_service(row: Listener, config: Config, state: NodeState) -> service.Service:
    """The status page (HTTP or HTTPS) plus the UM web services (HTTPS only) on one port."""
    node = config.node

    def options() -> object:
        return tls.server_options(node.certs_dir, node.name, client_cert="optional", alpn=(b"http/1.1",))

    web = web_factory(status_site(state), lambda: state.worker, config.auth.api_keys, node.state_dir, options,
                      play_per_hour=lambda: state.config.worker.play_on_phone_per_hour)
    # Outside the sniffer (so outside TLS too); the site settles it on each connection's first whole request.
    factory = guarded(web, ConnectionLimits.of(config.limits), "web")
    state.guards.append(factory)
    return internet.TCPServer(row.port, factory, backlog=LISTEN_BACKLOG, interface=row.address)


def _listener_service(row: Listener, config: Config, state: NodeState,
                      members: Members | None) -> service.Service | None:
    if row.key == "[auth].mras_tls_port":  # MRAS: SIP SERVICE over MTLS (edge.auth)
        return mras_service(row.port, row.address, config, state.issuer, members=members, guards=state.guards)
    if row.protocol == "SIP":
        return _sip_service(row, config, state)
    if row.protocol == "STUN/TURN":
        return None  # one TurnService serves UDP, TCP and TLS
    if row.protocol == "HTTPS":  # the token API (edge.auth)
        return https_service(row.port, row.address, config, state.issuer, members=members, guards=state.guards)
    if row.protocol == "HTTP":
        return _web_service(row, config, state)
    return None  # port ranges: sockets are opened per call or allocation


def _build_edge(config: Config, state: NodeState, root: service.MultiService, turn_only: bool) -> None:
    loop = asyncio.get_event_loop()
    if not turn_only:  # extra relay processes share the main process's membership
        state.pool = edge_roles.pool_membership(
            config, lambda: len(state.engine.allocations) if state.engine else 0,
            lambda: dict(state.engine.per_identity) if state.engine else {})
        state.pool.setName("edge/pool")
        state.pool.setServiceParent(root)
    discovery = edge_roles.behaviour_discovery(config)
    state.engine = edge_roles.build_engine(config, loop, pool=state.pool, discovery=discovery)
    state.turn = edge_roles.turn_service(config, state.engine, reuse_port=config.edge.workers > 1,
                                         discovery=discovery)
    state.turn.setServiceParent(root)
    if turn_only:
        return
    if mediation_enabled(config):
        pool = state.pool
        state.mediation = mediation_service(config, lambda: pool.store if pool is not None else None)
        state.mediation.setName("edge/mediation")
        state.mediation.setServiceParent(root)
    state.issuer = TokenIssuer.from_config(config)


def _trusted_gateways(state: NodeState) -> Callable[[], GatewayTable]:
    """The UM IP gateways the worker takes calls from: the call router's table when it runs here (FQDNs
    resolved, reloaded on SIGHUP), else one built from the current config's [callrouter] gateways."""
    built: list[tuple[Config, GatewayTable]] = []

    def table() -> GatewayTable:
        if state.callrouter is not None:
            return state.callrouter.router.gateways
        if not built or built[0][0] is not state.config:
            built[:] = [(state.config, GatewayTable(state.config.callrouter.gateways))]
        return built[0][1]

    return table


def _build_um(config: Config, state: NodeState, root: service.MultiService) -> None:
    from twisted.internet import reactor

    roles = set(config.node.roles)
    host = um_roles.advertised_host(config)
    calls = None
    if "worker" in roles:
        calls = um_roles.worker_calls(config, lambda: state.config)
    if roles & {"mailbox", "worker"}:
        state.mailbox = um_roles.mailbox_service(config, host, calls, reactor, _trusted_gateways(state))
        if "mailbox" in roles:
            recycle = DailyRecycle(state.mailbox, lambda: state.config.mailbox.recycle_time)
            recycle.setServiceParent(root)
    if "callrouter" in roles:
        local = state.mailbox if {"mailbox", "worker"} <= roles else None
        state.callrouter = um_roles.call_router_service(config, host, local, reactor)
        state.callrouter.setServiceParent(root)
    if calls is not None:
        for part in um_roles.unified_messaging(config, lambda: state.config, state.mailbox, host):
            part.setServiceParent(root)  # voicemail delivery and MWI: named um/delivery and um/mwi
        state.worker = WorkerService(calls.context)  # calls, media, voicemail (um.worker)
        state.worker.setServiceParent(root)
        # The worker slots are OS processes (edge.node.workerproc) that this supervisor starts, recycles and
        # replaces; this process's worker context serves the UM web services (store, PINs, play on phone).
        assert state.mailbox is not None  # built for the worker role above
        um_roles.worker_supervisor(config, lambda: state.config, state.mailbox, calls.context,
                                   asyncio.get_event_loop(), reactor).setServiceParent(root)


def build(config: Config, turn_worker: int | None = None) -> NodeTree:
    """The service tree for the roles in config.node.roles; only the TURN relay (and its sessions in the
    console) for `turn_worker` N, the Nth extra relay process of `[edge] workers`."""
    turn_only = turn_worker is not None
    state = NodeState(config)
    root = NodeTree(state)
    # One request-rate bucket per source address across every SIP listener of the node.
    state.sip_limiter = RateLimiter(config.limits.sip_requests_per_second, config.limits.sip_burst)
    roles = set(config.node.roles)
    if "edge" in roles or turn_only:
        _build_edge(config, state, root, turn_only)
    if turn_only:
        # Its allocations are listed and ended by `umedge sessions` (over the pool's Redis, as another
        # node's are) and a refused user is refused here too: the kernel may hand the user to this process.
        state.console = build_console(config, state, name=f"{config.node.name}/relay{turn_worker}")
        state.console.setServiceParent(root)
        return root
    StateSampler(state).setServiceParent(root)
    if roles & {"callrouter", "mailbox", "worker"}:
        _build_um(config, state, root)
    state.console = build_console(config, state)  # edge.node.admin: sessions and calls, for operators
    state.console.setServiceParent(root)
    members: Members | None = None
    if "edge" in roles:
        pool = state.pool

        def live_members() -> Sequence[Member]:  # the live relays, now
            return pool.live if pool is not None else []

        members = live_members

    for row in listeners(config):
        if row.role == "worker" and row.protocol == "SIP" and getattr(state.mailbox, "supervisor", None):
            continue  # the worker processes own the slots' SIP ports
        child = _listener_service(row, config, state, members)
        if child is None:
            continue
        child.setName(f"{row.role}/{row.protocol.lower()}-{row.transport}-{row.port}")
        child.setServiceParent(root)
    return root
