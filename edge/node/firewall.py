"""Inbound firewall rules for exactly the configured listeners, in three dialects.

Rule names follow the seed's Windows firewall rules (UMCallRouter (TCP-In),
UMService (TCP-In), UMWorkerProcess (TCP-In), ...). The nft and iptables
output keeps its rules in a chain of its own that it flushes first, so
applying it again replaces rather than duplicates them.
"""

from __future__ import annotations

import ipaddress

from edge.node.listeners import Listener

FORMATS = ("nft", "iptables", "netsh")
NFT_CHAIN = "umedge_inbound"
IPT_CHAIN = "UMEDGE-IN"


def _family(address: str) -> int | None:
    """4 or 6 for a specific address; None for a wildcard bind."""
    ip = ipaddress.ip_address(address)
    return None if ip.is_unspecified else ip.version


def _nft_ports(row: Listener) -> str:
    return f"{row.port}-{row.port_max}" if row.is_range else str(row.port)


def nft(rows: list[Listener], node: str) -> str:
    lines = [
        f"# umedge inbound rules for node {node} (umedge firewall --format nft)",
        "# Apply with: nft -f FILE. Rules live in chain inet filter " + NFT_CHAIN + ", which is",
        "# flushed first; the jump from the input chain is added by the last line.",
        "add table inet filter",
        "add chain inet filter input { type filter hook input priority filter; }",
        f"add chain inet filter {NFT_CHAIN}",
        f"flush chain inet filter {NFT_CHAIN}",
    ]
    for row in rows:
        family = _family(row.address)
        match = f"ip{'6' if family == 6 else ''} daddr {row.address} " if family else ""
        lines.append(f'add rule inet filter {NFT_CHAIN} {match}{row.l4} dport {_nft_ports(row)} '
                     f'counter accept comment "{row.rule}"')
    lines.append(f"add rule inet filter input jump {NFT_CHAIN}")
    return "\n".join(lines) + "\n"


def iptables(rows: list[Listener], node: str) -> str:
    lines = [
        "#!/bin/sh",
        f"# umedge inbound rules for node {node} (umedge firewall --format iptables)",
        "set -e",
    ]
    for tool, version in (("iptables", 4), ("ip6tables", 6)):
        lines += [f"{tool} -N {IPT_CHAIN} 2>/dev/null || true", f"{tool} -F {IPT_CHAIN}"]
        for row in rows:
            family = _family(row.address)
            if family not in (None, version):
                continue
            dest = f" -d {row.address}" if family else ""
            ports = f"{row.port}:{row.port_max}" if row.is_range else str(row.port)
            lines.append(f'{tool} -A {IPT_CHAIN}{dest} -p {row.l4} --dport {ports} '
                         f'-m comment --comment "{row.rule}" -j ACCEPT')
        lines.append(f"{tool} -C INPUT -j {IPT_CHAIN} 2>/dev/null || {tool} -A INPUT -j {IPT_CHAIN}")
    return "\n".join(lines) + "\n"


def netsh(rows: list[Listener], node: str) -> str:
    lines = [f"REM umedge inbound rules for node {node} (umedge firewall --format netsh)"]
    for row in rows:
        ports = f"{row.port}-{row.port_max}" if row.is_range else str(row.port)
        local_ip = f" localip={row.address}" if _family(row.address) else ""
        lines.append(f'netsh advfirewall firewall add rule name="{row.rule}" dir=in action=allow '
                     f'protocol={row.l4.upper()} localport={ports}{local_ip}')
    return "\r\n".join(lines) + "\r\n"


def render(rows: list[Listener], node: str, fmt: str) -> str:
    renderers = {"nft": nft, "iptables": iptables, "netsh": netsh}
    if fmt not in renderers:
        raise ValueError(f"unknown firewall format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return renderers[fmt](rows, node)
