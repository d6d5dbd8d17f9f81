"""`umedge ports` and `umedge firewall`: the seed's table and rules for exactly the listeners."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.node.config import load
from edge.node.firewall import SEED_RULES, render
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


def _rules(nft: str) -> list[str]:
    return [line for line in nft.splitlines() if line.startswith("add rule inet filter umedge_inbound")]


def test_firewall_rules_name_the_seed_rules_for_exactly_the_listeners(tmp_path: Path) -> None:
    path = _config(tmp_path, '[node]\nroles = ["callrouter", "worker"]\n[callrouter]\nstartup_mode = "tls"\n')
    nft = umedge("firewall", "--config", str(path), "--format", "nft").stdout
    rules = _rules(nft)
    # 5061 under both call router names; 5065/5067/5066/5068 under both worker names; the RTP range
    assert len(rules) == 2 * 1 + 2 * 4 + 1
    assert 'ip saddr { 127.0.0.1 } tcp dport 5061 counter accept comment "UMCallRouter (TCP-In)"' in nft
    assert 'tcp dport 5061 counter accept comment "UMCallRouter (GFW) (TCP-In)"' in nft
    assert "tcp dport 5060 " not in nft
    assert 'udp dport 1024-65535 counter accept comment "UMWorkerProcess (RTP-UDP-In)"' in nft
    assert "AVEdge" not in nft and "UMWeb" not in nft
    # The roles this node lacks still name their seed rules, as comments that open nothing.
    assert "# UMService (TCP-In): the mailbox role is not enabled on this node" in nft
    assert "# UMWorkerProcess - RPC (TCP-In):" in nft and "web role is not enabled" in nft
    assert not [rule for rule in rules if "UMService" in rule or "RPC" in rule]


def test_every_seed_rule_name_in_every_format() -> None:
    """The seed's eight inbound UM rules, each in the output, whatever it opens on this node."""
    assert SEED_RULES == ("SESWorker (GFW) (TCP-In)", "UMCallRouter (GFW) (TCP-In)", "UMCallRouter (TCP-In)",
                          "UMService (GFW) (TCP-In)", "UMService (TCP-In)", "UMWorkerProcess - RPC (TCP-In)",
                          "UMWorkerProcess (GFW) (TCP-In)", "UMWorkerProcess (TCP-In)")
    nft = umedge("firewall", "--format", "nft").stdout
    for name in SEED_RULES:
        assert name in nft, name
    rules = _rules(nft)
    for name in SEED_RULES[1:]:  # all but SESWorker open ports with the default roles (all)
        assert any(rule.endswith(f'comment "{name}"') for rule in rules), name
    assert "# SESWorker (GFW) (TCP-In): Exchange's speech engine service worker" in nft
    assert not [rule for rule in rules if "SESWorker" in rule]
    # The GFW twins cover the same ports as the plain rules; the RPC rule is the web port (UM web services).
    assert 'tcp dport 5060 counter accept comment "UMCallRouter (GFW) (TCP-In)"' in nft
    assert 'tcp dport 5063 counter accept comment "UMService (GFW) (TCP-In)"' in nft
    assert 'tcp dport 5068 counter accept comment "UMWorkerProcess (GFW) (TCP-In)"' in nft
    assert 'tcp dport 8080 counter accept comment "UMWorkerProcess - RPC (TCP-In)"' in nft
    # umedge's own rules stay.
    for own in ("AVEdgeTURN (UDP-In)", "AVEdgeTURN (TCP-In)", "AVEdgeTURN-TLS (TCP-In)", "AVEdgeRelay (UDP-In)",
                "AVAuthMRAS (TCP-In)", "AVAuthHTTPS (TCP-In)", "UMWeb (TCP-In)", "UMWorkerProcess (RTP-UDP-In)"):
        assert f'comment "{own}"' in nft, own
    config = load()
    for fmt in ("iptables", "netsh"):
        text = render(config, fmt)
        for name in SEED_RULES:
            assert name in text, (fmt, name)
    assert 'REM SESWorker (GFW) (TCP-In):' in render(config, "netsh")


SOURCES = """
[callrouter]
gateways = [{ address = "192.0.2.10" }, { address = "198.51.100.0/24" }, { address = "2001:db8::/64" }]
[mailbox]
call_routers = ["203.0.113.5", "203.0.113.6", "10.1.0.0/16"]
"""


def test_sources_are_the_gateways_and_the_call_routers(tmp_path: Path) -> None:
    config = load(_config(tmp_path, '[node]\nlisten_address = "::"\n' + SOURCES))
    nft = render(config, "nft")
    gateways = "ip saddr { 192.0.2.10, 198.51.100.0/24 } "
    assert f'{gateways}tcp dport 5060 counter accept comment "UMCallRouter (TCP-In)"' in nft
    assert f'{gateways}tcp dport 5061 counter accept comment "UMCallRouter (GFW) (TCP-In)"' in nft
    assert 'ip6 saddr { 2001:db8::/64 } tcp dport 5060 counter accept comment "UMCallRouter (TCP-In)"' in nft
    routers = "ip saddr { 10.1.0.0/16, 203.0.113.5, 203.0.113.6 } "  # merged and sorted for nft's sets
    assert f'{routers}tcp dport 5062 counter accept comment "UMService (TCP-In)"' in nft
    assert f'{routers}tcp dport 5063 counter accept comment "UMService (GFW) (TCP-In)"' in nft
    assert "ip6 saddr { 2001:db8::/64 } tcp dport 5062" not in nft  # no IPv6 call router
    # The worker: the call routers plus the gateways, which follow the call router's 302 to it.
    worker = "ip saddr { 10.1.0.0/16, 192.0.2.10, 198.51.100.0/24, 203.0.113.5, 203.0.113.6 } "
    for port in (5065, 5066, 5067, 5068):
        assert f'{worker}tcp dport {port} counter accept comment "UMWorkerProcess (TCP-In)"' in nft
        assert f'ip6 saddr {{ 2001:db8::/64 }} tcp dport {port} counter accept comment "UMWorkerProcess' in nft
    # Every SIP rule restricts its source; the edge, web and RTP rules do not (as before).
    for rule in _rules(nft):
        if "UMCallRouter" in rule or "UMService" in rule or "UMWorkerProcess (" in rule and "RTP" not in rule:
            assert " saddr " in rule, rule
        else:
            assert " saddr " not in rule, rule
    ipt = render(config, "iptables")
    assert ('iptables -A UMEDGE-IN -s 192.0.2.10,198.51.100.0/24 -p tcp --dport 5060 '
            '-m comment --comment "UMCallRouter (TCP-In)" -j ACCEPT') in ipt
    assert ('ip6tables -A UMEDGE-IN -s 2001:db8::/64 -p tcp --dport 5065 '
            '-m comment --comment "UMWorkerProcess (TCP-In)" -j ACCEPT') in ipt
    assert "ip6tables -A UMEDGE-IN -s 10.1.0.0/16" not in ipt
    assert subprocess.run(["sh", "-n"], input=ipt, text=True).returncode == 0
    netsh = render(config, "netsh")
    assert ('name="UMService (TCP-In)" dir=in action=allow protocol=TCP localport=5062 '
            'remoteip=10.1.0.0/16,203.0.113.5,203.0.113.6') in netsh
    assert ('name="UMCallRouter (TCP-In)" dir=in action=allow protocol=TCP localport=5061 '
            'remoteip=192.0.2.10,198.51.100.0/24,2001:db8::/64') in netsh


def test_fqdn_gateway_leaves_the_port_open_with_a_comment(tmp_path: Path) -> None:
    config = load(_config(tmp_path, '[callrouter]\ngateways = [{ address = "192.0.2.10" }, '
                                    '{ address = "gw1.example.test" }]\n'))
    nft = render(config, "nft")
    assert 'ip daddr 127.0.0.1 tcp dport 5060 counter accept comment "UMCallRouter (TCP-In)"' in nft
    assert "# UMCallRouter (TCP-In): open to any source: gateway gw1.example.test is given by name" in nft
    assert 'tcp dport 5065 counter accept comment "UMWorkerProcess (TCP-In)"' in nft
    assert not [rule for rule in _rules(nft) if "UMWorkerProcess (TCP-In)" in rule and "saddr" in rule]
    assert 'ip saddr { 127.0.0.1 } tcp dport 5062' in nft  # the call routers are still known
    assert "REM UMCallRouter (TCP-In): open to any source: gateway gw1.example.test" in render(config, "netsh")


def test_worker_without_a_call_router_on_the_node_is_open(tmp_path: Path) -> None:
    config = load(_config(tmp_path, '[node]\nroles = ["mailbox", "worker"]\n' + SOURCES))
    nft = render(config, "nft")
    assert 'ip daddr 127.0.0.1 tcp dport 5065 counter accept comment "UMWorkerProcess (TCP-In)"' in nft
    assert "this node runs no call router, so its config does not know them" in nft
    assert "ip saddr { 10.1.0.0/16, 203.0.113.5, 203.0.113.6 } tcp dport 5062" in nft


def test_media_via_edge_opens_no_rtp_range(tmp_path: Path) -> None:
    config = load(_config(tmp_path, "[worker]\nmedia_via_edge = true\n"))
    nft = render(config, "nft")
    assert not [rule for rule in _rules(nft) if "udp dport 1024-65535" in rule or "RTP" in rule]
    assert "# UMWorkerProcess (RTP-UDP-In): [worker] media_via_edge = true" in nft
    assert "--dport 1024:65535" not in render(config, "iptables")
    assert "localport=1024-65535" not in render(config, "netsh")
    assert 'udp dport 50000-59999 counter accept comment "AVEdgeRelay (UDP-In)"' in nft  # the edge's own stay
    assert 'udp dport 1024-65535 counter accept' in render(load(), "nft")  # direct media: opened


def test_iptables_and_netsh_formats(tmp_path: Path) -> None:
    config = load()
    ipt = render(config, "iptables")
    assert '-A UMEDGE-IN -d 127.0.0.1 -p udp --dport 50000:59999 -m comment --comment "AVEdgeRelay (UDP-In)"' in ipt
    assert "ip6tables -A UMEDGE-IN" not in ipt  # listeners are IPv4-only by default
    assert subprocess.run(["sh", "-n"], input=ipt, text=True).returncode == 0
    netsh = render(config, "netsh")
    assert ('netsh advfirewall firewall add rule name="UMWorkerProcess (TCP-In)" dir=in action=allow '
            'protocol=TCP localport=5065 localip=127.0.0.1 remoteip=127.0.0.1') in netsh
    assert 'name="UMService (TCP-In)"' in netsh and "localport=1024-65535" in netsh


def test_wildcard_listeners_match_any_destination(tmp_path: Path) -> None:
    config = load(_config(tmp_path, '[node]\nlisten_address = "::"\n[edge]\nlisten_address = "0.0.0.0"\n'))
    nft = render(config, "nft")
    assert 'add rule inet filter umedge_inbound ip saddr { 127.0.0.1 } tcp dport 5060 counter accept' in nft
    assert 'add rule inet filter umedge_inbound tcp dport 3478 counter accept' in nft
    ipt = render(config, "iptables")
    assert "iptables -A UMEDGE-IN -s 127.0.0.1 -p tcp --dport 5060" in ipt
    assert "ip6tables -A UMEDGE-IN -p tcp --dport 3478" in ipt
    assert "ip6tables -A UMEDGE-IN -s 127.0.0.1" not in ipt


def test_firewall_unknown_format() -> None:
    result = umedge("firewall", "--format", "pf")
    assert result.returncode == 2 and "invalid choice: 'pf'" in result.stderr


NFT_CONFIGS = {
    "default": "",
    "sources": '[node]\nlisten_address = "::"\n' + SOURCES,
    "fqdn-and-media-via-edge": ('[callrouter]\ngateways = [{ address = "gw1.example.test" }]\n'
                                '[worker]\nmedia_via_edge = true\n'),
    "ipv6-call-router-only": '[mailbox]\ncall_routers = ["::1"]\n',
}


@pytest.mark.skipif(not shutil.which("nft") and not REQUIRE_TOOLS, reason="nftables not installed")
@pytest.mark.skipif(os.geteuid() != 0 and not REQUIRE_TOOLS, reason="nft -c needs root (netlink)")
@pytest.mark.parametrize("name", sorted(NFT_CONFIGS))
def test_nft_accepts_the_rules(tmp_path: Path, name: str) -> None:
    path = _config(tmp_path, NFT_CONFIGS[name])
    result = umedge("firewall", "--config", str(path), "--format", "nft")
    assert result.returncode == 0, result.stderr
    rules = tmp_path / "rules.nft"
    rules.write_text(result.stdout)
    check = subprocess.run(["nft", "-c", "-f", str(rules)], text=True, capture_output=True)
    assert check.returncode == 0, check.stderr
    for seed in SEED_RULES:
        assert seed in result.stdout
