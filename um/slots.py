"""The UM worker slots of a mailbox server, and what handles the calls a slot takes.

Two slots follow the seed's port pairs; a recycle moves new calls to the
other slot while the old one finishes its calls.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from um.sip.dialog import Dialog
from um.sip.message import Request, Response
from um.sip.stream import Peer

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred


@dataclass
class WorkerSlot:
    """One UM worker process slot: its ports, its state and its calls."""

    number: int               # 1 or 2
    tcp_port: int | None      # unsecured SIP (None in tls mode)
    tls_port: int | None      # MTLS SIP (None in tcp mode)
    state: str = "idle"       # active / draining / idle
    generation: int = 0
    calls: dict[tuple[str, str | None, str | None], Dialog] = field(default_factory=dict)
    redirects: int = 0
    calls_total: int = 0
    started: float | None = None
    draining_since: float | None = None

    def status(self) -> dict[str, Any]:
        return {"slot": self.number, "state": self.state, "generation": self.generation,
                "tcp_port": self.tcp_port, "tls_port": self.tls_port, "calls": len(self.calls),
                "calls_total": self.calls_total, "redirects": self.redirects}


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
