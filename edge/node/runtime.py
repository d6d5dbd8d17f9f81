"""Run the service tree: Twisted's reactor on an asyncio (uvloop) loop, signals, exit codes.

The reactor must be installed before anything imports
twisted.internet.reactor, so this module imports the service tree only
after install_reactor().
"""

from __future__ import annotations

import asyncio
import signal
import sys

from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from edge.node import logsetup, signals
from edge.node.schema import Config

log = Logger(namespace="umedge.runtime")
STOP_TIMEOUT = 4.0  # seconds: SIGTERM must end the process within 5


def install_reactor() -> asyncio.AbstractEventLoop:
    """Install Twisted's asyncio reactor on uvloop (plain asyncio where uvloop is absent)."""
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        loop = getattr(reactor, "_asyncioEventloop", None)
        if loop is None:
            raise RuntimeError("a non-asyncio Twisted reactor is already installed")
        return loop
    try:
        import uvloop

        loop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    from twisted.internet import asyncioreactor

    asyncioreactor.install(loop)
    return loop


def serve(config: Config, log_format: str = "text", config_path: str | None = None,
          turn_worker: int | None = None) -> int:
    """Start every listener of config.node.roles and run until SIGTERM/SIGINT; 0 on a clean stop.

    With `turn_worker` set this process is one of the extra relay processes
    of `[edge] workers`: it serves the TURN ports only.
    """
    logsetup.start(log_format, config.log.level)
    _raise_file_limit()
    install_reactor()
    from twisted.internet import reactor

    from edge.auth.secrets import auth_secrets
    from edge.node.build import build
    from edge.node.identity import ensure_certificates
    from edge.node.relayworkers import READY_LINE, RelayWorkers, die_with_parent

    if turn_worker is not None:
        die_with_parent()
    else:
        for path in ensure_certificates(config):
            log.info("created {path}", path=path)
        if "edge" in config.node.roles:
            auth_secrets(config)  # a single node's generated secret exists from its first start
    tree = build(config, turn_only=turn_worker is not None)
    workers: RelayWorkers | None = None
    try:
        tree.startService()
    except CannotListenError as error:
        print(f"umedge: cannot listen on {error.interface or '*'}:{error.port}: {error.socketError}",
              file=sys.stderr)
        _stop_quietly(tree)
        return 1
    except OSError as error:
        print(f"umedge: cannot start: {error}", file=sys.stderr)
        _stop_quietly(tree)
        return 1
    if turn_worker is None and "edge" in config.node.roles and config.edge.workers > 1:
        workers = RelayWorkers(config_path, config.edge.workers, log_format)
        problems = workers.wait_ready()
        if problems:
            for problem in problems:
                print(f"umedge: {problem}", file=sys.stderr)
            workers.stop()
            _stop_quietly(tree)
            return 1

    def stop_tree():
        log.info("stopping")
        from twisted.internet import defer

        if workers is not None:
            workers.stop()
        return defer.maybeDeferred(tree.stopService).addTimeout(STOP_TIMEOUT, reactor)

    reactor.addSystemEventTrigger("before", "shutdown", stop_tree)

    def forward_reload() -> None:
        if workers is not None:
            workers.signal(signal.SIGHUP)  # each relay process reloads its own copy

    def running() -> None:
        # Twisted has installed its SIGINT/SIGTERM handlers by now; ours replace SIGTERM (drain).
        signals.install(reactor, tree.state, config_path, drain=turn_worker is None, on_reload=forward_reload)
        if turn_worker is None:
            _announce(config)  # only now: readiness means the signal handlers are in place
        else:
            print(READY_LINE, flush=True)

    reactor.callWhenRunning(running)
    reactor.run(installSignalHandlers=True)  # type: ignore[call-arg]  # IReactorCore omits the keyword
    log.info("stopped")
    return 0


def _raise_file_limit(wanted: int = 65536) -> None:
    """An edge holds a socket per connection and per relay: lift the soft fd limit toward the hard one."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _announce(config: Config) -> None:
    """Print the listener table (stdout) and log one line per listener (stderr)."""
    from edge.node.listeners import format_table, listeners

    rows = listeners(config)
    print(f"umedge node {config.node.name} ({config.node.fqdn}) listening:", flush=True)
    print(format_table(rows), flush=True)
    for row in rows:
        log.info("{what} role={role} protocol={protocol} transport={transport} port={ports} "
                 "address={address} secured={secured}",
                 what="port range" if row.is_range else "listening", role=row.role,
                 protocol=row.protocol, transport=row.transport, ports=row.ports,
                 address=row.address, secured=row.secured)
    log.info("started roles={roles}", roles=",".join(config.node.roles))
    print(f"ready: {len(rows)} listeners, roles {','.join(config.node.roles)}", flush=True)


def _stop_quietly(tree) -> None:
    try:
        tree.stopService()
    except Exception:  # noqa: BLE001 - best effort while already failing
        pass

