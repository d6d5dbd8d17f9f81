"""The TURN REST API secrets every token is signed and checked with (A/V Edge)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from edge.config import EdgeSections


def auth_secrets(config: EdgeSections) -> tuple[str, ...]:
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
