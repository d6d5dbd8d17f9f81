"""Shared test helpers: free loopback ports, config files, and a real `umedge serve` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import free_port, toml_value

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_TOOLS = os.environ.get("UMEDGE_REQUIRE_TOOLS") == "1"  # set by scripts/test.sh in CI


PORT_KEYS = {
    "callrouter": ["sip_tcp_port", "sip_tls_port"],
    "mailbox": ["sip_tcp_port", "sip_tls_port"],
    "edge": ["turn_udp_port", "turn_tcp_port", "turn_tls_port"],
    "auth": ["https_port", "mras_tls_port"],
    "web": ["http_port"],
}


@dataclass
class NodeFiles:
    """A config file on free ports plus its state and certs directories."""

    path: Path
    values: dict[str, dict[str, object]] = field(default_factory=dict)

    def port(self, section: str, key: str) -> int:
        return int(self.values[section][key])  # type: ignore[arg-type]

    @property
    def certs_dir(self) -> Path:
        return self.path.parent / str(self.values.get("node", {}).get("certs_dir", "certs"))


def write_config(directory: Path, overrides: dict[str, dict[str, object]] | None = None,
                 name: str = "config.toml") -> NodeFiles:
    """A complete config on free loopback ports, with `overrides` applied per section."""
    taken: set[int] = set()
    values: dict[str, dict[str, object]] = {
        "node": {"name": "node1", "state_dir": "state", "certs_dir": "certs"},
        # No kernel fast path unless a test asks (tests/offload): nodes killed by serving() would leave it on lo.
        "edge": {"kernel_offload": "off"},
        # Tone prompts unless a test asks for speech (tests/prompts, tests/menu): short, and no espeak-ng
        # rendering at every node's first start.
        "worker": {"sip_ports": [free_port(taken=taken), free_port(taken=taken)],
                   "sip_dual_tls_ports": [free_port(taken=taken), free_port(taken=taken)], "prompts": "tones"},
    }
    for section, keys in PORT_KEYS.items():
        values.setdefault(section, {})
        shared = free_port(taken=taken)
        for key in keys:
            # TURN over UDP and TCP share a port number, as 3478 does by default.
            values[section][key] = shared if key == "turn_tcp_port" else free_port(taken=taken)
        if section == "edge":
            values[section]["turn_tcp_port"] = values[section]["turn_udp_port"]
    for section, table in (overrides or {}).items():
        values.setdefault(section, {}).update(table)
    text = "\n".join(
        f"[{section}]\n" + "\n".join(f"{k} = {toml_value(v)}" for k, v in table.items()) + "\n"
        for section, table in values.items()
    )
    path = directory / name
    path.write_text(text)
    return NodeFiles(path, values)


def umedge(*args: str, timeout: float = 60, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess."""
    return subprocess.run([sys.executable, "-m", "edge.node.cli", *args], capture_output=True, text=True,
                          timeout=timeout, input=input, cwd=ROOT)


class ServeProcess:
    """`umedge serve` as a child process; waits until its listener table is printed."""

    def __init__(self, config: Path, *extra: str, prefix: tuple[str, ...] = ()) -> None:
        """`prefix` runs it under another command (`ip netns exec NS` in the NAT lab)."""
        self.config = config
        self.log_path = config.parent / f"serve-{time.monotonic_ns()}.log"
        self._log = open(self.log_path, "w+")
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "edge.node.cli", "serve", "--config",
                                      str(config), *extra], stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     cwd=ROOT)
        self.stdout_lines: list[str] = []

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError(f"umedge serve exited {self.proc.wait()}: {self.stderr()}")
            self.stdout_lines.append(line)
            if line.startswith("ready: "):
                return
        raise AssertionError(f"umedge serve not ready in {timeout}s: {self.stderr()}")

    def stderr(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 5) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@contextmanager
def serving(files: NodeFiles, *extra: str) -> Iterator[ServeProcess]:
    """`umedge serve` on `files`, ready, killed on the way out."""
    process = ServeProcess(files.path, *extra)
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill()


@pytest.fixture
def node(tmp_path: Path) -> NodeFiles:
    return write_config(tmp_path)


@pytest.fixture
def serve(node: NodeFiles) -> Iterator[ServeProcess]:
    process = ServeProcess(node.path)
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill()
