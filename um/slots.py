"""The UM worker slots of a mailbox server, and what handles the calls a slot takes.

Two slots follow the seed's port pairs; a recycle moves new calls to the
other slot while the old one finishes its calls.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from um.sip.dialog import Dialog
from um.sip.message import Request, Response
from um.sip.stream import Peer

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


@dataclass
class WorkerSlot:
    """One UM worker process slot: its ports, its state and its calls.

    In a worker process, `calls` holds the slot's live dialogs. In the node's
    main process (the supervisor's view, um.worker.supervisor) the slot's
    process reports its pid, calls, totals and memory into the fields below.
    States: active (takes new calls), idle (running, takes none), draining
    (finishes its calls, then exits), starting (spawned, not ready yet), down
    (no process: it died; a replacement is due).
    """

    number: int               # 1 or 2
    tcp_port: int | None      # unsecured SIP (None in tls mode)
    tls_port: int | None      # MTLS SIP (None in tcp mode)
    state: str = "idle"       # active / idle / draining / starting / down
    generation: int = 0
    calls: dict[tuple[str, str | None, str | None], Dialog] = field(default_factory=dict)
    redirects: int = 0
    calls_total: int = 0
    started: float | None = None
    draining_since: float | None = None
    pid: int | None = None            # the slot's worker process, if it runs in one
    reported_calls: int = 0           # its calls in progress, as it last reported them
    reported_total: int = 0           # the calls it took (calls_total: those of the slot's exited processes)
    rss_bytes: int = 0
    crashes: int = 0                  # processes of this slot that died unasked
    recycles: int = 0                 # processes of this slot recycled (drained after a recycle)
    last_exit: str = ""

    @property
    def call_count(self) -> int:
        """Calls in progress on this slot, in this process or as its worker process reports them."""
        return len(self.calls) if self.calls or self.pid is None else self.reported_calls

    def status(self) -> dict[str, Any]:
        age = round(time.time() - self.started, 1) if self.started is not None and self.pid is not None else None
        return {"slot": self.number, "state": self.state, "generation": self.generation,
                "tcp_port": self.tcp_port, "tls_port": self.tls_port, "calls": self.call_count,
                "calls_total": self.calls_total + self.reported_total, "redirects": self.redirects, "pid": self.pid,
                "rss_bytes": self.rss_bytes, "age_seconds": age, "crashes": self.crashes,
                "recycles": self.recycles, "last_exit": self.last_exit}


class CallHandler(Protocol):
    """What takes a worker slot's dialog requests (um.worker's calls; tests plug in a stand-in)."""

    @property
    def METHODS(self) -> frozenset[str]: ...

    def handle(self, service: Any, slot: WorkerSlot, request: Request,
               peer: Peer) -> Response | None | Deferred[Response]: ...

    def end_all(self, slot: WorkerSlot, reason: str) -> None: ...


def next_daily(at: str, now: dt.datetime | None = None) -> float:
    """Seconds from `now` (local time) until the next HH:MM."""
    now = now or dt.datetime.now()
    hour, minute = (int(x) for x in at.split(":"))
    target = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= now:
        target += dt.timedelta(days=1)
    return (target - now).total_seconds()
