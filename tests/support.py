"""Test helpers without pytest, so benchmarks and helper scripts can import them too."""

from __future__ import annotations

import socket

RELAY_PORT_MIN = 50000  # the default relay range starts here; test listeners stay below it


def _bindable(port: int, kind: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


def free_port(kind: int = socket.SOCK_STREAM, taken: set[int] | None = None) -> int:
    """A loopback port free for both TCP and UDP right now, below the relay range, not in `taken`."""
    taken = taken if taken is not None else set()
    other = socket.SOCK_DGRAM if kind == socket.SOCK_STREAM else socket.SOCK_STREAM
    while True:
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port < RELAY_PORT_MIN - 10 and port not in taken and _bindable(port, other):
            taken.add(port)
            return port


def toml_value(value: object) -> str:
    """A Python value as TOML (strings, numbers, booleans, lists and inline tables of them)."""
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return str(value)
