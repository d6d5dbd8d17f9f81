"""What the node shows of its worker processes (um.worker.supervisor): /metrics families, `umedge status` lines."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from edge.node.state import NodeState


def worker_process_metrics(state: NodeState) -> Iterable[Metric]:
    mailbox = state.mailbox
    if mailbox is None or mailbox.supervisor is None:
        return
    summary = mailbox.supervisor.summary()
    for name, doc, key in (("umedge_worker_crashes", "Worker processes that died unasked (replaced)", "crashes"),
                           ("umedge_worker_recycles", "Worker recycles (a fresh process took new calls)",
                            "recycles")):
        counter = CounterMetricFamily(name, doc, labels=[])
        counter.add_metric([], float(summary.get(key, 0)))
        yield counter
    gauges = {
        "up": GaugeMetricFamily("umedge_worker_process_up", "1 while the slot's worker process runs", labels=["slot"]),
        "rss": GaugeMetricFamily("umedge_worker_process_resident_bytes", "Resident memory of the slot's worker "
                                 "process", labels=["slot"]),
        "calls": GaugeMetricFamily("umedge_worker_process_calls", "Calls in progress in the slot's worker process",
                                   labels=["slot"]),
        "active": GaugeMetricFamily("umedge_worker_process_active", "1 for the slot that takes new calls",
                                    labels=["slot"]),
    }
    for slot in mailbox.slots:
        label = [str(slot.number)]
        gauges["up"].add_metric(label, 1.0 if slot.pid is not None else 0.0)
        gauges["rss"].add_metric(label, float(slot.rss_bytes))
        gauges["calls"].add_metric(label, float(slot.call_count))
        gauges["active"].add_metric(label, 1.0 if mailbox.active is slot and slot.state == "active" else 0.0)
    yield from gauges.values()


def slot_lines(status: dict[str, Any]) -> list[str]:
    """`umedge status`: one line per worker slot (pid, state, calls, age, resident memory)."""
    slots = status.get("worker_slots") or {}
    lines = []
    for slot in slots.get("slots", []):
        age = slot.get("age_seconds")
        rss = slot.get("rss_bytes") or 0
        active = " (takes new calls)" if slot.get("slot") == slots.get("active_slot") else ""
        lines.append(f"worker slot {slot.get('slot')}{active}: {slot.get('state')}, pid {slot.get('pid') or '-'}, "
                     f"calls {slot.get('calls', 0)} (total {slot.get('calls_total', 0)}), "
                     f"age {f'{age:.0f}s' if age is not None else '-'}, RSS {rss / (1 << 20):.0f} MB, "
                     f"crashes {slot.get('crashes', 0)}, recycles {slot.get('recycles', 0)}")
    return lines


__all__ = ["slot_lines", "worker_process_metrics"]
