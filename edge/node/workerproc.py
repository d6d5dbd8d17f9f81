"""A UM worker process: one worker slot's SIP listeners, calls, media and voicemail, in its own process.

    python -m edge.node.workerproc --slot N [--config PATH] [--roles LIST] [--log-format text|json]

Started by the mailbox role's supervisor (um.worker.supervisor) with the
node's config; it serves slot N's ports (sip_ports[N-1], and
sip_dual_tls_ports[N-1] in dual mode) and its half of the RTP ports, and
talks to the supervisor over stdin/stdout (um.worker.child). It dies with
its parent (PR_SET_PDEATHSIG, and the end of stdin), storing the messages
being recorded. Logs go to stderr like the main process's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from typing import Any

from edge.node import logsetup
from edge.node.config import ConfigError, load, with_roles
from edge.node.schema import LOG_FORMATS, Config


def build_slot(config: Config, slot: int) -> tuple[Any, Any, Any]:
    """The worker process's service tree: the slot's SIP listeners and the worker (calls, media, store)."""
    from twisted.internet import reactor

    from edge.node import um_roles
    from edge.node.build import NodeTree, _sip_service
    from edge.node.listeners import listeners
    from edge.node.state import NodeState
    from um.callrouter import GatewayTable
    from um.netguard import RateLimiter
    from um.worker.service import WorkerService

    state = NodeState(config)
    root = NodeTree(state)
    state.sip_limiter = RateLimiter(config.limits.sip_requests_per_second, config.limits.sip_burst)
    calls = um_roles.worker_calls(config, lambda: state.config, slot=slot)
    built: list[tuple[Config, GatewayTable]] = []

    def gateways() -> GatewayTable:  # the configured UM IP gateways (the call router's table is elsewhere)
        if not built or built[0][0] is not state.config:
            built[:] = [(state.config, GatewayTable(state.config.callrouter.gateways))]
        return built[0][1]

    state.mailbox = um_roles.mailbox_service(config, um_roles.advertised_host(config), calls, reactor, gateways,
                                             serve_slot=slot)
    state.worker = WorkerService(calls.context)
    state.worker.setServiceParent(root)
    mine = state.mailbox.slots[slot - 1]
    for row in listeners(config, ("worker",)):
        if row.protocol == "SIP" and row.port in (mine.tcp_port, mine.tls_port):
            child = _sip_service(row, config, state)
            child.setName(f"{row.role}/{row.protocol.lower()}-{row.transport}-{row.port}")
            child.setServiceParent(root)
    return root, state, calls


def _emit(event: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def run(config: Config, slot: int, config_path: str | None) -> int:
    from edge.node.relayworkers import die_with_parent
    from edge.node.runtime import _raise_file_limit, install_reactor

    die_with_parent()
    _raise_file_limit()
    install_reactor()
    from twisted.internet import defer, reactor
    from twisted.internet.error import CannotListenError

    from edge.node import signals
    from edge.node.admin_calls import InProcessCalls
    from um.worker.child import ChildChannel

    tree, state, calls = build_slot(config, slot)
    stopping: list[bool] = []

    def stop() -> None:
        if not stopping:
            stopping.append(True)
            signals.stop_once(reactor)

    channel = ChildChannel(state.mailbox, slot, calls.context, InProcessCalls(lambda: calls), stop, reactor)
    try:
        tree.startService()
    except CannotListenError as error:
        _emit({"event": "failed", "error": str(error.socketError), "interface": error.interface or "*",
               "port": error.port})
        return 1
    except OSError as error:
        _emit({"event": "failed", "error": str(error)})
        return 1
    channel.attach(asyncio.get_event_loop())
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: defer.maybeDeferred(tree.stopService).addTimeout(3.0, reactor))

    def running() -> None:
        signals.install(reactor, state, config_path, drain=False)  # SIGHUP reloads; SIGTERM stops
        channel.ready()

    reactor.callWhenRunning(running)
    reactor.run(installSignalHandlers=True)  # type: ignore[call-arg]
    return 0


def main(argv: list[str] | None = None, load_config: Callable[[str | None], Config] = load) -> int:
    parser = argparse.ArgumentParser(prog="umedge-worker", description=__doc__.splitlines()[0])
    parser.add_argument("--slot", type=int, choices=(1, 2), required=True)
    parser.add_argument("--config")
    parser.add_argument("--roles", default="")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default=None)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.roles:
            config = with_roles(config, tuple(r for r in args.roles.split(",") if r))
    except ConfigError as error:
        _emit({"event": "failed", "error": f"config: {error}"})
        return 2
    logsetup.start(args.log_format or config.log.format, config.log.level)
    return run(config, args.slot, args.config)


if __name__ == "__main__":
    sys.exit(main())
