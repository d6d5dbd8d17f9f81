"""This node's certificate: which names it carries, and creating it on first start."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from certs import pki
from edge.config_schema import Config


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


def auth_secrets(config: Config) -> tuple[str, ...]:
    """The TURN REST API secrets: the configured ones, else this node's generated one.

    A single node needs no operator-chosen secret; it keeps a random one in
    <state_dir>/auth_secret (0600) so tokens survive restarts. A pool lists
    the same secrets on every node instead.
    """
    if config.edge.auth_secrets:
        return config.edge.auth_secrets
    path = Path(config.node.state_dir) / "auth_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(".auth_secret.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_urlsafe(32).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    return (path.read_text().strip(),)
