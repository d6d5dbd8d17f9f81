"""The hooks a fast path plugs into (edge.offload): the engine tells it every change, it decides nothing.

The engine stays the authority: it calls `update` whenever an allocation's
channels, permissions or lifetime change and `remove` when the allocation goes;
the offload mirrors what may be relayed (with its expiry, so the kernel stops on
time even if user space is late) and reports what it relayed through `collect`,
which adds the kernel's counts to the allocation's `offloaded_*` fields.
"""

from __future__ import annotations

import socket
from typing import Any, NamedTuple, Protocol

from edge.turn.allocation import Address, Allocation


class RelayOffload(Protocol):
    def update(self, allocation: Allocation, now: float) -> None:
        """Mirror the allocation's bound channels whose permission holds (`now` on the engine clock)."""

    def remove(self, allocation: Allocation) -> None:
        """Take every entry of the allocation off the fast path (its last counts collected first)."""

    def collect(self, allocation: Allocation) -> int:
        """Add the kernel's packets and bytes since the last call to the allocation; return the bytes."""

    def counters(self) -> dict[str, int]:
        """Fast-path totals for the engine's stats (e.g. malformed ChannelData dropped in the kernel)."""

    def status(self) -> dict[str, Any]:
        """For the status page and `umedge status`: mode, active or not, why, devices, entries."""


Datagrams = list[tuple[bytes, Address]]


class SocketKey(NamedTuple):
    """A socket as a native fast path knows it: its bound address and port as the entries key them, and
    whether it is an IPv6 socket (which answers IPv4 clients at their mapped ::ffff: addresses)."""

    ip: bytes
    port: bytes
    ipv6: bool


class DatagramBatches(Protocol):
    """A native fast path the UDP sockets (edge.turn.io) read through when it is active: each call reads
    one batch, relays the bound-channel ChannelData itself and returns the rest (and whether the
    socket is drained) for the engine."""

    active: bool

    def bound(self, sock: socket.socket) -> SocketKey | None:
        """How the fast path keys `sock`; None if it does not read it."""

    def from_clients(self, fd: int, key: SocketKey) -> tuple[Datagrams, bool]: ...
    def from_peers(self, fd: int, key: SocketKey) -> tuple[Datagrams, bool]: ...
