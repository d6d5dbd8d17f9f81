"""The kernel fast path (edge.turn.offload.RelayOffload): pinned BPF maps, tc on the devices, its life cycle.

The entries and their expiry rules are edge.offload.mirror's (shared with the native
forwarder); here VIA is the egress device toward the peer or client (0: local), and only
allocations of clients on the configured IPv4 listen address qualify.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from edge.offload import bpfsys, loader
from edge.offload.bpfsys import BpfError, PinnedMap
from edge.offload.loader import OffloadUnavailable
from edge.offload.mirror import IPV4, ChannelMirror
from edge.turn.allocation import Address, Allocation, RelayEndpoint

log = Logger(namespace="umedge.offload")

MODES = ("auto", "on", "off")
ROUTE_CACHE = 4096
ROUTE_TTL = 60.0  # seconds a looked-up egress device is trusted for new entries
STATS = ("to_peer", "to_client", "malformed", "expired", "passed", "errors")
# The engine's stats names; "dropped_*" ones show in /metrics as umedge_turn_dropped{reason=...}.
STAT_NAMES = {"malformed": "dropped_kernel_malformed", "expired": "dropped_kernel_expired",
              "errors": "dropped_kernel_errors"}


def _list(value: object) -> list[object]:
    return value if isinstance(value, list) else []


class KernelOffload(ChannelMirror):
    """The tc/eBPF fast path (RelayOffload) with its life cycle: start decides, stop removes everything."""

    what = "kernel offload"
    setting = "kernel_offload"

    def __init__(self, mode: str, server: Address, relay_host: str, cache_dir: Path, workers: int = 1) -> None:
        super().__init__(mode)
        self.server = server
        self.relay_host = relay_host
        self.cache_dir = cache_dir
        self.workers = workers
        self.devices: list[str] = []
        self._created_qdisc: dict[str, bool] = {}
        self._loaded: loader.Loaded | None = None
        self._maps: list[PinnedMap] = []
        self._stats: PinnedMap | None = None
        self._cpus = 1
        self._owner = os.getpid()
        self._routes: dict[str, tuple[int, float]] = {}

    # --- life cycle ------------------------------------------------------------------

    def _started(self) -> None:
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
            self._clients = clients = PinnedMap(maps["clients"], IPV4.client_key.size, IPV4.client_value.size)
            self._peers = peers = PinnedMap(maps["peers"], IPV4.peer_key.size, IPV4.peer_value.size)
            self._stats = PinnedMap(maps["stats"], 4, 8 * self._cpus)
            self._maps = [clients, peers, self._stats]
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
        for pinned in self._maps:
            pinned.close()
        self._maps = []
        self._clients = self._peers = self._stats = None
        if self._loaded is not None:
            loader.unpin(self._loaded.pin_dir)
            self._loaded = None
        self._forget()

    # --- ChannelMirror ------------------------------------------------------------------

    def _eligible(self, allocation: Allocation) -> bool:
        client = allocation.client
        return (client.kind == "udp" and allocation.dialect is None
                and ":" not in client.address[0] and 4 in allocation.relays)

    def _listener(self, allocation: Allocation) -> tuple[Address, int]:
        return self.server, self._egress(allocation.client.address[0])

    def _via_peer(self, relay: RelayEndpoint, peer: Address) -> int:
        return self._egress(peer[0])

    def _egress(self, host: str) -> int:
        """The device toward `host` (0: local), from `ip route get` (a few ms, on ChannelBind only), cached."""
        now = time.monotonic()
        known = self._routes.get(host)
        if known is None or now - known[1] > ROUTE_TTL:
            if len(self._routes) >= ROUTE_CACHE:
                self._routes.clear()
            known = self._routes[host] = (loader.egress_device(host), now)
        return known[0]

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
                **self.entry_status(),
                "program": loader.source_digest() if self.active else "",
                "pins": str(self._loaded.pin_dir) if self._loaded is not None else "",
                "counters": self.counters()}
