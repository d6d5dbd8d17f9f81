"""`[edge] workers = N`: relay processes share the TURN ports (SO_REUSEPORT) and stop with the node."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from pathlib import Path

from aioice import turn

from edge.tokens import mint
from tests.conftest import ServeProcess, write_config
from tests.turn.test_turn_aioice import Collector

SECRET = "workers-secret-0123456789"


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_two_relay_processes_share_the_ports_and_stop_together(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"edge": {"auth_secrets": [SECRET], "workers": 2,
                                             "max_allocations_per_user": 100}})
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        [worker] = children(process.proc.pid)

        async def allocate_many() -> int:
            token = mint(SECRET, "sip:many@example.test", 600, time.time())
            held = []
            for _ in range(16):  # 16 source ports: all on one process has odds 2**-15
                transport, _ = await turn.create_turn_endpoint(
                    Collector, ("127.0.0.1", files.port("edge", "turn_udp_port")), token.username, token.password)
                held.append(transport)
            for transport in held:
                transport.close()
            await asyncio.sleep(0.2)
            return len(held)

        assert asyncio.run(allocate_many()) == 16
        pids = set(re.findall(r"allocated \S+ for sip:many@example.test via udp .*pid (\d+)\)", process.stderr()))
        assert pids == {str(process.proc.pid), str(worker)}
        assert process.stop(signal.SIGTERM) == 0
        time.sleep(0.2)
        assert not os.path.exists(f"/proc/{worker}") or "Z" in Path(f"/proc/{worker}/stat").read_text().split()[2]
    finally:
        process.kill()
