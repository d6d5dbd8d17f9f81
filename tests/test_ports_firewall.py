"""`umedge ports` and `umedge firewall`: the seed's table and rules for exactly the listeners."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.node.config import load
from edge.node.firewall import render
from edge.node.listeners import listeners
from tests.conftest import REQUIRE_TOOLS, umedge


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_ports_table_default_matches_the_seed() -> None:
    result = umedge("ports")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["ROLE", "SERVICE", "PROTOCOL"]
    text = result.stdout
    for port in ("5060", "5061", "5062", "5063", "5065", "5066", "5067", "5068", "1024-65535",
                 "3478", "5349", "50000-59999", "5064"):
        assert f" {port} " in text
    assert "yes (Set-UMCallRouterSettings)" in text and "no (fixed in Exchange)" in text
    assert "yes (msexchangeum.config)" in text


def test_ports_json() -> None:
    rows = json.loads(umedge("ports", "--json").stdout)
    by_port = {(r["tcp_port"], r["udp_port"]): r for r in rows}
    assert by_port[("5061", None)]["secured"] == "MTLS"
    assert by_port[("5060", None)]["changeable"].startswith("yes")
    assert by_port[(None, "1024-65535")]["protocol"] == "RTP/SRTP"
    assert by_port[(None, "3478")]["transport"] == "udp"
    assert all(r["rule"] for r in rows)


@pytest.mark.parametrize("mode, tcp, tls", [
    ("tcp", {5065, 5067}, set()),
    ("tls", set(), {5065, 5067}),
    ("dual", {5065, 5067}, {5066, 5068}),
])
def test_worker_ports_follow_the_startup_mode(tmp_path: Path, mode: str, tcp: set[int], tls: set[int]) -> None:
    config = load(_config(tmp_path, f'[worker]\nstartup_mode = "{mode}"\n'))
    sip = [r for r in listeners(config) if r.role == "worker" and r.protocol == "SIP"]
    assert {r.port for r in sip if r.transport == "tcp"} == tcp
    assert {r.port for r in sip if r.transport == "tls"} == tls
    assert all(r.secured == "MTLS" for r in sip if r.transport == "tls")


def test_callrouter_tcp_mode_drops_the_tls_port(tmp_path: Path) -> None:
    config = load(_config(tmp_path, '[callrouter]\nstartup_mode = "tcp"\n'))
    ports = {r.port for r in listeners(config) if r.role == "callrouter"}
    assert ports == {5060}


def test_firewall_rules_name_the_seed_rules_for_exactly_the_listeners(tmp_path: Path) -> None:
    path = _config(tmp_path, '[node]\nroles = ["callrouter", "worker"]\n[callrouter]\nstartup_mode = "tls"\n')
    nft = umedge("firewall", "--config", str(path), "--format", "nft").stdout
    rules = [line for line in nft.splitlines() if line.startswith("add rule inet filter umedge_inbound")]
    assert len(rules) == 1 + 4 + 1  # 5061; 5065/5067/5066/5068; the RTP range
    assert 'tcp dport 5061 counter accept comment "UMCallRouter (TCP-In)"' in nft
    assert "tcp dport 5060 " not in nft
    assert 'udp dport 1024-65535 counter accept comment "UMWorkerProcess (RTP-UDP-In)"' in nft
    assert "UMService" not in nft and "AVEdge" not in nft


def test_iptables_and_netsh_formats(tmp_path: Path) -> None:
    rows = listeners(load())
    ipt = render(rows, "n", "iptables")
    assert '-A UMEDGE-IN -d 127.0.0.1 -p udp --dport 50000:59999 -m comment --comment "AVEdgeRelay (UDP-In)"' in ipt
    assert "ip6tables -A UMEDGE-IN" not in ipt  # listeners are IPv4-only by default
    assert subprocess.run(["sh", "-n"], input=ipt, text=True).returncode == 0
    netsh = render(rows, "n", "netsh")
    assert ('netsh advfirewall firewall add rule name="UMWorkerProcess (TCP-In)" dir=in action=allow '
            'protocol=TCP localport=5065 localip=127.0.0.1') in netsh
    assert 'name="UMService (TCP-In)"' in netsh and "localport=1024-65535" in netsh


def test_wildcard_listeners_match_any_destination(tmp_path: Path) -> None:
    config = load(_config(tmp_path, '[node]\nlisten_address = "::"\n[edge]\nlisten_address = "0.0.0.0"\n'))
    nft = render(listeners(config), "n", "nft")
    assert 'add rule inet filter umedge_inbound tcp dport 5060 counter accept' in nft
    ipt = render(listeners(config), "n", "iptables")
    assert "ip6tables -A UMEDGE-IN -p tcp --dport 5060" in ipt


def test_firewall_unknown_format() -> None:
    result = umedge("firewall", "--format", "pf")
    assert result.returncode == 2 and "invalid choice: 'pf'" in result.stderr


@pytest.mark.skipif(not shutil.which("nft") and not REQUIRE_TOOLS, reason="nftables not installed")
def test_nft_accepts_the_rules() -> None:
    result = umedge("firewall", "--format", "nft")
    check = subprocess.run(["nft", "-c", "-f", "-"], input=result.stdout, text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
