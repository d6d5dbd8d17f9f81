"""This node's certificate: which names it carries, and creating it on first start."""

from __future__ import annotations

from certs import pki
from edge.node.schema import Config


def node_sans(config: Config) -> list[str]:
    """Names and addresses the node certificate must carry (the name itself is added by pki)."""
    sans = [config.node.fqdn, "localhost"]
    for address in (config.node.listen_address, config.edge.listen_address, config.edge.external_address):
        if address and address not in ("0.0.0.0", "::"):
            sans.append(address)
    return sans


def ensure_certificates(config: Config) -> list[str]:
    """First start: create the pool CA and this node's certificate if missing."""
    return pki.ensure_node(config.node.certs_dir, f"umedge pool CA ({config.node.domain})",
                           config.node.name, node_sans(config))
