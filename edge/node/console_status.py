"""The status page's whole-node view: NodeState.snapshot() plus one section per role.

Read at request time from the running services. Parts other subsystems own
(voicemail delivery, MWI, the kernel offload) are read through their
`status()` when they exist and shown as absent when they do not, so the page
never depends on them being built. Rates (calls/s, tokens/s) are the change
of their counters over the last few seconds of requests.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from typing import Any

from edge.auth import audit
from edge.node.state import NodeState

RATE_WINDOW = 10.0


class Rates:
    """Per-second rates of monotonically growing counters, over the last RATE_WINDOW seconds of samples."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[tuple[float, float]]] = {}

    def rate(self, name: str, value: float, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        samples = self._samples.setdefault(name, deque(maxlen=64))
        while samples and now - samples[0][0] > RATE_WINDOW:
            samples.popleft()
        samples.append((now, value))
        then, before = samples[0]
        return round(max(0.0, value - before) / (now - then), 2) if now - then >= 0.5 else 0.0


def _rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _status_of(thing: Any) -> Any:
    status = getattr(thing, "status", None)
    if not callable(status):
        return None
    try:
        return status()
    except Exception as error:  # noqa: BLE001 - another subsystem's bug must not take the page down
        return {"error": f"{type(error).__name__}: {error}"}


def _named(state: NodeState, name: str) -> Any:
    root = getattr(state.console, "parent", None)
    named = getattr(root, "namedServices", None) or {}
    return named.get(name)


def whole_node(state: NodeState, rates: Rates) -> dict[str, Any]:
    snapshot = state.snapshot()
    now = time.time()
    router = state.callrouter
    if router is not None:
        status = _status_of(router.router) or {}
        counters = status.get("counters", {})
        snapshot["callrouter"] = {
            "gateways": [{"address": g.address, "name": g.name, "status": g.status}
                         for g in router.router.gateways.gateways],
            "servers": status.get("servers", {}), "counters": counters,
            "calls_per_second": rates.rate("callrouter.redirects", float(counters.get("redirects", 0))),
        }
    mailbox = state.mailbox
    if mailbox is not None:
        slots = []
        for slot in mailbox.slots:
            row = dict(_status_of(slot) or {})
            pid = int(row.get("pid") or os.getpid())  # in-process slots today; child processes report their own
            row.setdefault("pid", pid)
            row.setdefault("rss_bytes", _rss(pid))
            started = getattr(slot, "started", None)
            row.setdefault("age_seconds", round(now - started, 1) if started else None)
            slots.append(row)
        snapshot["um"] = {"active_slot": mailbox.active.number, "draining": bool(mailbox.draining), "slots": slots,
                          "calls_per_second": rates.rate("worker.calls", float(sum(
                              s.get("calls_total", 0) or 0 for s in slots)))}
    snapshot["delivery"] = _status_of(_named(state, "um/delivery"))
    snapshot["mwi"] = _status_of(_named(state, "um/mwi"))
    engine = state.engine
    if engine is not None:
        dialects: Counter[str] = Counter()
        for allocation in list(engine.allocations.values()):
            dialect = allocation.dialect
            dialects["rfc8656" if dialect is None else str(getattr(dialect, "name", type(dialect).__name__))] += 1
        snapshot["allocations"]["by_dialect"] = dict(dialects)
        snapshot["offload"] = _status_of(getattr(engine, "offload", None))
    if "edge" in state.config.node.roles:
        issued = {path: audit.ISSUED.get(path, 0) for path in ("mras", "https", "cli")}
        refused = dict(getattr(audit, "REFUSED", {}))
        snapshot["auth"] = {"issued": issued, "refused": refused,
                            "tokens_per_second": {path: rates.rate(f"tokens.{path}", float(n))
                                                  for path, n in issued.items()},
                            "turn_auth_failures": sum(n for k, n in (engine.stats if engine else {}).items()
                                                      if k.startswith("auth_failed_"))}
    console = state.console
    refusals = getattr(getattr(console, "sessions", None), "refusals", None)
    snapshot["refusals"] = len(refusals.snapshot()) if refusals is not None else 0
    return snapshot


__all__ = ["Rates", "whole_node"]
