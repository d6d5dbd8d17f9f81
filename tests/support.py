"""Test helpers without pytest, so benchmarks and helper scripts can import them too."""

from __future__ import annotations

import os
import socket
from pathlib import Path

RELAY_PORT_MIN = 50000  # the default relay range starts here; test listeners stay below it


def _bindable(port: int, kind: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False


PORT_BLOCK_START, PORT_BLOCK_SIZE = 20000, 4000


def _port_block() -> range:
    """The ports this test process hands out: below the kernel's ephemeral range (32768 up), so no
    outgoing connection takes one between the check and the node's bind, and one block per
    pytest-xdist worker, so two test processes never hand out the same port."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    index = int(worker) % 3 if worker.isdigit() else 0
    start = PORT_BLOCK_START + index * PORT_BLOCK_SIZE
    return range(start, start + PORT_BLOCK_SIZE)


_next_port = [0]


def free_port(kind: int = socket.SOCK_STREAM, taken: set[int] | None = None) -> int:
    """A loopback port free for both TCP and UDP right now, from this process's block, not in `taken`.

    Handed out in turn (wrapping), so a port comes back only after the whole block was used."""
    taken = taken if taken is not None else set()
    block = _port_block()
    for _ in range(len(block)):
        port = block[_next_port[0] % len(block)]
        _next_port[0] += 1
        if port not in taken and _bindable(port, socket.SOCK_STREAM) and _bindable(port, socket.SOCK_DGRAM):
            taken.add(port)
            return port
    raise RuntimeError(f"no free port in {block}")


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


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat fields from "state" (the 3rd) on; None if the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def process_tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of `pid`, its reaped children and its live descendants (benchmarks)."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                stats[int(entry)] = fields
                parents[int(entry)] = int(fields[1])
    if pid not in stats:
        return 0.0
    tree, grew = {pid}, True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    # utime, stime, cutime, cstime are fields 14-17, i.e. 11-14 after "state".
    return sum(sum(int(stats[p][i]) for i in (11, 12, 13, 14)) for p in tree if p in stats) / ticks
