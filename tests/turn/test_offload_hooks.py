"""The engine drives a fast path (edge.turn.offload.RelayOffload) and stays the authority: a recording fake."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from edge import stun
from edge.turn.allocation import Allocation
from edge.turn.policy import Limits
from tests.turn.test_engine import Harness


@dataclass
class RecordingOffload:
    """What the engine told it; `collect` reports `kernel_bytes` relayed to the peer per call."""

    calls: list[tuple[str, dict[int, tuple[tuple[str, int], float]]]] = field(default_factory=list)
    kernel_bytes: int = 0

    def update(self, allocation: Allocation, now: float) -> None:
        entries = {n: (peer, min(t, allocation.permissions.get(peer[0], 0.0), allocation.expires))
                   for n, (peer, t, _) in allocation.channels.items()}
        self.calls.append(("update", entries))

    def remove(self, allocation: Allocation) -> None:
        self.calls.append(("remove", {}))

    def collect(self, allocation: Allocation) -> int:
        allocation.offloaded_packets_to_peer += 1 if self.kernel_bytes else 0
        allocation.offloaded_bytes_to_peer += self.kernel_bytes
        return self.kernel_bytes

    def counters(self) -> dict[str, int]:
        return {"dropped_kernel_malformed": 7}

    def status(self) -> dict[str, Any]:
        return {"active": True}


def harness(limits: Limits | None = None) -> tuple[Harness, RecordingOffload]:
    h = Harness(limits)
    offload = RecordingOffload()
    h.engine.offload = offload
    return h, offload


def test_every_rule_change_reaches_the_fast_path_with_its_expiry() -> None:
    h, offload = harness()
    h.allocate()
    peer = ("203.0.113.5", 7000)
    assert h.bind_channel(0x4001, *peer).msg_class == stun.SUCCESS
    now = h.clock.now
    # The bind is mirrored before its success is sent, expiring with the permission (300 s), not the channel.
    assert offload.calls == [("update", {0x4001: (peer, now + 300)})]
    h.clock.now += 100
    h.engine.tick()
    h.permission("203.0.113.5")  # a refreshed permission moves the expiry
    assert offload.calls[-1] == ("update", {0x4001: (peer, now + 400)})
    h.request(stun.REFRESH, [(stun.Attr.LIFETIME, stun.encode_lifetime(600))])
    assert offload.calls[-1][0] == "update"
    h.clock.now += 401  # the permission lapses: the tick removes it and tells the fast path
    h.engine.tick()
    assert offload.calls[-1] == ("update", {0x4001: (peer, 0.0)})
    h.request(stun.REFRESH, [(stun.Attr.LIFETIME, stun.encode_lifetime(0))])  # deallocation
    assert offload.calls[-1] == ("remove", {})
    assert h.engine.stats["dropped_kernel_malformed"] == 7  # the kernel's totals, assigned, not summed


def test_kernel_counts_join_the_totals_and_stay_apart_from_user_space() -> None:
    h, offload = harness()
    h.allocate()
    h.bind_channel(0x4001, "203.0.113.5", 7000)
    h.engine.from_client(h.link, stun.encode_channel_data(0x4001, b"user"))  # the user-space path, still there
    offload.kernel_bytes = 500
    h.engine.tick()
    traffic = h.engine.traffic()
    assert traffic["packets_to_peer"] == 2 and traffic["bytes_to_peer"] == 504
    assert traffic["offloaded_packets_to_peer"] == 1 and traffic["offloaded_bytes_to_peer"] == 500
    h.request(stun.REFRESH, [(stun.Attr.LIFETIME, stun.encode_lifetime(0))])
    assert h.engine.traffic()["offloaded_bytes_to_peer"] == 500  # kept after the allocation is gone


def test_an_allocation_over_its_cap_in_the_kernel_leaves_the_fast_path() -> None:
    h, offload = harness(Limits(bandwidth_bytes_per_second=1000))
    h.allocate()
    h.bind_channel(0x4001, "203.0.113.5", 7000)
    offload.kernel_bytes = 800
    h.engine.tick()  # within the cap
    assert offload.calls[-1][0] == "update"
    offload.kernel_bytes = 5000
    h.engine.tick()  # over it: off the fast path, for good
    assert offload.calls[-1] == ("remove", {}) and h.engine.stats["offload_bandwidth_refusals"] == 1
    allocation = next(iter(h.engine.allocations.values()))
    assert allocation.offload_refused
    calls = len(offload.calls)
    h.bind_channel(0x4001, "203.0.113.5", 7000)  # a refresh is no longer mirrored
    assert len(offload.calls) == calls
    for _ in range(20):  # user space now enforces the cap
        h.engine.from_client(h.link, stun.encode_channel_data(0x4001, b"x" * 100))
    assert len(h.relays[0].sent) == 10
