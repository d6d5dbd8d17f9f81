"""`umedge probe` against a real edge: the good path, and each failure named in plain words."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_TOOLS, ROOT, NodeFiles, ServeProcess, free_port, umedge, write_config

SECRET = "probe-secret-0123456789"
API_KEY = "probe-api-key-0123456789"


def start(directory: Path, allow_loopback: bool = True,
          prefix: tuple[str, ...] = ()) -> tuple[NodeFiles, ServeProcess]:
    edge: dict[str, object] = {"auth_secrets": [SECRET]}
    if allow_loopback:
        edge["allowed_peer_networks"] = ["127.0.0.0/8"]
    files = write_config(directory, {"edge": edge, "auth": {"api_keys": [API_KEY]}})
    process = ServeProcess(files.path, "--roles", "edge", prefix=prefix)
    process.wait_ready()
    return files, process


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFiles]:
    files, process = start(tmp_path_factory.mktemp("probe"))
    try:
        yield files
    finally:
        process.kill()


def run_probe(files: NodeFiles, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    secret = files.path.parent / "secret"
    secret.write_text(SECRET + "\n")
    result = umedge("probe", "--config", str(files.path), "--edge", "127.0.0.1", "--timeout", "1", "--json",
                    *(extra or ("--secret-file", str(secret), "--ca", str(files.certs_dir / "ca.crt"))))
    return result.returncode, json.loads(result.stdout)


def steps(report: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {step["name"]: step for step in report["steps"]}


def test_media_traverses(edge: NodeFiles) -> None:
    code, report = run_probe(edge)
    assert code == 0 and report["media_ok"]
    named = steps(report)
    assert all(step["ok"] for step in report["steps"]), report
    assert named["TURN allocation"]["detail"].startswith("relayed 127.0.0.1:")
    assert named["STUN over UDP"]["detail"].startswith("reflexive 127.0.0.1:")


def test_token_from_the_https_api(edge: NodeFiles) -> None:
    key = edge.path.parent / "api-key"
    key.write_text(API_KEY)
    url = f"https://127.0.0.1:{edge.port('auth', 'https_port')}/v1/credentials"
    code, report = run_probe(edge, "--token-from", url, "--api-key-file", str(key),
                             "--ca", str(edge.certs_dir / "ca.crt"))
    assert code == 0, report


def test_bad_token_and_untrusted_certificate(edge: NodeFiles) -> None:
    wrong = edge.path.parent / "wrong"
    wrong.write_text("not-the-secret-0123456789")
    code, report = run_probe(edge, "--secret-file", str(wrong))  # and no --ca: the pool CA is unknown
    named = steps(report)
    assert code == 1 and not report["media_ok"]
    assert named["TURN allocation"]["reason"].startswith("401 bad token")
    assert named["STUN over TLS"]["reason"].startswith("certificate untrusted")


def test_blocked_port_is_named(edge: NodeFiles) -> None:
    closed = str(free_port())
    code, report = run_probe(edge, "--secret-file", str(edge.path.parent / "secret"),
                             "--udp-port", closed, "--tcp-port", closed)
    named = steps(report)
    assert code == 1
    assert "UDP port blocked" in named["STUN over UDP"]["reason"]
    assert "port blocked or closed" in named["STUN over TCP"]["reason"]


def test_peer_denied_is_named(tmp_path: Path) -> None:
    """Same host, default peer policy: the 403 names the loopback network and the ways to probe anyway."""
    files, process = start(tmp_path, allow_loopback=False)
    try:
        code, report = run_probe(files)
        assert code == 1
        reason = steps(report)["relay round trip"]["reason"]
        assert reason.startswith("403 peer denied by the edge's policy: the echo address (as the edge saw it) "
                                 "127.0.0.1 is in 127.0.0.0/8 (loopback), a network the edge refuses"), reason
        assert "--echo-address" in reason and "[edge] allowed_peer_networks" in reason
        assert '"127.0.0.1/32"' in reason
        # A denied --echo-address is named as such.
        code, report = run_probe(files, "--secret-file", str(files.path.parent / "secret"),
                                 "--echo-address", "127.0.0.2")
        assert code == 1
        assert steps(report)["relay round trip"]["reason"].startswith(
            "403 peer denied by the edge's policy: the --echo-address 127.0.0.2 is in 127.0.0.0/8 (loopback)")
    finally:
        process.kill()


def test_echo_address_not_an_ip(edge: NodeFiles) -> None:
    result = umedge("probe", "--config", str(edge.path), "--edge", "127.0.0.1", "--echo-address", "edge.example")
    assert result.returncode == 2 and "--echo-address edge.example: not an IP address" in result.stderr


ECHO = "198.51.100.7"  # a documentation address (not denied by default), on lo inside the namespace only


@pytest.fixture
def netns() -> Iterator[str]:
    """A network namespace of its own (lo up, ECHO on lo), so nothing touches the host's addresses."""
    missing = ("needs root (network namespaces)" if os.geteuid() != 0
               else None if shutil.which("ip") else "ip not installed")
    if missing:
        if REQUIRE_TOOLS:
            pytest.fail(missing)
        pytest.skip(missing)
    name = f"umprobe-{os.getpid()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for command in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{ECHO}/32", "dev", "lo"]):
            subprocess.run(["ip", "netns", "exec", name, *command], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_echo_address_makes_a_same_host_probe_pass(tmp_path: Path, netns: str) -> None:
    """The edge's default policy (no allowed_peer_networks) and a probe on its host: loopback is denied,
    --echo-address with an address of the host that the edge may relay to gets media through."""
    prefix = ("ip", "netns", "exec", netns)
    files, process = start(tmp_path, allow_loopback=False, prefix=prefix)
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")

    def probe(*extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
        result = subprocess.run([*prefix, sys.executable, "-m", "edge.node.cli", "probe", "--config",
                                 str(files.path), "--edge", "127.0.0.1", "--timeout", "1", "--json",
                                 "--secret-file", str(secret), "--ca", str(files.certs_dir / "ca.crt"), *extra],
                                capture_output=True, text=True, timeout=60, cwd=ROOT)
        return result.returncode, json.loads(result.stdout)

    try:
        code, report = probe()
        assert code == 1 and "127.0.0.0/8 (loopback)" in steps(report)["relay round trip"]["reason"]
        # An address this host (the namespace) does not have cannot hold the echo.
        code, report = probe("--echo-address", "192.0.2.254")
        assert code == 1 and not report["media_ok"]
        assert steps(report)["echo socket"]["reason"].startswith("cannot bind the echo socket to --echo-address")
        code, report = probe("--echo-address", ECHO)
        assert code == 0 and report["media_ok"], report
        assert all(step["ok"] for step in report["steps"]), report
        assert steps(report)["relay round trip"]["detail"] == "5 datagrams there and back"
    finally:
        process.kill()
