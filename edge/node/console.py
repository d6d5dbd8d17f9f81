"""Builds the operator's console for a node (edge.node.admin): called once by the composition root."""

from __future__ import annotations

from typing import Any

from edge.node.admin import Console, LocalSessions, Refusals, RefusingGate
from edge.node.admin_calls import InProcessCalls
from edge.node.admin_pool import PoolChannel
from edge.node.schema import Config
from edge.node.state import NodeState
from um.callcontrol import CallControl


def build_console(config: Config, state: NodeState, calls: CallControl | None = None,
                  name: str | None = None) -> Console:
    """The console over this node's TURN engine (its quota gate gets the refusals) and `calls`; `name` is
    the node's (or, for an extra relay process, the node's and its number: NODE/relayN)."""
    name = name or config.node.name
    refusals = Refusals()
    engine = state.engine
    if engine is not None:
        engine.quota = RefusingGate(engine.quota, refusals)
    sessions = LocalSessions(name, lambda: state.engine, refusals)
    fanout = None
    if config.pool.store != "memory" and "edge" in config.node.roles:
        pool = state.pool
        fanout = PoolChannel(config.pool.store, config.pool.key_prefix, name, refusals,
                             lambda: [m.name for m in pool.live] if pool is not None else [name])
    if calls is None and state.mailbox is not None and "worker" in config.node.roles:
        calls = worker_call_control(state)
    console = Console(name, sessions, calls, fanout)
    console.setName("console")
    return console


class WorkerCallControl:
    """The worker slots' calls, resolved at each question: a slot process supervisor (the mailbox service's
    `supervisor` or `call_handler`) that speaks CallControl, else the in-process worker (edge.node.admin_calls)."""

    def __init__(self, state: NodeState) -> None:
        self.state = state
        self.in_process = InProcessCalls(lambda: getattr(state.mailbox, "call_handler", None))

    def current(self) -> CallControl:
        mailbox = self.state.mailbox
        for candidate in (getattr(mailbox, "supervisor", None), getattr(mailbox, "call_handler", None)):
            if isinstance(candidate, CallControl):
                return candidate
        return self.in_process

    async def list_calls(self) -> list[dict[str, Any]]:
        return list(await self.current().list_calls())

    async def hang_up(self, call_id: str, reason: str) -> bool:
        return bool(await self.current().hang_up(call_id, reason))


def worker_call_control(state: NodeState) -> CallControl:
    return WorkerCallControl(state)


__all__ = ["WorkerCallControl", "build_console", "worker_call_control"]
