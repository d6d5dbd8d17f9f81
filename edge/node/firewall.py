"""Inbound firewall rules for exactly the configured listeners, in three dialects.

Rule names follow the seed: the eight inbound rules Exchange 2013 setup adds
for UM come first, each one present in every output (as rules, or as a
comment saying why it opens nothing on this node), then umedge's own
(AVEdgeTURN (UDP-In) and the other edge rules, UMWeb (TCP-In), the worker's
RTP range). How the eight map onto umedge's fixed listeners:

- UMCallRouter (GFW) (TCP-In), UMCallRouter (TCP-In): the call router's SIP
  ports (5060/5061). Exchange's "(GFW)" rules are its generic firewall rules,
  which open the process for any TCP port; umedge's processes listen on fixed
  ports only, so a GFW rule covers the same ports as its plain twin (in
  Exchange the two overlap as well).
- UMService (GFW) (TCP-In), UMService (TCP-In): the mailbox UM service
  (5062/5063).
- UMWorkerProcess (GFW) (TCP-In), UMWorkerProcess (TCP-In): the worker slots'
  SIP ports (5065-5068).
- UMWorkerProcess - RPC (TCP-In): Exchange reaches the worker over RPC for
  play on phone and PIN resets; umedge serves those as UM web services on
  the web port, so the rule opens [web].http_port when the node runs both the
  worker and the web role (the same port as UMWeb (TCP-In)).
- SESWorker (GFW) (TCP-In): Exchange's speech engine service worker. umedge
  runs its speech engine (prompts, DTMF, recording) inside the UM worker
  process, which has no socket for it: the name appears as a comment only.

Sources are restricted where the config knows them: the call router's ports
to the [callrouter] gateways' addresses and CIDRs (a gateway given as an FQDN
cannot be matched by a firewall, so then the port stays open to any source,
with a comment; the call router still checks every caller); the UM
service's ports to [mailbox] call_routers; the worker's SIP ports to the call
routers plus the gateways, which follow the call router's 302 to the worker
(open to any source when the node runs no call router, whose gateways the
config would then not know, or when a gateway is an FQDN). Everything else
accepts any source. With [worker] media_via_edge = true no inbound RTP
reaches the worker (its media comes back from the edge's TURN server as
answers to its own packets), so the RTP range is not opened.

The nft and iptables output keeps its rules in a chain of its own that it
flushes first, so applying it again replaces rather than duplicates them.
"""

from __future__ import annotations

import ipaddress
import textwrap
from dataclasses import dataclass

from edge.node.listeners import Listener, listeners
from edge.node.schema import Config

FORMATS = ("nft", "iptables", "netsh")
NFT_CHAIN = "umedge_inbound"
IPT_CHAIN = "UMEDGE-IN"

# The seed's inbound rules for UM, in its order (the German edition says "TCP eingehend" for "TCP-In"
# and writes "UMWorkerProcess – RPC" with an en dash).
SES_WORKER_GFW = "SESWorker (GFW) (TCP-In)"
CALLROUTER_GFW = "UMCallRouter (GFW) (TCP-In)"
CALLROUTER = "UMCallRouter (TCP-In)"
SERVICE_GFW = "UMService (GFW) (TCP-In)"
SERVICE = "UMService (TCP-In)"
WORKER_RPC = "UMWorkerProcess - RPC (TCP-In)"
WORKER_GFW = "UMWorkerProcess (GFW) (TCP-In)"
WORKER = "UMWorkerProcess (TCP-In)"
SEED_RULES = (SES_WORKER_GFW, CALLROUTER_GFW, CALLROUTER, SERVICE_GFW, SERVICE, WORKER_RPC, WORKER_GFW, WORKER)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RuleSet:
    """One named rule: accept the rows' ports from `sources` (empty: from anywhere).

    No rows: the name is emitted as a comment only, `note` saying why it opens nothing here."""

    name: str
    rows: tuple[Listener, ...]
    sources: tuple[IPNetwork, ...] = ()
    note: str = ""


def _collapse(networks: list[IPNetwork]) -> tuple[IPNetwork, ...]:
    """Merged and sorted, IPv4 first: nft refuses overlapping intervals in a set."""
    v4 = [n for n in networks if isinstance(n, ipaddress.IPv4Network)]
    v6 = [n for n in networks if isinstance(n, ipaddress.IPv6Network)]
    return (*ipaddress.collapse_addresses(v4), *ipaddress.collapse_addresses(v6))


def _addr(network: IPNetwork) -> str:
    """A host network as its address (192.0.2.10), any other as a CIDR."""
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def _listed(networks: tuple[IPNetwork, ...], separator: str = ", ") -> str:
    return separator.join(map(_addr, networks))


def _gateways(config: Config) -> tuple[list[IPNetwork], list[str]]:
    """The [callrouter] gateways as networks, and those given by name."""
    networks, names = [], []
    for gateway in config.callrouter.gateways:
        network = gateway.network
        if network is None:
            names.append(gateway.address)
        else:
            networks.append(network)
    return networks, names


def _call_routers(config: Config) -> list[IPNetwork]:
    return [ipaddress.ip_network(n, strict=False) for n in config.mailbox.call_routers]


def _callrouter_sources(config: Config) -> tuple[tuple[IPNetwork, ...], str]:
    networks, names = _gateways(config)
    if names:
        return (), (f"open to any source: gateway {', '.join(names)} is given by name, which a firewall "
                    "cannot match (the call router checks every caller: DNS, certificate names)")
    if not networks:
        return (), "open to any source: [callrouter] gateways is empty (the call router refuses every caller)"
    sources = _collapse(networks)
    return sources, f"from the [callrouter] gateways: {_listed(sources)}"


def _service_sources(config: Config) -> tuple[tuple[IPNetwork, ...], str]:
    sources = _collapse(_call_routers(config))
    if not sources:
        return (), "open to any source: [mailbox] call_routers is empty"
    return sources, f"from the pool's call routers ([mailbox] call_routers): {_listed(sources)}"


def _worker_sources(config: Config) -> tuple[tuple[IPNetwork, ...], str]:
    if "callrouter" not in config.node.roles:
        return (), ("open to any source: gateways follow the call router's 302 to the worker, and this "
                    "node runs no call router, so its config does not know them")
    networks, names = _gateways(config)
    if names:
        return (), (f"open to any source: gateway {', '.join(names)} (which follows the call router's 302 "
                    "to the worker) is given by name, which a firewall cannot match")
    sources = _collapse(_call_routers(config) + networks)
    if not sources:
        return (), "open to any source: [mailbox] call_routers and [callrouter] gateways are empty"
    return sources, ("from the call routers and the gateways, which follow the call router's 302 to the "
                     f"worker: {_listed(sources)}")


def _absent(role: str) -> str:
    return f"the {role} role is not enabled on this node: nothing to open"


GFW_NOTE = ("Exchange's generic rule opens the process for any TCP port; umedge's {what} listens on "
            "the fixed ports below only, the same as {twin}")


def plan(config: Config) -> list[RuleSet]:
    """The rules for the config's listeners: the seed's eight first (every name), then umedge's own."""
    rows = listeners(config)
    roles = config.node.roles
    sip = {role: tuple(r for r in rows if r.role == role and r.protocol == "SIP")
           for role in ("callrouter", "mailbox", "worker")}
    seeded: list[RuleSet] = [RuleSet(
        SES_WORKER_GFW, (), note="Exchange's speech engine service worker; umedge runs its speech engine "
        "(prompts, DTMF, recording) inside the UM worker process, with no socket of its own: nothing to "
        f"open (the worker's SIP ports are {WORKER})")]
    for role, what, gfw, plain, sources_of in (
            ("callrouter", "call router", CALLROUTER_GFW, CALLROUTER, _callrouter_sources),
            ("mailbox", "UM service", SERVICE_GFW, SERVICE, _service_sources),
            ("worker", "worker", WORKER_GFW, WORKER, _worker_sources)):
        if role not in roles:
            seeded += [RuleSet(name, (), note=_absent(role))
                       for name in (gfw, plain, *([WORKER_RPC] if role == "worker" else []))]
            continue
        sources, note = sources_of(config)
        seeded += [RuleSet(gfw, sip[role], sources, GFW_NOTE.format(what=what, twin=plain) + "; " + note),
                   RuleSet(plain, sip[role], sources, note)]
        if role == "worker":
            seeded.append(_rpc(rows))
    own: dict[str, RuleSet] = {}
    for row in rows:
        if row.protocol == "SIP" and row.role in sip:
            continue
        if row.role == "worker" and config.worker.media_via_edge:
            own[row.rule] = RuleSet(row.rule, (), note=(
                "[worker] media_via_edge = true: the worker's RTP goes through the edge's TURN relay and "
                "comes back as answers to the worker's own packets (accepted by a base ruleset's "
                "ct state established,related), so no inbound RTP port is opened"))
            continue
        known = own.get(row.rule)
        own[row.rule] = RuleSet(row.rule, (*known.rows, row) if known else (row,))
    return sorted(seeded, key=lambda r: SEED_RULES.index(r.name)) + list(own.values())


def _rpc(rows: list[Listener]) -> RuleSet:
    web = tuple(r for r in rows if r.role == "web")
    if not web:
        return RuleSet(WORKER_RPC, (), note=(
            "Exchange reaches the worker over RPC (play on phone, PIN reset); umedge serves those as UM "
            "web services on the web role's port, and the web role is not enabled on this node: nothing "
            "to open"))
    return RuleSet(WORKER_RPC, web, note=(
        "Exchange reaches the worker over RPC (play on phone, PIN reset); umedge serves those as UM web "
        "services on [web].http_port (the same port as UMWeb (TCP-In))"))


# --- rendering -------------------------------------------------------------------------------------

def _family(address: str) -> int | None:
    """4 or 6 for a specific address; None for a wildcard bind."""
    ip = ipaddress.ip_address(address)
    return None if ip.is_unspecified else ip.version


def _matches(rule: RuleSet, row: Listener) -> list[tuple[int | None, tuple[IPNetwork, ...]]]:
    """(IP version, sources) per rule to emit for `row`: one unrestricted, or one per source family.

    Empty when every source is of the other family than the row's address."""
    family = _family(row.address)
    if not rule.sources:
        return [(family, ())]
    return [(v, nets) for v in (4, 6) if family in (None, v)
            and (nets := tuple(n for n in rule.sources if n.version == v))]


def _comment(prefix: str, rule: RuleSet) -> list[str]:
    if not rule.note:
        return []
    text = f"{rule.name}: {rule.note}" + ("" if rule.rows else " [no rule]")
    return [prefix + line for line in textwrap.wrap(text, 100, subsequent_indent="  ")]


def _unmatched(prefix: str, rule: RuleSet, row: Listener) -> str:
    return (f"{prefix}{rule.name}: no source of the address family of {row.address} "
            f"({row.l4} {row.ports}): nothing opened")


def _ports(row: Listener, separator: str) -> str:
    return f"{row.port}{separator}{row.port_max}" if row.is_range else str(row.port)


def nft(rules: list[RuleSet], node: str) -> str:
    lines = [
        f"# umedge inbound rules for node {node} (umedge firewall --format nft)",
        "# Apply with: nft -f FILE. Rules live in chain inet filter " + NFT_CHAIN + ", which is",
        "# flushed first; the jump from the input chain is added by the last line.",
        "add table inet filter",
        "add chain inet filter input { type filter hook input priority filter; }",
        f"add chain inet filter {NFT_CHAIN}",
        f"flush chain inet filter {NFT_CHAIN}",
    ]
    for rule in rules:
        lines += _comment("# ", rule)
        for row in rule.rows:
            family = _family(row.address)
            matches = _matches(rule, row)
            if not matches:
                lines.append(_unmatched("# ", rule, row))
            for version, sources in matches:
                ip = "ip6" if (version or family) == 6 else "ip"
                match = f"{ip} daddr {row.address} " if family else ""
                if sources:
                    match += f"{ip} saddr {{ {_listed(sources)} }} "
                lines.append(f"add rule inet filter {NFT_CHAIN} {match}{row.l4} dport {_ports(row, '-')} "
                             f'counter accept comment "{rule.name}"')
    lines.append(f"add rule inet filter input jump {NFT_CHAIN}")
    return "\n".join(lines) + "\n"


def iptables(rules: list[RuleSet], node: str) -> str:
    lines = [
        "#!/bin/sh",
        f"# umedge inbound rules for node {node} (umedge firewall --format iptables)",
        "set -e",
    ]
    for tool, version in (("iptables", 4), ("ip6tables", 6)):
        lines += [f"{tool} -N {IPT_CHAIN} 2>/dev/null || true", f"{tool} -F {IPT_CHAIN}"]
        for rule in rules:
            if version == 4:
                lines += _comment("# ", rule)  # once, in the IPv4 half
            for row in rule.rows:
                family = _family(row.address)
                if family not in (None, version):
                    continue
                matches = _matches(rule, row)
                if not matches and version == (family or 4):
                    lines.append(_unmatched("# ", rule, row))
                for match_version, sources in matches:
                    if match_version not in (None, version):
                        continue
                    dest = f" -d {row.address}" if family else ""
                    source = f" -s {_listed(sources, ',')}" if sources else ""
                    lines.append(f'{tool} -A {IPT_CHAIN}{source}{dest} -p {row.l4} --dport {_ports(row, ":")} '
                                 f'-m comment --comment "{rule.name}" -j ACCEPT')
        lines.append(f"{tool} -C INPUT -j {IPT_CHAIN} 2>/dev/null || {tool} -A INPUT -j {IPT_CHAIN}")
    return "\n".join(lines) + "\n"


def netsh(rules: list[RuleSet], node: str) -> str:
    lines = [f"REM umedge inbound rules for node {node} (umedge firewall --format netsh)"]
    for rule in rules:
        lines += _comment("REM ", rule)
        for row in rule.rows:
            sources = tuple(n for _, nets in _matches(rule, row) for n in nets)
            if rule.sources and not sources:
                lines.append(_unmatched("REM ", rule, row))
                continue
            local_ip = f" localip={row.address}" if _family(row.address) else ""
            remote_ip = f" remoteip={_listed(sources, ',')}" if sources else ""
            lines.append(f'netsh advfirewall firewall add rule name="{rule.name}" dir=in action=allow '
                         f'protocol={row.l4.upper()} localport={_ports(row, "-")}{local_ip}{remote_ip}')
    return "\r\n".join(lines) + "\r\n"


def render(config: Config, fmt: str) -> str:
    renderers = {"nft": nft, "iptables": iptables, "netsh": netsh}
    if fmt not in renderers:
        raise ValueError(f"unknown firewall format {fmt!r}; allowed: {', '.join(FORMATS)}")
    return renderers[fmt](plan(config), config.node.name)
