"""Builds the operator's console for a node (edge.node.admin): called once by the composition root."""

from __future__ import annotations

from edge.node.admin import Console, LocalSessions, Refusals, RefusingGate
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
    console = Console(name, sessions, calls, fanout)
    console.setName("console")
    return console


__all__ = ["build_console"]
