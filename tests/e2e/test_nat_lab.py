"""Media across real NAT (network namespaces + nftables): `umedge probe` from a caller behind NAT."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT, NodeFiles, ServeProcess, write_config
from tests.e2e import lab
from tests.e2e.lab import Lab

SECRET = "lab-secret-0123456789"


@pytest.fixture(scope="module")
def site(nat_lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """The lab's servers: DNS and the edge in the edge namespace, the UM roles on the mailbox host."""
    root = tmp_path_factory.mktemp("lab")
    pki = str(root / "pki")  # one pool CA for the edge and the mailbox (MRAS is MTLS)
    (root / "edge").mkdir()
    edge_files = write_config(root / "edge", {
        "node": {"name": "edge1", "listen_address": "0.0.0.0", "certs_dir": pki},
        "edge": {"listen_address": "0.0.0.0", "relay_address": "0.0.0.0", "external_address": lab.EDGE_OUT,
                 "auth_secrets": [SECRET], "allowed_peer_networks": [f"{lab.INTERNAL}.0/24"],
                 "turn_udp_port": 3478, "turn_tcp_port": 3478, "turn_tls_port": 5349},
        "auth": {"mras_tls_port": 5064, "https_port": 4443}})
    (root / "edge" / "secret").write_text(SECRET)
    (root / "mailbox").mkdir()
    mailbox_files = write_config(root / "mailbox", {
        "node": {"name": "mbx1", "listen_address": lab.MAILBOX, "certs_dir": pki},
        "callrouter": {"sip_tcp_port": 5060, "sip_tls_port": 5061,
                       "gateways": [{"address": lab.CNAT_OUT, "status": "enabled", "name": "caller-nat"}]},
        "mailbox": {"sip_tcp_port": 5062, "sip_tls_port": 5063},
        "worker": {"sip_ports": [5065, 5067], "sip_dual_tls_ports": [5066, 5068], "media_via_edge": True,
                   "edge_mras": f"{lab.EDGE_IN}:5064", "rtp_port_min": 40000, "rtp_port_max": 40999,
                   "silence_timeout": 0}})
    zone = root / "zone.json"
    zone.write_text(json.dumps({
        "edge1.example.test": [["A", lab.EDGE_IN, 30]],
        "mbx1.example.test": [["A", lab.MAILBOX, 30]],
        "_sipinternal._tcp.example.test": [["SRV", 10, 0, 5060, "mbx1.example.test", 30]],
    }))
    dns = nat_lab.popen("edge", [sys.executable, "-m", "tests.mediation.dns_server", "53", str(zone),
                                 lab.EDGE_IN, lab.EDGE_OUT], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert dns.stdout is not None and dns.stdout.readline().strip() == "ready"
    lab.resolver("mbx", lab.EDGE_IN)
    lab.resolver("caller", lab.EDGE_OUT)
    edge = ServeProcess(edge_files.path, "--roles", "edge", prefix=("ip", "netns", "exec", lab.ns("edge")))
    edge.wait_ready()  # creates the pool CA the mailbox then shares
    mailbox = ServeProcess(mailbox_files.path, "--roles", "callrouter,mailbox,worker",
                           prefix=("ip", "netns", "exec", lab.ns("mbx")))
    try:
        mailbox.wait_ready()
        yield {"edge": edge_files, "edge_process": edge, "mailbox": mailbox_files, "mailbox_process": mailbox}
    finally:
        mailbox.kill()
        edge.kill()
        dns.terminate()
        dns.wait(5)


@pytest.fixture(scope="module")
def edge(site: dict[str, object]) -> NodeFiles:
    return site["edge"]  # type: ignore[return-value]


def probe_from_caller(files: NodeFiles) -> tuple[int, dict]:  # type: ignore[type-arg]
    result = lab.in_ns("caller", str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists()
                       else "python3", "-m", "edge.node.cli", "probe", "--config", str(files.path), "--edge",
                       lab.EDGE_OUT, "--secret-file", str(files.path.parent / "secret"), "--ca",
                       str(files.certs_dir / "ca.crt"), "--timeout", "1.5", "--json", check=False)
    assert result.stdout.strip(), result.stderr[-3000:]
    return result.returncode, json.loads(result.stdout)


def test_probe_from_behind_nat_traverses(edge: NodeFiles) -> None:
    code, report = probe_from_caller(edge)
    steps = {step["name"]: step for step in report["steps"]}
    assert code == 0 and report["media_ok"], report
    assert steps["STUN over UDP"]["detail"].startswith(f"reflexive {lab.CNAT_OUT}:")  # seen through the NAT
    assert steps["TURN allocation"]["detail"].startswith(f"relayed {lab.EDGE_OUT}:")


def test_probe_names_a_blocked_turn_port(nat_lab: Lab, edge: NodeFiles) -> None:
    unblock = nat_lab.block("cnat", f"ip daddr {lab.EDGE_OUT} udp dport 3478 counter drop")
    try:
        code, report = probe_from_caller(edge)
    finally:
        unblock()
    steps = {step["name"]: step for step in report["steps"]}
    assert code == 1 and not report["media_ok"]
    assert "UDP port blocked" in steps["STUN over UDP"]["reason"]
    assert steps["STUN over TCP"]["ok"]  # only UDP was blocked


def test_the_lab_is_isolated(nat_lab: Lab) -> None:
    # the caller cannot reach the mailbox's private address; the firewall publishes SIP only
    ping = lab.in_ns("caller", "ping", "-c", "1", "-W", "1", lab.MAILBOX, check=False)
    assert ping.returncode != 0


def call_from_caller(seconds: float = 7.0) -> dict:  # type: ignore[type-arg]
    python = str(ROOT / ".venv/bin/python") if (ROOT / ".venv/bin/python").exists() else sys.executable
    result = lab.in_ns("caller", python, "-m", "tests.e2e.nat_caller", lab.FIREWALL_OUT, lab.EDGE_OUT, "3478",
                       SECRET, "1004", str(seconds), check=False)
    assert result.stdout.strip(), result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def messages(mailbox: NodeFiles) -> list[object]:
    from um.worker.store import VoicemailStore

    return VoicemailStore(mailbox.path.parent / "state").messages("1004")


def test_voicemail_across_the_nat_through_the_edge(nat_lab: Lab, site: dict[str, object]) -> None:
    mailbox: NodeFiles = site["mailbox"]  # type: ignore[assignment]
    forwarded_before = nat_lab.counter("fw", "umlab_fw", "udp_forwarded")
    result = call_from_caller()
    assert result["status"] == 200, result
    assert result["candidate"] == "relay" and result["received"] >= 50  # greeting and tone came back
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not messages(mailbox):
        time.sleep(0.1)
    log = site["mailbox_process"].stderr()  # type: ignore[union-attr]
    assert len(messages(mailbox)) == 1, log[-4000:]
    [message] = messages(mailbox)
    from um.worker.store import VoicemailStore

    stored = VoicemailStore(mailbox.path.parent / "state").audio(message).data
    sent = bytes.fromhex(result["sent"])
    offset = sent.find(stored[:1600])
    assert offset >= 0 and stored == sent[offset:offset + len(stored)]  # bit-exact G.711
    # No RTP crossed the firewall: the worker's media went to the edge's inside leg, and on to the caller.
    assert nat_lab.counter("fw", "umlab_fw", "udp_forwarded") == forwarded_before
    assert "media ice" in log


def test_without_the_edge_the_call_gets_no_media(nat_lab: Lab, site: dict[str, object]) -> None:
    mailbox: NodeFiles = site["mailbox"]  # type: ignore[assignment]
    edge: ServeProcess = site["edge_process"]  # type: ignore[assignment]
    stored_before = len(messages(mailbox))
    assert edge.stop(signal.SIGINT) == 0  # at once: no drain
    result = call_from_caller(seconds=1.0)
    assert result["status"] == 503 or result["received"] == 0, result  # refused cleanly, no media
    assert len(messages(mailbox)) == stored_before
    log = site["mailbox_process"].stderr()  # type: ignore[union-attr]
    assert "media setup failed, call refused with 503" in log and "edge" in log.split("media setup failed")[-1]
