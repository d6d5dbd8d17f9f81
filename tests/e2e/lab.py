"""A NAT lab of network namespaces: mailbox behind a firewall, a dual-homed edge, a caller behind NAT.

    caller 203.0.113.10 --[cnat: masquerade, no unsolicited inbound]-- 198.51.100.30
                                                                             |  outside 198.51.100.0/24
    edge 198.51.100.20 / 192.0.2.20 (TURN relay, token service) ------------+---- fw 198.51.100.1
                                |  internal 192.0.2.0/24                            |
    mailbox 192.0.2.10 ---------+------------------------------------------ fw 192.0.2.1
      (call router, UM service, worker; default route via the firewall)
      fw: masquerades outbound, drops unsolicited inbound except SIP published to the mailbox (DNAT)

Documentation address ranges only, inside namespaces this lab creates and
always deletes (names start with "umlab-"), so nothing touches the host's
network and nothing is left behind, even when a test fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

PREFIX = "umlab-"
HOSTS = ("sw", "mbx", "fw", "edge", "cnat", "caller")
SIP_PORTS = "5060, 5061, 5065-5068"  # the call router and the worker slots, published by the firewall

INTERNAL, OUTSIDE, CALLER_NET = "192.0.2", "198.51.100", "203.0.113"
MAILBOX, FIREWALL_IN, EDGE_IN = f"{INTERNAL}.10", f"{INTERNAL}.1", f"{INTERNAL}.20"
FIREWALL_OUT, EDGE_OUT, CNAT_OUT = f"{OUTSIDE}.1", f"{OUTSIDE}.20", f"{OUTSIDE}.30"
CALLER, CNAT_IN = f"{CALLER_NET}.10", f"{CALLER_NET}.1"


def ns(host: str) -> str:
    return PREFIX + host


def run(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, input=input, timeout=30)


def in_ns(host: str, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", ns(host), *args, check=check, input=input)


def leftovers() -> list[str]:
    names = run("ip", "netns", "list", check=False).stdout.split()
    return [name for name in names if name.startswith(PREFIX)]


NETNS_ETC = Path("/etc/netns")  # `ip netns exec NS` bind-mounts /etc/netns/NS/* over /etc/*


def resolver(host: str, nameserver: str) -> None:
    """Give `host`'s namespace its own /etc/resolv.conf pointing at the lab's DNS server."""
    directory = NETNS_ETC / ns(host)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "resolv.conf").write_text(f"nameserver {nameserver}\noptions timeout:1 attempts:2\n")


def destroy() -> None:
    """Delete every namespace of the lab (their veths, routes and nft tables go with them)."""
    for directory in NETNS_ETC.glob(PREFIX + "*") if NETNS_ETC.exists() else []:
        shutil.rmtree(directory, ignore_errors=True)
    for name in leftovers():
        run("ip", "netns", "pids", name, check=False)
        for pid in run("ip", "netns", "pids", name, check=False).stdout.split():
            run("kill", "-9", pid, check=False)
        run("ip", "netns", "del", name, check=False)


FIREWALL_RULES = f"""
table inet umlab_fw {{
  counter udp_forwarded {{}}
  counter udp_to_or_from_edge {{}}
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "fw-out" ip daddr {FIREWALL_OUT} tcp dport {{ {SIP_PORTS} }} dnat ip to {MAILBOX}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "fw-out" ip saddr {INTERNAL}.0/24 masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    meta l4proto udp udp sport != 53 udp dport != 53 counter name udp_forwarded
    meta l4proto udp ip saddr {{ {EDGE_IN}, {EDGE_OUT} }} counter name udp_to_or_from_edge
    meta l4proto udp ip daddr {{ {EDGE_IN}, {EDGE_OUT} }} counter name udp_to_or_from_edge
    ct state established,related accept
    iifname "fw-in" oifname "fw-out" accept
    ct status dnat accept
  }}
}}
"""

CALLER_NAT_RULES = f"""
table inet umlab_cnat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "cnat-out" ip saddr {CALLER_NET}.0/24 masquerade
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    ct state established,related accept
    iifname "cnat-in" oifname "cnat-out" accept
  }}
}}
"""


@dataclass
class Lab:
    """Build with Lab().build(); always call destroy() (the fixture does)."""

    def build(self) -> Lab:
        destroy()
        for host in HOSTS:
            run("ip", "netns", "add", ns(host))
            in_ns(host, "ip", "link", "set", "lo", "up")
        for bridge in ("br-in", "br-out"):
            in_ns("sw", "ip", "link", "add", bridge, "type", "bridge")
            in_ns("sw", "ip", "link", "set", bridge, "up")
        self._attach("mbx", "mbx0", "br-in", MAILBOX)
        self._attach("fw", "fw-in", "br-in", FIREWALL_IN)
        self._attach("edge", "edge-in", "br-in", EDGE_IN)
        self._attach("fw", "fw-out", "br-out", FIREWALL_OUT)
        self._attach("edge", "edge-out", "br-out", EDGE_OUT)
        self._attach("cnat", "cnat-out", "br-out", CNAT_OUT)
        self._pair("cnat", "cnat-in", CNAT_IN, "caller", "caller0", CALLER)
        in_ns("mbx", "ip", "route", "add", "default", "via", FIREWALL_IN)
        in_ns("caller", "ip", "route", "add", "default", "via", CNAT_IN)
        for router in ("fw", "cnat"):
            in_ns(router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        in_ns("fw", "nft", "-f", "-", input=FIREWALL_RULES)
        in_ns("cnat", "nft", "-f", "-", input=CALLER_NAT_RULES)
        return self

    def _attach(self, host: str, device: str, bridge: str, address: str) -> None:
        peer = f"sw-{device}"[:15]
        in_ns(host, "ip", "link", "add", device, "type", "veth", "peer", "name", peer, "netns", ns("sw"))
        in_ns("sw", "ip", "link", "set", peer, "master", bridge)
        in_ns("sw", "ip", "link", "set", peer, "up")
        in_ns(host, "ip", "addr", "add", f"{address}/24", "dev", device)
        in_ns(host, "ip", "link", "set", device, "up")

    def _pair(self, left: str, left_dev: str, left_addr: str, right: str, right_dev: str, right_addr: str) -> None:
        in_ns(left, "ip", "link", "add", left_dev, "type", "veth", "peer", "name", right_dev, "netns", ns(right))
        in_ns(left, "ip", "addr", "add", f"{left_addr}/24", "dev", left_dev)
        in_ns(left, "ip", "link", "set", left_dev, "up")
        in_ns(right, "ip", "addr", "add", f"{right_addr}/24", "dev", right_dev)
        in_ns(right, "ip", "link", "set", right_dev, "up")

    def counter(self, host: str, table: str, name: str) -> int:
        listing = json.loads(in_ns(host, "nft", "-j", "list", "counter", "inet", table, name).stdout)
        for item in listing["nftables"]:
            if "counter" in item:
                return int(item["counter"]["packets"])
        raise AssertionError(f"no counter {name} in {host}")

    def block(self, host: str, rule: str) -> Callable[[], None]:
        """Insert `rule` at the top of `host`'s forward chain; returns what removes it again."""
        table = "umlab_cnat" if host == "cnat" else "umlab_fw"
        echoed = in_ns(host, "nft", "--echo", "--handle", "insert", "rule", "inet", table, "forward",
                       *rule.split()).stdout
        handle = echoed.rsplit("# handle", 1)[1].split()[0]
        return lambda: in_ns(host, "nft", "delete", "rule", "inet", table, "forward", "handle", handle)

    def popen(self, host: str, args: Sequence[str], **kwargs):  # type: ignore[no-untyped-def]
        return subprocess.Popen(["ip", "netns", "exec", ns(host), *args], **kwargs)
