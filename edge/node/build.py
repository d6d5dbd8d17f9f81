"""The composition root: config -> one Twisted MultiService with a child per listener.

Each role contributes named child services; starting the tree binds every
socket (so a port in use fails start-up at once), stopping it closes them.
"""

from __future__ import annotations

from pathlib import Path

from twisted.application import internet, service
from twisted.logger import Logger

from certs import tls
from edge.auth.issuer import TokenIssuer
from edge.auth.relays import Members
from edge.auth.service import https_service, mras_service
from edge.config_schema import Config
from edge.listeners import Listener, listeners
from edge.mediation.setup import enabled as mediation_enabled
from edge.mediation.setup import mediation_service
from edge.nodestate import NodeState, StateSampler
from edge.turn.service import TurnService
from edge.web import status_site
from um.callrouter import UmRoles
from um.netguard import ConnectionGuard, ConnectionLimits, RateLimiter
from um.sip.responder import OptionsResponder
from um.sip.stream import SipStreamFactory

log = Logger(namespace="umedge.service")


def _sip_service(row: Listener, config: Config, state: NodeState) -> service.Service:
    um = state.um
    handler = um.handler_for(row) if um is not None else None  # call router, UM service, worker slots
    sip = SipStreamFactory(handler or OptionsResponder(row.role), row.transport, row.role,
                           limiter=state.sip_limiter)
    factory = ConnectionGuard(sip, ConnectionLimits.of(config.limits), f"{row.service} SIP/{row.transport.upper()}")
    state.guards.append(factory)
    if row.transport == "tls":
        options = tls.server_options(config.node.certs_dir, config.node.name, client_cert="required")
        return internet.SSLServer(row.port, factory, options, interface=row.address)
    return internet.TCPServer(row.port, factory, interface=row.address)


def _service_for(row: Listener, config: Config, state: NodeState,
                 members: Members | None = None) -> service.Service | None:
    if row.key == "[auth].mras_tls_port":
        return mras_service(row, config, state.issuer, members=members)  # MRAS: SIP SERVICE over MTLS
    if row.protocol == "SIP":
        return _sip_service(row, config, state)
    if row.protocol == "STUN/TURN":
        return None  # one TurnService serves UDP, TCP and TLS (see build)
    if row.protocol == "HTTPS":
        return https_service(row, config, state.issuer, members=members)  # the token API (edge.auth)
    if row.protocol == "HTTP":
        from um.worker.webapi import web_factory

        # The status page (HTTP or HTTPS) plus the UM web services (HTTPS only): um.worker.webapi.
        return internet.TCPServer(row.port, web_factory(status_site(state), config, state),
                                  interface=row.address)
    return None  # port ranges: sockets are opened per call or allocation


def build(config: Config, turn_only: bool = False) -> service.MultiService:
    """The service tree for the roles in config.node.roles (only the TURN relay if `turn_only`).

    The tree's `state` attribute (a NodeState) is the one view of the running
    services that the status page, `umedge status`, /metrics and the drain read.
    """
    root = service.MultiService()
    root.setName("umedge")
    root.state = state = NodeState(config)  # type: ignore[attr-defined]
    # One request-rate bucket per source address across every SIP listener of the node.
    state.sip_limiter = RateLimiter(config.limits.sip_requests_per_second, config.limits.sip_burst)
    Path(config.node.state_dir).mkdir(parents=True, exist_ok=True)
    if "edge" in config.node.roles or turn_only:
        state.turn = TurnService(config, reuse_port=config.edge.workers > 1, in_pool=not turn_only)
        state.turn.setName("edge/turn")
        state.turn.setServiceParent(root)
    if turn_only:
        return root
    StateSampler(state).setServiceParent(root)
    if "edge" in config.node.roles and mediation_enabled(config):
        state.mediation = mediation_service(config, lambda: state.turn.pool.store if state.turn.pool else None)
        state.mediation.setName("edge/mediation")
        state.mediation.setServiceParent(root)
    if {"callrouter", "mailbox", "worker"} & set(config.node.roles):
        state.um = UmRoles(config)  # call router, mailbox UM service and worker slots (um.callrouter)
        state.um.setServiceParent(root)
        if "worker" in config.node.roles and state.um.mailbox is not None:
            from um.worker.service import WorkerService

            state.worker = WorkerService(config, state.um.mailbox, state.um)  # calls, media, voicemail (um.worker)
            state.worker.setServiceParent(root)
    members = None
    if "edge" in config.node.roles:
        state.issuer = TokenIssuer.from_config(config)
        members = lambda: state.turn.pool.live if state.turn.pool else []  # noqa: E731 - the live relays, now
    for row in listeners(config):
        child = _service_for(row, config, state, members)
        if child is None:
            continue
        child.setName(f"{row.role}/{row.protocol.lower()}-{row.transport}-{row.port}")
        child.setServiceParent(root)
    return root
