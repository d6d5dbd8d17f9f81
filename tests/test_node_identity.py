"""The node's generated TURN secret: created once, private, stable across restarts."""

from __future__ import annotations

import stat
from pathlib import Path

from edge.auth.secrets import auth_secrets
from edge.node.config import load
from edge.node.identity import node_sans
from tests.conftest import write_config


def test_generated_secret_is_private_and_stable(tmp_path: Path) -> None:
    config = load(write_config(tmp_path).path)
    first = auth_secrets(config)
    path = Path(config.node.state_dir) / "auth_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 1 and len(first[0]) >= 32
    assert auth_secrets(config) == first


def test_configured_secrets_win(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, {"edge": {"auth_secrets": ["a" * 16, "b" * 20]}}).path)
    assert auth_secrets(config) == ("a" * 16, "b" * 20)
    assert not (Path(config.node.state_dir) / "auth_secret").exists()


def test_node_sans_skip_wildcards(tmp_path: Path) -> None:
    config = load(write_config(tmp_path, {"edge": {"listen_address": "0.0.0.0",
                                                   "external_address": "203.0.113.9"}}).path)
    assert node_sans(config) == ["node1.example.test", "localhost", "127.0.0.1", "203.0.113.9"]
