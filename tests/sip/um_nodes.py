"""Config files for UM test nodes: tests.conftest.write_config plus the table-valued [callrouter] keys."""

from __future__ import annotations

import json
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


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_inline(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return json.dumps(value)  # strings, numbers and booleans read the same in TOML


def um_config(directory: Path, overrides: dict[str, dict[str, Any]] | None = None,
              name: str = "config.toml") -> NodeFiles:
    """write_config, with list/table values (gateways, hunt groups...) written as TOML inline tables."""
    simple: dict[str, dict[str, Any]] = {}
    tables: dict[str, dict[str, Any]] = {}
    for section, values in (overrides or {}).items():
        for key, value in values.items():
            complex_ = isinstance(value, list) and any(isinstance(v, dict) for v in value)
            (tables if complex_ else simple).setdefault(section, {})[key] = value
    files = write_config(directory, simple, name=name)
    text = files.path.read_text()
    for section, values in tables.items():
        lines = "".join(f"{k} = {_inline(v)}\n" for k, v in values.items())
        if f"[{section}]\n" in text:
            text = text.replace(f"[{section}]\n", f"[{section}]\n{lines}", 1)
        else:
            text += f"[{section}]\n{lines}"
        files.values.setdefault(section, {}).update(values)
    files.path.write_text(text)
    return files
