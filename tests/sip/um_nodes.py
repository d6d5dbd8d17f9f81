"""Config files for UM test nodes: tests.conftest.write_config plus the table-valued [callrouter] keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import NodeFiles, write_config

SECURE_PLANS = {
    "hunt_groups": [{"pilot": "5000", "dial_plan": "default"}, {"pilot": "5001", "dial_plan": "default"},
                    {"pilot": "6000", "dial_plan": "secure"}],
    "dial_plans": [{"name": "default", "extension_length": 4, "access_numbers": ["5001"]},
                   {"name": "secure", "extension_length": 4, "voip_security": "secured"}],
    "mailboxes": [{"extension": "1000-1009", "server": "local"}],  # in every dial plan
}


def um_config(directory: Path, overrides: dict[str, dict[str, Any]] | None = None,
              name: str = "config.toml") -> NodeFiles:
    """write_config for UM tests (gateways, hunt groups... are written as TOML inline tables)."""
    return write_config(directory, overrides, name=name)
