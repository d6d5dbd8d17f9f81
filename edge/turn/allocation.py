"""Allocation state: relays, permissions and channels with their expiry times.

Plain data; the engine decides, the I/O layer moves packets. Times are the
engine clock's seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from edge.turn.dialect import TurnDialect

Address = tuple[str, int]


class ClientLink(Protocol):
    """How the engine reaches a client: a UDP source address or a TCP/TLS connection."""

    allocation: Allocation | None  # the link's allocation: the 5-tuple owns at most one
    address: Address
    kind: str  # "udp", "tcp" or "tls"
    stream: bool

    def send(self, data: bytes) -> None: ...


class RelayEndpoint(Protocol):
    """A bound relay socket. The I/O layer calls `receiver(data, address)` for each datagram."""

    address: Address
    family: int
    receiver: Callable[[bytes, Address], None] | None

    def sendto(self, data: bytes, address: Address) -> bool: ...
    def set_dont_fragment(self) -> bool: ...
    def close(self) -> None: ...


@dataclass(eq=False)
class Allocation:
    client: ClientLink
    username: str
    identity: str
    key: bytes
    sha256: bool
    relays: dict[int, RelayEndpoint]  # family (4/6) -> relay
    expires: float
    created_by: bytes  # transaction id of the Allocate, to answer its retransmissions
    created_response: bytes = b""
    permissions: dict[str, float] = field(default_factory=dict)
    # channel number -> (peer, expiry, the relay of the peer's family): all the data path needs
    channels: dict[int, tuple[Address, float, RelayEndpoint]] = field(default_factory=dict)
    peer_channels: dict[Address, int] = field(default_factory=dict)
    budget: int = 0  # bytes left this second under the bandwidth cap
    reservation: bytes | None = None
    # None for RFC 8656; else the dialect that made it, the only one the engine asks about its datagrams
    dialect: TurnDialect | None = None
    # Relayed traffic, counted here (plain ints are cheap per packet), summed by the engine.
    packets_to_peer: int = 0
    bytes_to_peer: int = 0
    packets_to_client: int = 0
    bytes_to_client: int = 0
    # What a kernel fast path (edge.turn.offload) relayed for it, added once a second; part of the totals above
    # only in TurnEngine.traffic(), so the user-space counts stay what user space saw.
    offloaded_packets_to_peer: int = 0
    offloaded_bytes_to_peer: int = 0
    offloaded_packets_to_client: int = 0
    offloaded_bytes_to_client: int = 0
    offload_refused: bool = False  # over its bandwidth cap once: user space relays it from then on
    created: float = 0.0  # engine clock when installed: the console's age column

    def permitted(self, host: str, now: float) -> bool:
        expiry = self.permissions.get(host)
        return expiry is not None and expiry >= now

    def expire_entries(self, now: float) -> bool:
        """Drop permissions and channel bindings whose lifetime ran out; True if any did."""
        hosts = [h for h, t in self.permissions.items() if t < now]
        for host in hosts:
            del self.permissions[host]
        numbers = [n for n, (_, t, _) in self.channels.items() if t < now]
        for number in numbers:
            peer, _, _ = self.channels.pop(number)
            self.peer_channels.pop(peer, None)
        return bool(hosts or numbers)
