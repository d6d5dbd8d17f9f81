"""`umedge probe` against a real edge: the good path, and each failure named in plain words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import NodeFiles, ServeProcess, free_port, umedge, write_config

SECRET = "probe-secret-0123456789"
API_KEY = "probe-api-key-0123456789"


def start(directory: Path, allow_loopback: bool = True) -> tuple[NodeFiles, ServeProcess]:
    edge: dict[str, object] = {"auth_secrets": [SECRET]}
    if allow_loopback:
        edge["allowed_peer_networks"] = ["127.0.0.0/8"]
    files = write_config(directory, {"edge": edge, "auth": {"api_keys": [API_KEY]}})
    process = ServeProcess(files.path, "--roles", "edge")
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
    files, process = start(tmp_path, allow_loopback=False)
    try:
        code, report = run_probe(files)
        assert code == 1
        assert steps(report)["relay round trip"]["reason"].startswith("403 peer denied")
    finally:
        process.kill()
