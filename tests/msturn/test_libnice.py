"""libnice (Debian gir1.2-nice-0.1, driven from the system Python) relays through the umedge edge.

tests/msturn/libnice_agent.py runs two libnice agents in one process, each with a
TURN-UDP relay on `umedge serve --roles edge`, only relay candidates
(force-relay), and exchanges a payload both ways over the relay-relay pair.
One run uses Nice.Compatibility.OC2007R2 ([MS-TURN] on the TURN UDP port), the
other RFC5245 (RFC TURN), both at the same time against the same port.

Credentials: fetched from the edge's A/V authentication service over MRAS (MTLS SIP SERVICE), i.e. what the MRAS
service hands out in <username>/<password>. libnice's OC2007 TURN socket
base64-decodes both (socket/udp-turn.c), so for OC2007R2 the username is given
base64-encoded (it decodes to the token username the edge reads as text) and the
password as it is (already base64: it decodes to the HMAC bytes, one of the two
forms the edge keys with). RFC5245 gets the texts unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from certs import pki
from tests.conftest import REQUIRE_TOOLS, NodeFiles, ServeProcess, write_config
from tests.msturn.libnice_driver import MISSING, SYSTEM_PYTHON, needs_libnice, system_env
from um.mras.client import MrasClient

DRIVER = Path(__file__).with_name("libnice_agent.py")
SECRET = "libnice-secret-0123456789"
DRIVER_TIMEOUT = 15  # seconds, each run (they run in parallel)


pytestmark = needs_libnice


def _start(port: int, username: str, password: str, compat: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [SYSTEM_PYTHON, str(DRIVER), "--server", "127.0.0.1", "--port", str(port),
         "--username", username, "--password", password, "--compat", compat,
         "--timeout", str(DRIVER_TIMEOUT)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=system_env())


def _report(proc: subprocess.Popen[str]) -> tuple[dict[str, object], str]:
    try:
        out, err = proc.communicate(timeout=DRIVER_TIMEOUT + 20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"driver exited {proc.returncode} without a report: {err[-3000:]}"
    return json.loads(lines[-1]), err


@contextmanager
def _edge(directory: Path) -> Iterator[tuple[int, ServeProcess, NodeFiles]]:
    files = write_config(directory, {"edge": {"auth_secrets": [SECRET],
                                              "allowed_peer_networks": ["127.0.0.0/8"]}})
    server = ServeProcess(files.path, "--roles", "edge")
    try:
        server.wait_ready()
        yield files.port("edge", "turn_udp_port"), server, files
    finally:
        server.kill()


def _mras_credentials(files: NodeFiles) -> tuple[str, str]:
    """A token as Lync gets one: MRAS SIP SERVICE over MTLS to the edge's A/V authentication service."""
    pki.issue(files.certs_dir, "lync-client", [])
    context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
    context.load_cert_chain(str(files.certs_dir / "lync-client.crt"), str(files.certs_dir / "lync-client.key"))

    async def fetch() -> tuple[str, str]:
        client = await MrasClient.connect("127.0.0.1", files.port("auth", "mras_tls_port"), context,
                                          server_hostname="127.0.0.1")
        try:
            answer = await client.request_credentials("sip:alice@example.test", location="intranet")
        finally:
            await client.close()
        return answer.credentials.username, answer.credentials.password

    return asyncio.run(fetch())


def _run_both(port: int, files: NodeFiles) -> dict[str, tuple[dict[str, object], str]]:
    """OC2007R2 and RFC5245 at the same time on `port`: compat -> (report, stderr)."""
    username, password = _mras_credentials(files)
    runs = {
        "oc2007r2": _start(port, base64.b64encode(username.encode()).decode(), password, "oc2007r2"),
        "rfc5245": _start(port, username, password, "rfc5245"),
    }
    return {compat: _report(proc) for compat, proc in runs.items()}


def _check(reports: dict[str, tuple[dict[str, object], str]], server: ServeProcess) -> None:
    log = server.log_path.read_text(errors="replace") if server.log_path.exists() else ""
    for compat, (report, err) in reports.items():
        context = (f"{compat}: {report}\n--- driver stderr (tail) ---\n{err[-2000:]}"
                   f"\n--- edge log (tail) ---\n{log[-2000:]}")
        assert report["gathered"] == {"a": True, "b": True}, context
        relays = report["relays"]
        assert isinstance(relays, dict)
        for agent in ("a", "b"):
            relay = relays[agent]
            assert relay is not None, context
            assert relay[0] == "127.0.0.1" and 50000 <= relay[1] <= 59999, context  # the edge's relay range
        assert relays["a"] != relays["b"], context
        assert report["selected"] == {"a": ["relay", "relay"], "b": ["relay", "relay"]}, context
        assert report["received"] == {"a": "umedge-libnice-b", "b": "umedge-libnice-a"}, context
        assert report["ok"] is True and report["error"] is None, context


def test_libnice_oc2007r2_and_rfc5245_relay_data_through_the_edge(tmp_path: Path) -> None:
    assert not MISSING, MISSING
    with _edge(tmp_path) as (port, server, files):
        reports = _run_both(port, files)
    _check(reports, server)


@pytest.mark.skipif(shutil.which("tshark") is None and not REQUIRE_TOOLS,
                    reason="tshark missing (apt-get install tshark)")
def test_tshark_decodes_the_exchanges_without_malformed_packets(tmp_path: Path) -> None:
    """The same runs captured on lo (the TURN port only, bounded) and read by tshark's STUN dissectors.

    [MS-TURN] is RFC 3489 framing, which tshark's STUN dissector hands to its
    classic-STUN dissector. After Set Active Destination libnice sends its
    payloads unframed (plain UDP in the capture).
    """
    assert not MISSING, MISSING
    assert shutil.which("tshark"), "tshark missing (apt-get install tshark)"
    capture = tmp_path / "turn.pcapng"
    with _edge(tmp_path) as (port, server, files):
        tshark = subprocess.Popen(
            ["tshark", "-q", "-i", "lo", "-f", f"udp port {port}", "-a", "duration:40", "-w", str(capture)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            assert tshark.stderr is not None
            started = ""
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and "Capturing on" not in started:
                line = tshark.stderr.readline()
                if not line:
                    break
                started += line
            if "Capturing on" not in started:
                tshark.kill()
                pytest.skip(f"cannot capture on lo here: {started.strip()[-300:]}")
            reports = _run_both(port, files)
            time.sleep(0.5)  # the last datagrams reach the capture file
        finally:
            tshark.send_signal(signal.SIGINT)
            try:
                tshark.wait(timeout=10)
            except subprocess.TimeoutExpired:
                tshark.kill()
                tshark.wait()
    _check(reports, server)

    def read(*args: str) -> str:
        done = subprocess.run(["tshark", "-r", str(capture), "-d", f"udp.port=={port},stun", *args],
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    summary = read("-T", "fields", "-e", "frame.protocols", "-e", "classicstun.type", "-e", "stun.type")
    rows = [line.split("\t") for line in summary.splitlines() if line.strip()]
    assert rows, "nothing captured"
    ms_types = {int(row[1], 16) for row in rows if len(row) > 1 and row[1]}
    rfc_types = {int(row[2], 16) for row in rows if len(row) > 2 and row[2]}
    # [MS-TURN] (OC2007R2): Allocate request/401/success, Send request, Set Active Destination
    # request/response and Data indications, each dissected as classic STUN.
    assert {0x0003, 0x0113, 0x0103, 0x0004, 0x0006, 0x0106, 0x0115} <= ms_types, sorted(map(hex, ms_types))
    # RFC TURN (RFC5245): Allocate request/success, CreatePermission and Data, dissected as STUN.
    assert {0x0003, 0x0103, 0x0008, 0x0108} <= rfc_types and (rfc_types & {0x0016, 0x0017}), \
        sorted(map(hex, rfc_types))
    bad = read("-Y", "_ws.malformed || _ws.expert.severity >= warning")
    assert bad.strip() == "", bad[:3000]
