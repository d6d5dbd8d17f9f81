"""Run the service tree: Twisted's reactor on asyncio's selector loop, signals, exit codes.

The reactor must be installed before anything imports
twisted.internet.reactor, so this module imports the service tree only
after install_reactor().
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from certs.pki import PkiError
from edge.node import logsetup, signals
from edge.node.schema import Config

log = Logger(namespace="umedge.runtime")
STOP_TIMEOUT = 4.0  # seconds: SIGTERM must end the process within 5


def install_reactor() -> asyncio.AbstractEventLoop:
    """Install Twisted's asyncio reactor on asyncio's own selector event loop (epoll on Linux).

    Not uvloop, on purpose. Every socket of the node (the UDP relays read
    with loop.add_reader, Twisted's TCP and TLS connections) is watched by
    the one loop's add_reader/add_writer, so the loop decides whether a
    stream the peer closed or reset ever reaches connectionLost. libuv stops
    watching a socket whose poll reports an error (EPOLLERR: an RST) and
    uvloop then closes its poll handle after calling the reader at most
    once (MagicStack/uvloop#552, twisted/twisted#11904). When that one read
    finds data that arrived with the RST, Twisted never reads again, never
    sees the reset, and the connection, its allocation, relay port, fd and
    per-source slot are held until the idle timeout; the next write to it
    raises "unable to perform operation on <UVPoll closed=True ...>". The
    selector loop reports an error as readable for as long as it lasts, so
    Twisted reads to the ECONNRESET and loses the connection
    (tests/limits/test_stream_resets.py). uvloop cannot serve only the UDP
    relay sockets: they share this one loop and thread with the streams.
    """
    if "twisted.internet.reactor" in sys.modules:
        from twisted.internet import reactor

        loop = getattr(reactor, "_asyncioEventloop", None)
        if loop is None:
            raise RuntimeError("a non-asyncio Twisted reactor is already installed")
        return loop
    loop = asyncio.SelectorEventLoop()
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
    from edge.node.relayworkers import READY_LINE, RelayWorkers, answer_on_stdin, die_with_parent

    try:
        # A node that cannot keep its state or certificates must fail before it creates anything.
        for what, directory in (("state", config.node.state_dir), ("certificates", config.node.certs_dir)):
            problem = _uncreatable(Path(directory))
            if problem:
                print(f"umedge: {what}: {directory}: {problem}", file=sys.stderr)
                return 1
        Path(config.node.state_dir).mkdir(parents=True, exist_ok=True)
        if turn_worker is not None:
            die_with_parent()
        else:
            for path in ensure_certificates(config):
                log.info("created {path}", path=path)
            if "edge" in config.node.roles:
                auth_secrets(config)  # a single node's generated secret exists from its first start
        tree = build(config, turn_worker=turn_worker)
    except PkiError as error:  # certificates: one line naming the file and the reason
        print(f"umedge: certificates: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # the state directory or a file in it
        where = f"{error.filename}: " if error.filename else ""
        print(f"umedge: state: {where}{error.strerror or error}", file=sys.stderr)
        return 1
    workers: RelayWorkers | None = None
    try:
        tree.startService()
    except CannotListenError as error:
        print(f"umedge: cannot listen on {error.interface or '*'}:{error.port}: {error.socketError}",
              file=sys.stderr)
        _stop_quietly(tree)
        return 1
    except PkiError as error:
        print(f"umedge: certificates: {error}", file=sys.stderr)
        _stop_quietly(tree)
        return 1
    except OSError as error:
        print(f"umedge: cannot start: {error}", file=sys.stderr)
        _stop_quietly(tree)
        return 1
    if turn_worker is None and "edge" in config.node.roles and config.edge.workers > 1:
        workers = RelayWorkers(config_path, config.edge.workers, log_format, config.node.name)
        problems = workers.wait_ready()
        if problems:
            for problem in problems:
                print(f"umedge: {problem}", file=sys.stderr)
            workers.stop()
            _stop_quietly(tree)
            return 1
        if config.pool.store == "memory" and tree.state.console is not None:
            workers.listen()
            tree.state.console.relays = workers  # the console asks them through their pipes

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
            console = tree.state.console
            if config.pool.store == "memory" and console is not None:
                answer_on_stdin(console.local, console.node)

    reactor.callWhenRunning(running)
    reactor.run(installSignalHandlers=True)  # type: ignore[call-arg]  # IReactorCore omits the keyword
    log.info("stopped")
    return 0


def _uncreatable(directory: Path) -> str | None:
    """Why `directory` can neither be used nor created (None if it can), without creating anything."""
    path = directory
    while not path.exists():
        if path.parent == path:
            break
        path = path.parent
    if not path.is_dir():
        return "Not a directory" if path == directory else f"{path} is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


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

