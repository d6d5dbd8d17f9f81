"""Extra TURN relay processes for `[edge] workers = N`: spawned, awaited, stopped with the node.

Each worker runs `umedge serve --turn-worker I` with the same config: only the
TURN listeners, bound with SO_REUSEPORT beside the main process's. Workers
die with their parent (PR_SET_PDEATHSIG), so a killed node leaves no orphan
relays.
"""

from __future__ import annotations

import ctypes
import select
import signal
import subprocess
import sys
import time

READY_LINE = "turn-worker ready"
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent exits."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the parent's stop() still ends the workers


class RelayWorkers:
    def __init__(self, config_path: str | None, count: int, log_format: str) -> None:
        base = [sys.executable, "-m", "edge.node.cli", "serve", "--log-format", log_format]
        if config_path:
            base += ["--config", config_path]
        self.processes = [subprocess.Popen([*base, "--turn-worker", str(index)], stdout=subprocess.PIPE,
                                           text=True) for index in range(1, count)]

    def wait_ready(self, timeout: float = 20.0) -> list[str]:
        """Wait for every worker's ready line; the problems of those that did not make it."""
        deadline = time.monotonic() + timeout
        problems = []
        for index, process in enumerate(self.processes, start=1):
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = process.stdout.readline() if ready else ""
            if line.strip() != READY_LINE:
                problems.append(f"TURN worker {index} did not start (exit {process.poll()})")
        return problems

    def signal(self, number: int) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(number)

    def stop(self, timeout: float = 3.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
