"""What a node listens on, derived from its config: the seed's ports table.

One list feeds `umedge ports`, `umedge firewall`, the start-up table of
`umedge serve`, the status page and the port-collision check, so they can
never disagree.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass

from edge.node.schema import Config

CHANGEABLE_CALLROUTER = "yes (Set-UMCallRouterSettings)"
FIXED_IN_EXCHANGE = "no (fixed in Exchange)"
CHANGEABLE_RTP = "yes (msexchangeum.config)"
EDGE_ONLY = "n/a (A/V Edge)"
UMEDGE_ONLY = "n/a (umedge)"


@dataclass(frozen=True)
class Listener:
    """One row of the ports table: a socket (or a UDP port range) of one role."""

    role: str
    service: str
    protocol: str
    transport: str  # "tcp", "tls" or "udp"
    port: int
    port_max: int | None
    address: str
    secured: str
    changeable: str
    rule: str  # firewall rule name, after the seed's Windows firewall rules
    key: str  # the config key that sets the port

    @property
    def l4(self) -> str:
        """The IP protocol the port lives in (TLS runs over TCP)."""
        return "udp" if self.transport == "udp" else "tcp"

    @property
    def ports(self) -> str:
        return f"{self.port}-{self.port_max}" if self.port_max is not None else str(self.port)

    @property
    def is_range(self) -> bool:
        return self.port_max is not None

    def as_dict(self) -> dict[str, object]:
        row = asdict(self)
        row["tcp_port"] = self.ports if self.l4 == "tcp" else None
        row["udp_port"] = self.ports if self.l4 == "udp" else None
        return row


def _sip_pair(
    role: str, service: str, rule: str, section: str, mode: str,
    tcp_port: int, tls_port: int, address: str, changeable: str,
) -> list[Listener]:
    rows = []
    if mode in ("tcp", "dual"):
        rows.append(Listener(role, service, "SIP", "tcp", tcp_port, None, address, "no",
                             changeable, rule, f"[{section}].sip_tcp_port"))
    if mode in ("tls", "dual"):
        rows.append(Listener(role, service, "SIP", "tls", tls_port, None, address, "MTLS",
                             changeable, rule, f"[{section}].sip_tls_port"))
    return rows


def _worker(config: Config) -> list[Listener]:
    w, address = config.worker, config.node.listen_address
    primary = "tls" if w.startup_mode == "tls" else "tcp"
    rows = []
    for slot, port in enumerate(w.sip_ports, start=1):
        rows.append(Listener("worker", f"UM worker process (slot {slot})", "SIP", primary, port, None,
                             address, "MTLS" if primary == "tls" else "no", FIXED_IN_EXCHANGE,
                             "UMWorkerProcess (TCP-In)", "[worker].sip_ports"))
    if w.startup_mode == "dual":
        for slot, port in enumerate(w.sip_dual_tls_ports, start=1):
            rows.append(Listener("worker", f"UM worker process (slot {slot})", "SIP", "tls", port, None,
                                 address, "MTLS", FIXED_IN_EXCHANGE,
                                 "UMWorkerProcess (TCP-In)", "[worker].sip_dual_tls_ports"))
    rows.append(Listener("worker", "UM worker process", "RTP/SRTP", "udp", w.rtp_port_min,
                         w.rtp_port_max, address, "SRTP on secured dial plans", CHANGEABLE_RTP,
                         "UMWorkerProcess (RTP-UDP-In)", "[worker].rtp_port_min"))
    return rows


def _edge(config: Config) -> list[Listener]:
    e, a = config.edge, config.auth
    address = e.listen_address
    return [
        Listener("edge", "A/V Edge media relay", "STUN/TURN", "udp", e.turn_udp_port, None, address,
                 "no (long-term credentials)", EDGE_ONLY, "AVEdgeTURN (UDP-In)", "[edge].turn_udp_port"),
        Listener("edge", "A/V Edge media relay", "STUN/TURN", "tcp", e.turn_tcp_port, None, address,
                 "no (long-term credentials)", EDGE_ONLY, "AVEdgeTURN (TCP-In)", "[edge].turn_tcp_port"),
        Listener("edge", "A/V Edge media relay", "STUN/TURN", "tls", e.turn_tls_port, None, address,
                 "TLS", EDGE_ONLY, "AVEdgeTURN-TLS (TCP-In)", "[edge].turn_tls_port"),
        Listener("edge", "A/V Edge relay ports", "RTP via TURN", "udp", e.relay_port_min,
                 e.relay_port_max, e.relay_address, "per allocation", EDGE_ONLY,
                 "AVEdgeRelay (UDP-In)", "[edge].relay_port_min"),
        Listener("edge", "A/V authentication (MRAS)", "SIP", "tls", a.mras_tls_port, None, address,
                 "MTLS", EDGE_ONLY, "AVAuthMRAS (TCP-In)", "[auth].mras_tls_port"),
        Listener("edge", "A/V authentication (HTTPS)", "HTTPS", "tls", a.https_port, None, address,
                 "TLS + client cert or API key", EDGE_ONLY, "AVAuthHTTPS (TCP-In)", "[auth].https_port"),
        *_discovery(config),
    ]


def _discovery(config: Config) -> list[Listener]:
    """RFC 5780's three extra STUN sockets, when [edge] alternate_address is set."""
    e = config.edge
    if not e.alternate_address:
        return []
    sockets = ((e.listen_address, e.alternate_port, "[edge].alternate_port"),
               (e.alternate_address, e.turn_udp_port, "[edge].alternate_address"),
               (e.alternate_address, e.alternate_port, "[edge].alternate_port"))
    return [Listener("edge", "STUN behaviour discovery (RFC 5780)", "STUN", "udp", port, None, address,
                     "no (Binding only)", EDGE_ONLY, "AVEdgeSTUN-RFC5780 (UDP-In)", key)
            for address, port, key in sockets]

def listeners(config: Config, roles: tuple[str, ...] | None = None) -> list[Listener]:
    """The ports table for `roles` (default: the config's [node].roles), in seed order."""
    roles = config.node.roles if roles is None else roles
    node_address = config.node.listen_address
    rows: list[Listener] = []
    if "callrouter" in roles:
        c = config.callrouter
        rows += _sip_pair("callrouter", "UM Call Router", "UMCallRouter (TCP-In)", "callrouter",
                          c.startup_mode, c.sip_tcp_port, c.sip_tls_port, node_address,
                          CHANGEABLE_CALLROUTER)
    if "mailbox" in roles:
        m = config.mailbox
        rows += _sip_pair("mailbox", "Mailbox UM service", "UMService (TCP-In)", "mailbox",
                          m.startup_mode, m.sip_tcp_port, m.sip_tls_port, node_address,
                          FIXED_IN_EXCHANGE)
    if "worker" in roles:
        rows += _worker(config)
    if "edge" in roles:
        rows += _edge(config)
    if "web" in roles:
        rows.append(Listener("web", "Status page and UM web services", "HTTP", "tcp",
                             config.web.http_port, None, node_address,
                             "HTTP or TLS (UM web services: TLS + web token, client cert or API key)", UMEDGE_ONLY,
                             "UMWeb (TCP-In)", "[web].http_port"))
    return rows


def _addresses_overlap(a: str, b: str) -> bool:
    if a == b:
        return True
    ia, ib = ipaddress.ip_address(a), ipaddress.ip_address(b)
    if ia.is_unspecified or ib.is_unspecified:
        # A wildcard bind takes the port on every address; dual-stack "::" covers IPv4 too.
        return ia.version == ib.version or (ia.version == 6 and ia.is_unspecified) or (
            ib.version == 6 and ib.is_unspecified)
    return False


def collisions(rows: list[Listener]) -> list[tuple[Listener, Listener]]:
    """Pairs of fixed listeners that would bind the same IP protocol, port and address."""
    fixed = [r for r in rows if not r.is_range]
    found = []
    for i, a in enumerate(fixed):
        for b in fixed[i + 1:]:
            if a.l4 == b.l4 and a.port == b.port and _addresses_overlap(a.address, b.address):
                found.append((a, b))
    return found


def format_table(rows: list[Listener]) -> str:
    """The seed's table: role, protocol, TCP port, UDP port, secured, changeable."""
    header = ("ROLE", "SERVICE", "PROTOCOL", "TCP PORT", "UDP PORT", "SECURED", "CHANGEABLE IN EXCHANGE")
    body = [
        (r.role, r.service, r.protocol, r.ports if r.l4 == "tcp" else "-",
         r.ports if r.l4 == "udp" else "-", r.secured, r.changeable)
        for r in rows
    ]
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    return "\n".join(
        "  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(line)).rstrip()
        for line in [header, *body]
    )
