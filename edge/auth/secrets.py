"""The TURN REST API secrets every token is signed and checked with (A/V Edge)."""

from __future__ import annotations

from pathlib import Path

from edge.config import EdgeSections
from um.secretfile import generated_secret


def auth_secrets(config: EdgeSections) -> tuple[str, ...]:
    """The TURN REST API secrets: the configured ones, else this node's generated one.

    A single node needs no operator-chosen secret; it keeps a random one in
    <state_dir>/auth_secret (0600) so tokens survive restarts. A pool lists
    the same secrets on every node instead.
    """
    if config.edge.auth_secrets:
        return config.edge.auth_secrets
    return (generated_secret(Path(config.node.state_dir) / "auth_secret"),)
