"""SIGTERM drains (no new allocations or calls, active ones finish), SIGHUP reloads without a restart."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from aioice import turn

from edge import stun
from edge.stun import Attr
from edge.tokens import mint
from tests.conftest import ServeProcess, write_config
from tests.test_serve import read_response, sip_request
from tests.turn.test_turn_aioice import Collector

OLD, NEW = "old-secret-0123456789", "new-secret-0123456789"


def allocate_code(port: int, secret: str, identity: str = "sip:drain@example.test") -> int | None:
    """One full Allocate with edge's own codec: None on success, else the error code."""
    token = mint(secret, identity, 600, time.time())
    transport_attr = (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(stun.Message(stun.ALLOCATE, stun.REQUEST, None, [transport_attr]).encode(), ("127.0.0.1", port))
        nonce = stun.decode(sock.recv(2048)).get(Attr.NONCE)
        request = stun.Message(stun.ALLOCATE, stun.REQUEST, None, [
            transport_attr, (Attr.USERNAME, token.username.encode()), (Attr.REALM, b"example.test"),
            (Attr.NONCE, nonce)])
        sock.sendto(request.encode(stun.long_term_key(token.username, "example.test", token.password),
                                   fingerprint=True), ("127.0.0.1", port))
        reply = stun.decode(sock.recv(2048))
        return None if reply.msg_class == stun.SUCCESS else reply.error_code()[0]


def hold_an_allocation(loop: asyncio.AbstractEventLoop, port: int) -> Any:
    """An aioice TURN client with an allocation on the edge at `port` (keeps it until closed)."""
    token = mint(NEW, "sip:held@example.test", 600, time.time())
    held, _ = loop.run_until_complete(turn.create_turn_endpoint(
        Collector, ("127.0.0.1", port), token.username, token.password))
    return held


def test_sigterm_drains_then_exits_when_the_last_allocation_ends(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"edge": {"auth_secrets": [NEW]}, "node": {"drain_seconds": 20}})
    process = ServeProcess(files.path, "--roles", "edge")
    port = files.port("edge", "turn_udp_port")
    loop = asyncio.new_event_loop()
    try:
        process.wait_ready()
        held = hold_an_allocation(loop, port)
        process.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert process.proc.poll() is None  # still serving the active allocation
        assert allocate_code(port, NEW) == 508  # but no new one
        assert "SIGTERM: draining 1 active call(s) and allocation(s)" in process.stderr()

        async def release() -> None:
            held.close()
            await asyncio.sleep(0.3)

        released = time.monotonic()
        loop.run_until_complete(release())
        assert process.proc.wait(5) == 0
        assert time.monotonic() - released < 3
        assert "drain finished (0 still active)" in process.stderr()
    finally:
        loop.close()
        process.kill()


def test_drain_ends_at_drain_seconds(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"edge": {"auth_secrets": [NEW]}, "node": {"drain_seconds": 1.5}})
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        assert allocate_code(files.port("edge", "turn_udp_port"), NEW) is None  # held: never released
        started = time.monotonic()
        process.proc.send_signal(signal.SIGTERM)
        assert process.proc.wait(10) == 0
        assert 1.2 < time.monotonic() - started < 5
        assert "drain finished (1 still active)" in process.stderr()
    finally:
        process.kill()


def test_sighup_rotates_secrets_and_survives_a_bad_file(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"edge": {"auth_secrets": [OLD]}})
    process = ServeProcess(files.path, "--roles", "edge")
    port = files.port("edge", "turn_udp_port")
    try:
        process.wait_ready()
        assert allocate_code(port, NEW, "sip:a@example.test") == 401
        text = files.path.read_text()
        files.path.write_text(text.replace(f'auth_secrets = ["{OLD}"]', f'auth_secrets = ["{NEW}", "{OLD}"]'))
        process.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "SIGHUP: reloaded" not in process.stderr() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert allocate_code(port, NEW, "sip:b@example.test") is None
        assert allocate_code(port, OLD, "sip:c@example.test") is None  # still listed: still valid
        files.path.write_text(files.path.read_text() + "\n[edge]\nbogus_key = 1\n")
        process.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "config not reloaded" not in process.stderr() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "config not reloaded" in process.stderr()
        assert allocate_code(port, NEW, "sip:d@example.test") is None  # still running on the last good one
        assert process.proc.poll() is None
    finally:
        process.kill()



def test_sighup_reloads_the_gateways(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"callrouter": {"gateways": []}})
    process = ServeProcess(files.path, "--roles", "callrouter,mailbox,worker")
    port = files.port("callrouter", "sip_tcp_port")

    def invite_status() -> int:
        branch = f"z9hG4bK-{time.monotonic_ns()}".encode()  # a new transaction each time
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(sip_request("INVITE", port).replace(b"To: <sip:ping@127.0.0.1>", b"To: <sip:1001@127.0.0.1>")
                         .replace(b"sip:ping@", b"sip:5000@").replace(b"z9hG4bK-test1", branch))
            return int(read_response(sock).split(" ", 2)[1])

    try:
        process.wait_ready()
        assert invite_status() == 403  # 127.0.0.1 is no gateway of this config
        files.path.write_text(files.path.read_text().replace(
            "gateways = []", 'gateways = [{ address = "127.0.0.1", status = "enabled", name = "gw" }]'))
        process.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "SIGHUP: reloaded" not in process.stderr() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert invite_status() == 302
    finally:
        process.kill()


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    import shutil
    import subprocess

    import pytest

    from tests.conftest import ROOT

    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze not installed")
    unit = (ROOT / "contrib" / "umedge.service").read_text()
    assert "NoNewPrivileges=yes" in unit and "ProtectSystem=strict" in unit
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in unit
    copy = tmp_path / "umedge.service"
    copy.write_text(unit.replace("/opt/umedge/.venv/bin/umedge", "/bin/true"))
    result = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True)
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if line.strip() and "umedge.service" in line and "user" not in line.lower()]
    assert not problems, problems


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_during_a_drain_stops_at_once(tmp_path: Path, second: int) -> None:
    files = write_config(tmp_path, {"edge": {"auth_secrets": [NEW]}, "node": {"drain_seconds": 60}})
    process = ServeProcess(files.path, "--roles", "edge")
    port = files.port("edge", "turn_udp_port")
    loop = asyncio.new_event_loop()
    try:
        process.wait_ready()
        held = hold_an_allocation(loop, port)
        process.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while "SIGTERM: draining" not in process.stderr() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.proc.poll() is None  # draining the held allocation
        asked = time.monotonic()
        process.proc.send_signal(second)
        assert process.proc.wait(5) == 0
        assert time.monotonic() - asked < 5

        async def forget() -> None:  # the node is gone: close our side without waiting for it
            held.close()
            await asyncio.sleep(0)

        loop.run_until_complete(forget())
    finally:
        loop.close()
        process.kill()
