"""The kernel fast path as the engine sees it (edge.turn.offload.RelayOffload): map entries per channel.

For every bound channel of a UDP, RFC 8656, IPv4 allocation whose permission holds, two
entries: the client's 5-tuple + channel -> (relay, peer) and the peer at the relay port ->
(client, channel), each with an expiry on CLOCK_MONOTONIC (what bpf_ktime_get_ns reads) =
the earliest of the channel's, the permission's and the allocation's. The kernel relays only
before it and drops after it, so a permission that lapses stops the fast path on time even
when user space is paused or behind (a peer whose channel lapsed while its permission holds
goes to user space for a Data indication); the engine's tick then removes the entry.
Counters live in the entries; `collect` moves them into the allocation once a second (an
entry rewritten for a new expiry keeps its counts; a packet counted between that read and
write may be missed, never double counted).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from edge.offload import bpfsys, loader
from edge.offload.bpfsys import BpfError, PinnedMap
from edge.offload.loader import OffloadUnavailable
from edge.turn.allocation import Address, Allocation

log = Logger(namespace="umedge.offload")

MODES = ("auto", "on", "off")
MAX_CHANNELS = 65536  # the maps' max_entries
ROUTE_CACHE = 4096
ROUTE_TTL = 60.0  # seconds a looked-up egress device is trusted for new entries
# The C structs of turn_offload.bpf.c ("=": no implicit padding; addresses and ports in network order).
CLIENT_KEY = struct.Struct("=4s4s2s2s2s2x")
CLIENT_VALUE = struct.Struct("=4s4s2s2sIQQQ")
PEER_KEY = struct.Struct("=4s4s2s2s")
PEER_VALUE = struct.Struct("=4s4s2s2s2s2xI4xQQQQ")
STATS = ("to_peer", "to_client", "malformed", "expired", "passed", "errors")
# The engine's stats names; "dropped_*" ones show in /metrics as umedge_turn_dropped{reason=...}.
STAT_NAMES = {"malformed": "dropped_kernel_malformed", "expired": "dropped_kernel_expired",
              "errors": "dropped_kernel_errors"}


def _ip(host: str) -> bytes:
    return socket.inet_aton(host)


def _port(port: int) -> bytes:
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


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


class KernelOffload:
    """The tc/eBPF fast path (RelayOffload) with its life cycle: start decides, stop removes everything."""

    def __init__(self, mode: str, server: Address, relay_host: str, cache_dir: Path, workers: int = 1) -> None:
        self.mode = mode
        self.server = server
        self.relay_host = relay_host
        self.cache_dir = cache_dir
        self.workers = workers
        self.active = False
        self.reason = ""
        self.devices: list[str] = []
        self._created_qdisc: dict[str, bool] = {}
        self._loaded: loader.Loaded | None = None
        self._clients: PinnedMap | None = None
        self._peers: PinnedMap | None = None
        self._stats: PinnedMap | None = None
        self._cpus = 1
        self._owner = os.getpid()
        self._entries: dict[Allocation, dict[int, _Channel]] = {}
        self._routes: dict[str, tuple[int, float]] = {}
        self._channels = 0
        self._failures = 0
        self._failure_logged = 0.0

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> None:
        """Attach when the mode and the machine allow; "on" raises OffloadUnavailable (one line) when not."""
        if self.mode == "off":
            self.reason = '[edge] kernel_offload = "off"'
            log.info("kernel offload: off ({why})", why=self.reason)
            return
        try:
            self._start()
        except OffloadUnavailable as error:
            self.reason = str(error)
            if self.mode == "on":
                raise OffloadUnavailable(f'kernel offload ([edge] kernel_offload = "on"): {error}') from None
            log.info("kernel offload: off (auto: {why})", why=self.reason)
            return
        self.active = True
        self.reason = f"tc ingress on {', '.join(self.devices)}"
        log.info("kernel offload: on ({mode}): {where}; program turn_offload.bpf.c {digest}, pinned at {pins}",
                 mode=self.mode, where=self.reason, digest=loader.source_digest(),
                 pins=str(self._loaded.pin_dir) if self._loaded else "")

    def _check(self) -> None:
        why = bpfsys.supported()
        if why:
            raise OffloadUnavailable(why)
        if os.geteuid() != 0:
            raise OffloadUnavailable("needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for bpffs)")
        missing = loader.tools_missing()
        if missing:
            raise OffloadUnavailable(f"{', '.join(missing)} not installed (Debian: clang bpftool iproute2)")
        for what, host in (("listen_address", self.server[0]), ("relay_address", self.relay_host)):
            try:
                if socket.inet_aton(host) == b"\0\0\0\0" or host.count(".") != 3:
                    raise OSError
            except OSError:
                raise OffloadUnavailable(f"[edge] {what} must be a specific IPv4 address (is {host!r})") from None

    def _start(self) -> None:
        self._check()
        stale = loader.sweep_stale(self._owner)
        if stale:
            log.info("kernel offload: removed what a stopped node left: {what}", what="; ".join(stale))
        wanted = (self.server[0], self.relay_host)
        devices = [str(d["ifname"]) for d in loader.devices()
                   if d.get("link_type") in ("ether", "loopback") and any(
                       isinstance(a, dict) and a.get("local") in wanted for a in _list(d.get("addr_info")))]
        if not devices:
            raise OffloadUnavailable(f"no Ethernet or loopback device holds {self.server[0]} or {self.relay_host}")
        obj = loader.build(self.cache_dir)
        self._loaded = loader.load(obj, self._owner)
        try:
            for device in devices:
                self._created_qdisc[device] = loader.attach(device, self._loaded.program, self._owner)
                self.devices.append(device)
            self._cpus = bpfsys.possible_cpus()
            maps = self._loaded.maps
            self._clients = PinnedMap(maps["clients"], CLIENT_KEY.size, CLIENT_VALUE.size)
            self._peers = PinnedMap(maps["peers"], PEER_KEY.size, PEER_VALUE.size)
            self._stats = PinnedMap(maps["stats"], 4, 8 * self._cpus)
        except (OSError, KeyError) as error:
            self._teardown()
            raise OffloadUnavailable(f"attaching: {error}") from None

    def stop(self) -> None:
        """Detach from every device and remove the pins (the engine removed its entries already)."""
        if self.active:
            self._teardown()
            self.active = False
            log.info("kernel offload: detached from {devices}", devices=", ".join(self.devices) or "-")

    def _teardown(self) -> None:
        for device in self.devices:
            loader.detach(device, self._owner, self._created_qdisc.get(device, False))
        for pinned in (self._clients, self._peers, self._stats):
            if pinned is not None:
                pinned.close()
        self._clients = self._peers = self._stats = None
        if self._loaded is not None:
            loader.unpin(self._loaded.pin_dir)
            self._loaded = None
        self._entries.clear()
        self._channels = 0

    # --- RelayOffload ----------------------------------------------------------------

    def _eligible(self, allocation: Allocation) -> bool:
        client = allocation.client
        return (self.active and client.kind == "udp" and allocation.dialect is None
                and ":" not in client.address[0] and 4 in allocation.relays)

    def update(self, allocation: Allocation, now: float) -> None:
        if not self._eligible(allocation):
            return
        try:
            self._update(allocation, now)
        except (BpfError, OffloadUnavailable, ValueError, KeyError) as error:
            self._failed(allocation, error)

    def _update(self, allocation: Allocation, now: float) -> None:
        want: dict[int, tuple[Address, float, float]] = {}
        for number, (peer, expiry, relay) in allocation.channels.items():
            permission = allocation.permissions.get(peer[0])
            if relay.family != 4 or ":" in peer[0] or permission is None:
                continue
            permitted = min(permission, allocation.expires)
            until = min(expiry, permitted)
            if until > now:
                want[number] = (peer, until, permitted)
        entries = self._entries.setdefault(allocation, {})
        for number in [n for n, channel in entries.items() if want.get(n, (None,))[0] != channel.peer]:
            self._drop(allocation, entries.pop(number))
        mono_now = time.monotonic_ns()
        for number, (peer, until, permitted) in want.items():
            expires_ns = mono_now + int((until - now) * 1e9)
            permitted_ns = mono_now + int((permitted - now) * 1e9)
            channel = entries.get(number)
            if channel is None:
                if self._channels >= MAX_CHANNELS:
                    break
                channel = entries[number] = self._channel(allocation, number, peer)
                self._channels += 1
            elif channel.until == until and channel.permitted == permitted:
                continue
            else:
                self._read(allocation, channel)  # the counts so far go to the allocation, then are kept
            channel.until, channel.permitted = until, permitted
            assert self._clients is not None and self._peers is not None
            seen = channel.seen
            self._clients.update(channel.client_key, CLIENT_VALUE.pack(*channel.client_fields, expires_ns,
                                                                       seen[0], seen[1]))
            self._peers.update(channel.peer_key, PEER_VALUE.pack(*channel.peer_fields, expires_ns, permitted_ns,
                                                                 seen[2], seen[3]))
        if not entries:
            del self._entries[allocation]

    def _channel(self, allocation: Allocation, number: int, peer: Address) -> _Channel:
        client = allocation.client.address
        relay = allocation.relays[4].address
        server_ip, server_port = _ip(self.server[0]), _port(self.server[1])
        client_ip, client_port, channel = _ip(client[0]), _port(client[1]), _port(number)
        relay_ip, relay_port, peer_ip, peer_port = _ip(relay[0]), _port(relay[1]), _ip(peer[0]), _port(peer[1])
        return _Channel(
            peer, CLIENT_KEY.pack(client_ip, server_ip, client_port, server_port, channel),
            PEER_KEY.pack(peer_ip, relay_ip, peer_port, relay_port),
            (relay_ip, peer_ip, relay_port, peer_port, self._egress(peer[0])),
            (client_ip, server_ip, client_port, server_port, channel, self._egress(client[0])))

    def _egress(self, host: str) -> int:
        """The device toward `host` (0: local), from `ip route get` (a few ms, on ChannelBind only), cached."""
        now = time.monotonic()
        known = self._routes.get(host)
        if known is None or now - known[1] > ROUTE_TTL:
            if len(self._routes) >= ROUTE_CACHE:
                self._routes.clear()
            known = self._routes[host] = (loader.egress_device(host), now)
        return known[0]

    def _read(self, allocation: Allocation, channel: _Channel) -> int:
        """Add the entry's counts since the last read to the allocation; the bytes added."""
        assert self._clients is not None and self._peers is not None
        to_peer = self._clients.lookup(channel.client_key)
        to_client = self._peers.lookup(channel.peer_key)
        now = list(channel.seen)
        if to_peer is not None:
            now[0], now[1] = CLIENT_VALUE.unpack(to_peer)[-2:]
        if to_client is not None:
            now[2], now[3] = PEER_VALUE.unpack(to_client)[-2:]
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
            except BpfError as error:
                self._failed(allocation, error)

    def collect(self, allocation: Allocation) -> int:
        entries = self._entries.get(allocation)
        if not entries or not self.active:
            return 0
        used = 0
        try:
            for channel in entries.values():
                used += self._read(allocation, channel)
        except BpfError as error:
            self._failed(allocation, error)
        return used

    def counters(self) -> dict[str, int]:
        if not self.active or self._stats is None:
            return {}
        out: dict[str, int] = {}
        for index, name in enumerate(STATS):
            try:
                raw = self._stats.lookup(struct.pack("=I", index))
            except BpfError:
                continue
            total = sum(struct.unpack(f"={self._cpus}Q", raw)) if raw else 0
            out[STAT_NAMES.get(name, f"offload_{name}")] = total
        out["offload_failures"] = self._failures
        return out

    def status(self) -> dict[str, Any]:
        """For the status page and `umedge status` (issue 19 reads this)."""
        return {"mode": self.mode, "active": self.active, "reason": self.reason, "devices": list(self.devices),
                "channels": self._channels, "allocations": len(self._entries),
                "program": loader.source_digest() if self.active else "",
                "pins": str(self._loaded.pin_dir) if self._loaded is not None else "",
                "counters": self.counters()}

    def _failed(self, allocation: Allocation, error: Exception) -> None:
        """A map operation failed: the allocation stays in user space (correct, only slower); logged rarely."""
        self._failures += 1
        allocation.offload_refused = True
        for channel in self._entries.pop(allocation, {}).values():
            self._channels -= 1
            for pinned, key in ((self._clients, channel.client_key), (self._peers, channel.peer_key)):
                try:
                    if pinned is not None:
                        pinned.delete(key)
                except BpfError:
                    pass
        now = time.monotonic()
        if now - self._failure_logged >= 60:
            self._failure_logged = now
            log.warn("kernel offload: {error}; the allocation is relayed in user space ({n} so far)",
                     error=str(error), n=self._failures)
