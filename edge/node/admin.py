"""The operator's console on a node: list and end TURN allocations (here or pool-wide), refuse a user's
new ones until a given time, list and hang up calls.

Every node answers for its own allocations and calls. A pool-wide question
(the default on a Redis pool) goes to every live node through the pool's
Redis (edge.node.admin_pool), never through files; on a memory pool it is
this node alone. Whoever asks is named in the log line of every kill and
hang-up (a pool-CA certificate's common name or an admin key's id).

A refused user's Allocates get 486 (Allocation Quota Reached) until the
refusal runs out: the refusal sits in front of the engine's quota gate, so
every dialect (RFC 8656, MS-TURN) and every Allocate path meets it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.application import service
from twisted.logger import Logger

from edge.turn.allocation import Allocation
from edge.turn.engine import QuotaGate, TurnEngine
from um.callcontrol import CallControl
from um.sip.uri import bracket

log = Logger(namespace="umedge.admin")

MAX_SESSIONS = 5000  # per node in one answer: a bound on the reply's size
MAX_REFUSAL_SECONDS = 30 * 86400
MAX_REFUSALS = 10_000


class Refusals:
    """identity -> (until, by): users whose new allocations are refused until `until` (epoch seconds)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._until: dict[str, tuple[float, str]] = {}
        self._clock = clock
        self.refused = 0  # Allocates refused for a refusal (metrics)

    def add(self, identity: str, until: float, by: str) -> None:
        now = self._clock()
        self._prune(now)
        if until <= now:
            self._until.pop(identity, None)
            return
        if identity not in self._until and len(self._until) >= MAX_REFUSALS:
            return  # bounded; the oldest run out first
        self._until[identity] = (min(until, now + MAX_REFUSAL_SECONDS), by)

    def active(self, identity: str) -> bool:
        entry = self._until.get(identity)
        if entry is None:
            return False
        if entry[0] <= self._clock():
            del self._until[identity]
            return False
        return True

    def _prune(self, now: float) -> None:
        for identity in [i for i, (until, _) in self._until.items() if until <= now]:
            del self._until[identity]

    def snapshot(self) -> list[dict[str, Any]]:
        self._prune(self._clock())
        return [{"user": identity, "until": until, "by": by} for identity, (until, by) in sorted(self._until.items())]


class RefusingGate:
    """The engine's quota gate with the console's refusals in front (edge.turn.engine.QuotaGate)."""

    def __init__(self, inner: QuotaGate | None, refusals: Refusals) -> None:
        self.inner, self.refusals = inner, refusals

    def acquire(self, identity: str) -> bool | asyncio.Future[bool]:
        if self.refusals.active(identity):
            self.refusals.refused += 1
            return False
        return self.inner.acquire(identity) if self.inner is not None else True

    def release(self, identity: str) -> None:
        if self.inner is not None:
            self.inner.release(identity)


def session_id(node: str, allocation: Allocation) -> str:
    """NODE:RELAYPORT: unique in the pool while the allocation lives (a relay port has one allocation)."""
    relay = next(iter(allocation.relays.values()), None)
    return f"{node}:{relay.address[1] if relay is not None else 0}"


def describe(node: str, allocation: Allocation, engine: TurnEngine, now: float) -> dict[str, Any]:
    """One allocation as `umedge sessions list` shows it."""
    client = allocation.client
    dialect = allocation.dialect
    return {
        "id": session_id(node, allocation), "node": node,
        "client": f"{bracket(client.address[0])}:{client.address[1]}", "transport": client.kind,
        "user": allocation.identity,
        "relay": [f"{bracket(a[0])}:{a[1]}" for a in (engine.advertised(r) for r in allocation.relays.values())],
        "age": round(now - allocation.created, 1) if allocation.created else None,
        "lifetime_left": round(max(0.0, allocation.expires - now), 1),
        "permissions": len(allocation.permissions), "channels": len(allocation.channels),
        "packets_to_peer": allocation.packets_to_peer, "bytes_to_peer": allocation.bytes_to_peer,
        "packets_to_client": allocation.packets_to_client, "bytes_to_client": allocation.bytes_to_client,
        "dialect": "rfc8656" if dialect is None else str(getattr(dialect, "name", type(dialect).__name__)),
    }


class LocalSessions:
    """This node's allocations: list them, end them."""

    def __init__(self, node: str, engine: Callable[[], TurnEngine | None], refusals: Refusals) -> None:
        self.node, self._engine, self.refusals = node, engine, refusals

    def find(self, user: str | None = None) -> list[dict[str, Any]]:
        engine = self._engine()
        if engine is None:
            return []
        now = engine.now
        found = [describe(self.node, a, engine, now) for a in list(engine.allocations.values())
                 if user is None or a.identity == user]
        return found[:MAX_SESSIONS]

    def kill(self, by: str, session: str | None = None, user: str | None = None,
             until: float | None = None) -> list[str]:
        """End one allocation (by id) or all of a user's (and refuse the user's new ones until `until`)."""
        if user is not None and until is not None:
            self.refusals.add(user, until, by)
            if until > time.time():
                log.warn("admin: {by} refused new allocations for {user} until {until}", by=by, user=user,
                         until=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until)))
        engine = self._engine()
        if engine is None:
            return []
        killed = []
        for allocation in list(engine.allocations.values()):
            ident = session_id(self.node, allocation)
            if (session is not None and ident == session) or (user is not None and allocation.identity == user):
                client = allocation.client
                engine.delete_allocation(allocation, f"ended by {by}")
                killed.append(ident)
                log.warn("admin: {by} ended allocation {id} of {user} (client {client} over {transport})",
                         by=by, id=ident, user=allocation.identity, transport=client.kind,
                         client=f"{client.address[0]}:{client.address[1]}")
        return killed


Fanout = Callable[[str, dict[str, Any]], Awaitable[tuple[list[dict[str, Any]], list[str]]]]


class Console(service.Service):
    """What /v1/admin/* does: the local parts, plus the pool fan-out when the pool is on Redis."""

    def __init__(self, node: str, sessions: LocalSessions, calls: CallControl | None,
                 fanout: Any = None) -> None:
        self.node, self.sessions, self.calls = node, sessions, calls
        self.fanout = fanout  # edge.node.admin_pool.PoolChannel, or None: this node alone
        # edge.node.relayworkers.RelayWorkers without a Redis pool: this node's extra relay processes
        self.relays: Any = None
        if fanout is not None:
            fanout.handler = self.local

    def startService(self) -> None:
        super().startService()
        if self.fanout is not None:
            self.fanout.start()

    def stopService(self) -> Any:
        super().stopService()
        if self.fanout is not None:
            return self.fanout.stop()
        return None

    # --- one node's answer (here, or for a pool request from another node) -----------

    async def local(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        by = str(args.get("by", "?"))
        if op == "sessions":
            user = args.get("user")
            return {"sessions": self.sessions.find(str(user) if user is not None else None)}
        if op == "kill":
            until = args.get("until")
            killed = self.sessions.kill(by, session=args.get("id"), user=args.get("user"),
                                        until=float(until) if until is not None else None)
            return {"killed": killed}
        if op == "calls":
            calls = await self.calls.list_calls() if self.calls is not None else []
            return {"calls": [{**call, "id": f"{self.node}/{call.get('id')}", "node": self.node} for call in calls]}
        if op == "hangup":
            if self.calls is None:
                return {"hung_up": []}
            call_id, reason = str(args.get("id")), str(args.get("reason") or "ended by the operator")
            if not call_id.startswith(self.node + "/"):
                return {"hung_up": []}
            done = await self.calls.hang_up(call_id.removeprefix(self.node + "/"), reason)
            if done:
                log.warn("admin: {by} hung up call {id} ({reason})", by=by, id=call_id, reason=reason)
            return {"hung_up": [call_id] if done else []}
        raise ValueError(f"unknown console operation {op!r}")

    # --- the question for the pool (or this node alone) ------------------------------

    async def ask(self, op: str, args: dict[str, Any], pool: bool = True) -> dict[str, Any]:
        """{"nodes": [node, ...answered], "missing": [...], op's lists merged}."""
        degraded = None
        answers: list[dict[str, Any]] = []
        missing: list[str] = []
        if pool and self.fanout is not None:
            try:
                answers, missing = await self.fanout.request(op, args)
            except Exception as error:  # noqa: BLE001 - the pool's Redis is down: this node still answers
                degraded = f"pool not reachable ({type(error).__name__}): this node only"
                missing = sorted(set(self.fanout.live_names()) - {self.node})
        elif self.relays is not None:  # no Redis pool: this node's relay processes through their pipes
            answers, missing = await self.relays.ask(op, args)
        if not any(answer.get("node") == self.node for answer in answers):
            # this node's own listener not (yet) subscribed, or Redis down: answer from here
            answers.append({"node": self.node, **await self.local(op, args)})
            missing = [name for name in missing if name != self.node]
        merged: dict[str, Any] = {"nodes": sorted(str(a.get("node")) for a in answers), "missing": missing}
        if degraded:
            merged["degraded"] = degraded
        errors = {str(a.get("node")): a["error"] for a in answers if "error" in a}
        if errors:
            merged["errors"] = errors
        for answer in answers:
            for key, value in answer.items():
                if isinstance(value, list):
                    merged.setdefault(key, []).extend(value)
        return merged


__all__ = ["Console", "LocalSessions", "Refusals", "RefusingGate", "describe", "session_id"]
