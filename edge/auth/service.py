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
from um.netguard import ConnectionGuard, ConnectionLimits
from um.sip.stream import SipStreamFactory


def mras_service(port: int, address: str, config: EdgeSections, issuer: TokenIssuer | None = None,
                 members: Members | None = None) -> service.Service:
    handler = MrasHandler(issuer or TokenIssuer.from_config(config), pool_media_relays(config, members),
                          config.edge.realm)
    options = tls.server_options(config.node.certs_dir, config.node.name, client_cert="required")
    factory = ConnectionGuard(SipStreamFactory(handler, "tls", "edge"), ConnectionLimits.of(config.limits), "MRAS")
    return internet.SSLServer(port, factory, options, interface=address)


def https_service(port: int, address: str, config: EdgeSections, issuer: TokenIssuer | None = None,
                  members: Members | None = None) -> service.Service:
    endpoint = CredentialsEndpoint(issuer or TokenIssuer.from_config(config), ApiKeys(config.auth.api_keys),
                                   pool_turn_uris(config, members))
    options = tls.server_options(config.node.certs_dir, config.node.name, client_cert="optional",
                                 alpn=(b"http/1.1",))
    factory = ConnectionGuard(credentials_site(config.node.name, endpoint), ConnectionLimits.of(config.limits),
                              "token HTTPS")
    return internet.SSLServer(port, factory, options, interface=address)

