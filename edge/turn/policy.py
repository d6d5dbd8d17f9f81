"""Who a relay may talk to, and how much a client may take: the engine asks, config decides.

Peers are refused by default when they are loopback, unspecified, link-local,
multicast or broadcast, private (RFC 1918, unique local, carrier-grade NAT) or
reserved, or this server's own listener addresses, or in
`denied_peer_networks`; `allowed_peer_networks` opens named networks (how the
edge relays into the internal network its mailbox servers live on).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from functools import lru_cache

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Besides loopback and the like, the private and shared ranges (RFC 1918, RFC 6598 carrier-grade NAT,
# RFC 4193 unique local, IETF protocol assignments, benchmarking, reserved): a relay that reaches
# internal networks is a server-side request forgery path, so an operator opens them by name.
BUILTIN_DENIED = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "255.255.255.255/32",
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15",
    "240.0.0.0/4",
    "::/128", "::1/128", "fe80::/10", "ff00::/8", "fc00::/7",
))


@dataclass(frozen=True)
class Limits:
    """Quotas and lifetimes (seconds); lifetimes match coturn's defaults."""

    max_allocations: int = 10000
    max_allocations_per_user: int = 50
    bandwidth_bytes_per_second: int = 0  # 0: unlimited
    default_lifetime: int = 600
    max_lifetime: int = 3600
    permission_lifetime: int = 300
    channel_lifetime: int = 600
    reservation_lifetime: int = 30
    nonce_lifetime: int = 600
    max_pending: int = 1000  # Allocates waiting for the pool's quota answer


@dataclass
class PeerPolicy:
    """Peer address policy. `own_addresses`: the node's listener addresses (refused outright);
    `own_services`: every (address, port) the node listens on, relay addresses included, so a relay
    can reach another relay of this edge (two clients of one edge) but never the edge's own services."""

    allowed: tuple[IPNetwork, ...] = ()
    denied: tuple[IPNetwork, ...] = ()
    own_addresses: frozenset[str] = field(default_factory=frozenset)
    own_services: frozenset[tuple[str, int]] = field(default_factory=frozenset)

    @classmethod
    def from_config(cls, allowed: tuple[str, ...], denied: tuple[str, ...], listener_addresses: AbstractSet[str],
                    relay_addresses: AbstractSet[str] = frozenset(), listener_ports: AbstractSet[int] = frozenset()
                    ) -> PeerPolicy:
        everything = set(listener_addresses) | set(relay_addresses)
        return cls(tuple(ipaddress.ip_network(n) for n in allowed),
                   tuple(ipaddress.ip_network(n) for n in denied),
                   frozenset(set(listener_addresses) - set(relay_addresses)),
                   frozenset((address, port) for address in everything for port in listener_ports))

    def permits(self, host: str) -> bool:
        return _permits(self, host)

    def permits_port(self, host: str, port: int) -> bool:
        """False for one of this node's own services (its TURN, SIP, token and web ports)."""
        return (host, port) not in self.own_services

    def __hash__(self) -> int:
        return id(self)


@lru_cache(maxsize=4096)
def _permits(policy: PeerPolicy, host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # judge ::ffff:127.0.0.1 as 127.0.0.1
    if any(ip in net for net in policy.allowed if net.version == ip.version):
        return True
    if str(ip) in policy.own_addresses:
        return False
    if any(ip in net for net in policy.denied if net.version == ip.version):
        return False
    return not any(ip in net for net in BUILTIN_DENIED if net.version == ip.version)
