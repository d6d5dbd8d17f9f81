"""Builds the operator's console for a node (edge.node.admin): called once by the composition root."""

from __future__ import annotations

from edge.node.admin import Console, LocalSessions, Refusals, RefusingGate
from edge.node.admin_calls import InProcessCalls
from edge.node.admin_pool import PoolChannel
from edge.node.schema import Config
from edge.node.state import NodeState
from um.callcontrol import CallControl


def build_console(config: Config, state: NodeState, calls: CallControl | None = None) -> Console:
    """The console over this node's TURN engine (its quota gate gets the refusals) and `calls`."""
    name = config.node.name
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


def worker_call_control(state: NodeState) -> CallControl:
    """The worker slots' calls: the handler itself when it speaks CallControl (a process supervisor),
    else the in-process worker's calls (edge.node.admin_calls)."""
    handler = getattr(state.mailbox, "call_handler", None)
    if isinstance(handler, CallControl):
        return handler
    return InProcessCalls(lambda: getattr(state.mailbox, "call_handler", None))


__all__ = ["build_console", "worker_call_control"]
