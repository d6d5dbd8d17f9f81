"""The composition root: config -> one Twisted MultiService with a child per listener.

Each role contributes named child services; starting the tree binds every
socket (so a port in use fails start-up at once), stopping it closes them.
"""

from __future__ import annotations

from pathlib import Path

from twisted.application import internet, service
from twisted.logger import Logger

from certs import tls
from edge.config_schema import Config
from edge.listeners import Listener, listeners
from edge.turn.service import TurnService
from edge.web import auth_site, status_site
from um.sip.responder import OptionsResponder
from um.sip.stream import SipStreamFactory

log = Logger(namespace="umedge.service")


def _sip_service(row: Listener, config: Config) -> service.Service:
    factory = SipStreamFactory(OptionsResponder(row.role), row.transport, row.role)
    if row.transport == "tls":
        options = tls.server_options(config.node.certs_dir, config.node.name, client_cert="required")
        return internet.SSLServer(row.port, factory, options, interface=row.address)
    return internet.TCPServer(row.port, factory, interface=row.address)


def _service_for(row: Listener, config: Config) -> service.Service | None:
    certs_dir, name = config.node.certs_dir, config.node.name
    if row.protocol == "SIP":
        return _sip_service(row, config)
    if row.protocol == "STUN/TURN":
        return None  # one TurnService serves UDP, TCP and TLS (see build)
    if row.protocol == "HTTPS":
        return internet.SSLServer(row.port, auth_site(name),
                                  tls.server_options(certs_dir, name, client_cert="optional", alpn=(b"http/1.1",)),
                                  interface=row.address)
    if row.protocol == "HTTP":
        return internet.TCPServer(row.port, status_site(name, listeners(config)), interface=row.address)
    return None  # port ranges: sockets are opened per call or allocation


def build(config: Config, turn_only: bool = False) -> service.MultiService:
    """The service tree for the roles in config.node.roles (only the TURN relay if `turn_only`)."""
    root = service.MultiService()
    root.setName("umedge")
    Path(config.node.state_dir).mkdir(parents=True, exist_ok=True)
    if "edge" in config.node.roles or turn_only:
        turn = TurnService(config, reuse_port=config.edge.workers > 1)
        turn.setName("edge/turn")
        turn.setServiceParent(root)
    if turn_only:
        return root
    for row in listeners(config):
        child = _service_for(row, config)
        if child is None:
            continue
        child.setName(f"{row.role}/{row.protocol.lower()}-{row.transport}-{row.port}")
        child.setServiceParent(root)
    return root
