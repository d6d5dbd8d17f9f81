"""Mediation server targets: static SIP URIs and DNS SRV answers, in RFC 2782 order.

Sans-I/O: parsing and ordering only; edge.mediation.discovery does the DNS.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# SRV services tried in order, as Lync looks for its internal SIP servers.
SRV_SERVICES = (("_sipinternaltls._tcp", "tls"), ("_sipinternal._tcp", "tcp"), ("_sip._tls", "tls"))
DEFAULT_PORTS = {"tls": 5061, "tcp": 5060}
_URI = re.compile(r"^(sips?):(?:[^@;]+@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?((?:;[^;]*)*)$")


@dataclass(frozen=True)
class Target:
    """One place to register: a host (name or address), port and transport."""

    host: str
    port: int
    transport: str  # "tls" or "tcp"
    priority: int = 0
    weight: int = 0
    name: str = ""  # the DNS name the address came from: what TLS checks the certificate against

    @property
    def server_name(self) -> str:
        return self.name or self.host

    @property
    def label(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'sips' if self.transport == 'tls' else 'sip'}:{host}:{self.port};transport={self.transport}"


class TargetError(ValueError):
    """A mediation server URI is not one umedge can reach; says what is allowed."""


def parse_uri(uri: str) -> Target:
    """`sip:HOST[:PORT][;transport=tcp|tls]` or `sips:HOST[:PORT]` (TLS); no UDP: SIP here rides streams."""
    match = _URI.match(uri.strip())
    if not match:
        raise TargetError(f"{uri!r} is not a SIP URI; allowed: sip:HOST[:PORT][;transport=tcp|tls] or sips:HOST[:PORT]")
    scheme, host, port_text, params = match.groups()
    host = host.strip("[]")
    transport = "tls" if scheme == "sips" else "tcp"
    for param in filter(None, params.split(";")):
        name, _, value = param.partition("=")
        if name.lower() == "transport":
            value = value.lower()
            if value not in ("tcp", "tls") or (scheme == "sips" and value != "tls"):
                raise TargetError(f"{uri!r}: transport={value} not allowed; allowed: tcp or tls (sips: tls)")
            transport = value
    port = int(port_text) if port_text else DEFAULT_PORTS[transport]
    if not 1 <= port <= 65535:
        raise TargetError(f"{uri!r}: port {port} not allowed; allowed: 1-65535")
    return Target(host, port, transport)


def rfc2782_order(records: list[Target], rng: random.Random | None = None) -> list[Target]:
    """Lowest priority first; within a priority, weighted random order (RFC 2782's selection)."""
    rng = rng or random.SystemRandom()
    ordered: list[Target] = []
    for priority in sorted({r.priority for r in records}):
        group = [r for r in records if r.priority == priority]
        # zero-weight entries first in the list, so they keep a small chance (RFC 2782)
        group.sort(key=lambda r: r.weight != 0)
        while group:
            total = sum(r.weight for r in group)
            pick = rng.uniform(0, total) if total else 0
            running = 0
            for index, record in enumerate(group):
                running += record.weight
                if running >= pick:
                    ordered.append(group.pop(index))
                    break
    return ordered
