"""The token service's listeners as Twisted services, for edge.node.build.build.

MRAS: SIP over TLS requiring a pool-CA client certificate. HTTPS: TLS with
an optional client certificate (verified when sent), HTTP/1.1 keep-alive.
"""

from __future__ import annotations

from twisted.application import internet, service

from certs import tls
from edge.auth.https import CredentialsEndpoint, credentials_site
from edge.auth.issuer import TokenIssuer
from edge.auth.mras_sip import MrasHandler
from edge.auth.relays import Members, pool_media_relays, pool_turn_uris
from edge.config import EdgeSections
from um.apikeys import ApiKeys
from um.netguard import LISTEN_BACKLOG, ConnectionGuard, ConnectionLimits, guarded, settle_on_request
from um.sip.stream import SipStreamFactory


def mras_service(port: int, address: str, config: EdgeSections, issuer: TokenIssuer | None = None,
                 members: Members | None = None, guards: list[ConnectionGuard] | None = None) -> service.Service:
    """`guards` (if given) collects the listener's connection guard, for the node's metrics."""
    handler = MrasHandler(issuer or TokenIssuer.from_config(config), pool_media_relays(config, members),
                          config.edge.realm)
    options = tls.server_options(config.node.certs_dir, config.node.name, client_cert="required")
    # The guard outside TLS, so refusing closes the socket; SipStreamProtocol settles it per message.
    sip = SipStreamFactory(handler, "tls", "edge", server=config.node.server_header or None)
    factory = guarded(sip, ConnectionLimits.of(config.limits), "MRAS", options)
    if guards is not None:
        guards.append(factory)
    return internet.TCPServer(port, factory, backlog=LISTEN_BACKLOG, interface=address)


def https_service(port: int, address: str, config: EdgeSections, issuer: TokenIssuer | None = None,
                  members: Members | None = None, guards: list[ConnectionGuard] | None = None) -> service.Service:
    """`guards` (if given) collects the listener's connection guard, for the node's metrics."""
    endpoint = CredentialsEndpoint(issuer or TokenIssuer.from_config(config), ApiKeys(config.auth.api_keys),
                                   pool_turn_uris(config, members))
    options = tls.server_options(config.node.certs_dir, config.node.name, client_cert="optional",
                                 alpn=(b"http/1.1",))
    site = credentials_site(config.node.name, endpoint)
    settle_on_request(site)  # a whole request settles the guard: then only the idle timeout applies
    factory = guarded(site, ConnectionLimits.of(config.limits), "token HTTPS", options)
    if guards is not None:
        guards.append(factory)
    return internet.TCPServer(port, factory, backlog=LISTEN_BACKLOG, interface=address)

