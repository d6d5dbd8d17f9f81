"""Bound channels mirrored into a fast path's entries (edge.turn.offload.RelayOffload), kernel or native.

For every bound channel of an eligible allocation whose permission holds, two entries: the
client's 5-tuple + channel -> (relay, peer) and the peer at the relay port -> (client,
channel), each with an expiry on CLOCK_MONOTONIC (what bpf_ktime_get_ns and the native
forwarder read) = the earliest of the channel's, the permission's and the allocation's. A
fast path relays only before it, so a permission that lapses stops it on time even when the
engine is paused or behind (a peer whose channel lapsed while its permission holds goes to
the engine for a Data indication); the engine's tick then removes the entry. Counters live in
the entries; `collect` moves them into the allocation once a second (an entry rewritten for a
new expiry keeps its counts; in the kernel a packet counted between that read and write may be
missed, never double counted).

The two fast paths share this and the entry layout; they differ in where the entries live
(pinned BPF maps or the forwarder's tables), which allocations they take, and what VIA means
in an entry: the egress device for the kernel, the socket to send from for the forwarder.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.logger import Logger

from edge.offload.loader import OffloadUnavailable
from edge.turn.allocation import Address, Allocation, RelayEndpoint

log = Logger(namespace="umedge.offload")

MAX_CHANNELS = 65536  # entries per table (the maps' max_entries)


def _ipv4(host: str) -> bytes:
    return socket.inet_aton(host)


def _any_family(host: str) -> bytes:
    """16 bytes: an IPv6 address, or an IPv4 one mapped (::ffff:a.b.c.d)."""
    if ":" in host:
        return socket.inet_pton(socket.AF_INET6, host)
    return b"\0" * 10 + b"\xff\xff" + _ipv4(host)


@dataclass(frozen=True)
class EntryLayout:
    """How a fast path packs its entries: the address width, the relay families it carries, four C structs
    ("=": no implicit padding; addresses and ports in network order; the 4-byte int after the addresses
    is VIA)."""

    families: frozenset[int]
    address: Callable[[str], bytes]
    client_key: struct.Struct
    client_value: struct.Struct
    peer_key: struct.Struct
    peer_value: struct.Struct


def _layout(families: frozenset[int], address: Callable[[str], bytes], width: int) -> EntryLayout:
    a = f"{width}s"
    return EntryLayout(families, address, struct.Struct(f"={a}{a}2s2s2s2x"), struct.Struct(f"={a}{a}2s2sIQQQ"),
                       struct.Struct(f"={a}{a}2s2s"), struct.Struct(f"={a}{a}2s2s2s2xI4xQQQQ"))


IPV4 = _layout(frozenset({4}), _ipv4, 4)  # turn_offload.bpf.c's structs
ANY_FAMILY = _layout(frozenset({4, 6}), _any_family, 16)  # forwarder.c's structs


class EntryTable(Protocol):
    """Fixed-size byte keys to fixed-size byte values: a pinned BPF map or a forwarder table."""

    def update(self, key: bytes, value: bytes) -> None: ...
    def lookup(self, key: bytes) -> bytes | None: ...
    def delete(self, key: bytes) -> bool: ...


def port_bytes(port: int) -> bytes:
    return struct.pack("!H", port)


@dataclass
class _Channel:
    peer: Address
    client_key: bytes
    peer_key: bytes
    client_fields: tuple[bytes, bytes, bytes, bytes, int]
    peer_fields: tuple[bytes, bytes, bytes, bytes, bytes, int]
    until: float = 0.0  # engine clock: channel, permission and allocation
    permitted: float = 0.0  # engine clock: permission and allocation
    seen: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # counts already added to the allocation


class ChannelMirror:
    """The RelayOffload half every fast path shares; a subclass supplies the tables and the routing."""

    what = "fast path"  # for log lines: "kernel offload", "native forwarder"
    setting = ""  # its [edge] key: "kernel_offload", "native_forwarder"
    layout = IPV4

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "auto", "on" or "off"
        self.reason = ""  # why it is on or off, for the log, `umedge status` and the status page
        self.active = False
        self._clients: EntryTable | None = None
        self._peers: EntryTable | None = None
        self._entries: dict[Allocation, dict[int, _Channel]] = {}
        self._channels = 0
        self._failures = 0
        self._failure_logged = 0.0

    # --- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start when the mode and the machine allow; with "on", OffloadUnavailable (one line) when it cannot."""
        if self.mode == "off":
            self.reason = f'[edge] {self.setting} = "off"'
            log.info("{what}: off ({why})", what=self.what, why=self.reason)
            return
        try:
            self._start()
        except OffloadUnavailable as error:
            self.reason = str(error)
            if self.mode == "on":
                raise OffloadUnavailable(f'{self.what} ([edge] {self.setting} = "on"): {error}') from None
            log.info("{what}: off (auto: {why})", what=self.what, why=self.reason)
            return
        self.active = True
        self._started()

    def _start(self) -> None:
        """Build, load, attach: raise OffloadUnavailable with the reason when it cannot."""
        raise NotImplementedError

    def _started(self) -> None:
        """Set `reason` and log the one line that says where it runs."""
        raise NotImplementedError

    # --- what a fast path supplies ----------------------------------------------------

    def _eligible(self, allocation: Allocation) -> bool:
        """Whether this fast path can carry the allocation (UDP, RFC 8656, IPv4 on both sides, ...)."""
        raise NotImplementedError

    def _listener(self, allocation: Allocation) -> tuple[Address, int]:
        """The address the client sends to (as the entries key it) and VIA toward the client."""
        raise NotImplementedError

    def _via_peer(self, relay: RelayEndpoint, peer: Address) -> int:
        """VIA toward `peer` from `relay`."""
        raise NotImplementedError

    # --- RelayOffload ------------------------------------------------------------------

    def update(self, allocation: Allocation, now: float) -> None:
        if not self.active or not self._eligible(allocation):
            return
        try:
            self._update(allocation, now)
        except (OSError, ValueError, KeyError) as error:
            self._failed(allocation, error)

    def _update(self, allocation: Allocation, now: float) -> None:
        want: dict[int, tuple[Address, float, float, RelayEndpoint]] = {}
        families = self.layout.families
        for number, (peer, expiry, relay) in allocation.channels.items():
            permission = allocation.permissions.get(peer[0])
            if relay.family not in families or permission is None:
                continue
            permitted = min(permission, allocation.expires)
            until = min(expiry, permitted)
            if until > now:
                want[number] = (peer, until, permitted, relay)
        entries = self._entries.setdefault(allocation, {})
        for number in [n for n, channel in entries.items() if want.get(n, (None,))[0] != channel.peer]:
            self._drop(allocation, entries.pop(number))
        mono_now = time.monotonic_ns()
        layout = self.layout
        for number, (peer, until, permitted, relay) in want.items():
            expires_ns = mono_now + int((until - now) * 1e9)
            permitted_ns = mono_now + int((permitted - now) * 1e9)
            channel = entries.get(number)
            if channel is None:
                if self._channels >= MAX_CHANNELS:
                    break
                channel = entries[number] = self._channel(allocation, number, peer, relay)
                self._channels += 1
            elif channel.until == until and channel.permitted == permitted:
                continue
            else:
                self._read(allocation, channel)  # the counts so far go to the allocation, then are kept
            channel.until, channel.permitted = until, permitted
            assert self._clients is not None and self._peers is not None
            seen = channel.seen
            self._clients.update(channel.client_key, layout.client_value.pack(*channel.client_fields, expires_ns,
                                                                              seen[0], seen[1]))
            self._peers.update(channel.peer_key, layout.peer_value.pack(*channel.peer_fields, expires_ns,
                                                                        permitted_ns, seen[2], seen[3]))
        if not entries:
            del self._entries[allocation]

    def _channel(self, allocation: Allocation, number: int, peer: Address, relay: RelayEndpoint) -> _Channel:
        layout, address = self.layout, self.layout.address
        client = allocation.client.address
        (server_host, server_port), to_client = self._listener(allocation)
        server_ip, server_port_bytes = address(server_host), port_bytes(server_port)
        client_ip, client_port, channel = address(client[0]), port_bytes(client[1]), port_bytes(number)
        relay_ip, relay_port = address(relay.address[0]), port_bytes(relay.address[1])
        peer_ip, peer_port = address(peer[0]), port_bytes(peer[1])
        return _Channel(
            peer, layout.client_key.pack(client_ip, server_ip, client_port, server_port_bytes, channel),
            layout.peer_key.pack(peer_ip, relay_ip, peer_port, relay_port),
            (relay_ip, peer_ip, relay_port, peer_port, self._via_peer(relay, peer)),
            (client_ip, server_ip, client_port, server_port_bytes, channel, to_client))

    def _read(self, allocation: Allocation, channel: _Channel) -> int:
        """Add the entry's counts since the last read to the allocation; the bytes added."""
        assert self._clients is not None and self._peers is not None
        to_peer = self._clients.lookup(channel.client_key)
        to_client = self._peers.lookup(channel.peer_key)
        now = list(channel.seen)
        if to_peer is not None:
            now[0], now[1] = self.layout.client_value.unpack(to_peer)[-2:]
        if to_client is not None:
            now[2], now[3] = self.layout.peer_value.unpack(to_client)[-2:]
        delta = [max(0, a - b) for a, b in zip(now, channel.seen, strict=True)]
        channel.seen = now
        allocation.offloaded_packets_to_peer += delta[0]
        allocation.offloaded_bytes_to_peer += delta[1]
        allocation.offloaded_packets_to_client += delta[2]
        allocation.offloaded_bytes_to_client += delta[3]
        return delta[1] + delta[3]

    def _drop(self, allocation: Allocation, channel: _Channel) -> None:
        assert self._clients is not None and self._peers is not None
        self._read(allocation, channel)
        self._clients.delete(channel.client_key)
        self._peers.delete(channel.peer_key)
        self._channels -= 1

    def remove(self, allocation: Allocation) -> None:
        entries = self._entries.pop(allocation, None)
        if not entries or not self.active:
            return
        for channel in entries.values():
            try:
                self._drop(allocation, channel)
            except OSError as error:
                self._failed(allocation, error)

    def collect(self, allocation: Allocation) -> int:
        entries = self._entries.get(allocation)
        if not entries or not self.active:
            return 0
        used = 0
        try:
            for channel in entries.values():
                used += self._read(allocation, channel)
        except OSError as error:
            self._failed(allocation, error)
        return used

    def counters(self) -> dict[str, int]:
        """Running totals for the engine's stats (its own names, e.g. "dropped_kernel_malformed")."""
        raise NotImplementedError

    def _forget(self) -> None:
        """After the tables went away: nothing is mirrored any more."""
        self._entries.clear()
        self._channels = 0

    def _failed(self, allocation: Allocation, error: Exception) -> None:
        """A table operation failed: the allocation stays with the engine (correct, only slower); logged rarely."""
        self._failures += 1
        allocation.offload_refused = True
        for channel in self._entries.pop(allocation, {}).values():
            self._channels -= 1
            for table, key in ((self._clients, channel.client_key), (self._peers, channel.peer_key)):
                try:
                    if table is not None:
                        table.delete(key)
                except OSError:
                    pass
        now = time.monotonic()
        if now - self._failure_logged >= 60:
            self._failure_logged = now
            log.warn("{what}: {error}; the allocation is relayed by the engine ({n} so far)",
                     what=self.what, error=str(error), n=self._failures)

    def entry_status(self) -> dict[str, Any]:
        return {"channels": self._channels, "allocations": len(self._entries)}
