"""What the node does on signals: SIGHUP reloads, SIGTERM drains, SIGINT (or a second SIGTERM) stops.

SIGHUP re-reads the config file: secrets (rotation), token policy, gateways,
hunt groups and the directory change without a restart; an invalid file is
reported and the running config kept. It also reloads the node certificate
and the pool CA into every TLS listener (certs.tls.ServerOptions). SIGTERM stops taking new calls and
allocations and lets the active ones run for up to [node] drain_seconds,
exiting as soon as none is left.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from typing import Any

from twisted.internet.error import ReactorNotRunning
from twisted.logger import Logger

from certs import tls
from edge.node.config import ConfigError, load, with_roles
from edge.node.state import NodeState

log = Logger(namespace="umedge.signals")
DRAIN_POLL = 0.25


def install(reactor: Any, state: NodeState, config_path: str | None, drain: bool = True,
            on_reload: Callable[[], None] | None = None) -> None:
    """Install the handlers on the running asyncio loop (after Twisted's own, replacing its SIGTERM)."""
    loop = asyncio.get_event_loop()
    loop.add_signal_handler(signal.SIGHUP, lambda: reload(state, config_path, on_reload))
    if drain:
        loop.add_signal_handler(signal.SIGTERM, lambda: terminate(reactor, state))


def reload(state: NodeState, config_path: str | None, on_reload: Callable[[], None] | None = None) -> None:
    reload_certificates()
    try:
        fresh = with_roles(load(config_path), state.config.node.roles)
    except ConfigError as error:
        for problem in error.problems:
            log.error("SIGHUP: config not reloaded: {problem}", problem=str(problem))
        return
    try:
        state.reconfigure(fresh)
    except Exception:  # noqa: BLE001 - a reload must never take the node down
        log.failure("SIGHUP: reload failed; the node keeps running")
        return
    log.info("SIGHUP: reloaded {source} (secrets, token policy, gateways, hunt groups, directory)",
             source=fresh.source)
    if on_reload is not None:
        on_reload()


def reload_certificates() -> None:
    """SIGHUP: every TLS listener rebuilds its context from the certificate files (new connections get
    the renewed node certificate and CA; open ones keep theirs). One that cannot keeps its old context."""
    renewed, failed = tls.reload_server_options()
    for problem in failed:
        log.error("SIGHUP: certificate not reloaded, the old one stays in use: {problem}", problem=problem)
    log.info("SIGHUP: {renewed} TLS listener context(s) reloaded from the certificate files", renewed=renewed)


def stop_once(reactor: Any) -> None:
    """Stop the reactor; a second SIGTERM, the drain's deadline and a parent's stop may all ask."""
    try:
        reactor.stop()
    except ReactorNotRunning:
        pass


def terminate(reactor: Any, state: NodeState) -> None:
    seconds = state.config.node.drain_seconds
    busy = state.busy()
    if state.draining or not seconds or not busy:
        log.info("SIGTERM: stopping" + (" now (second SIGTERM)" if state.draining else ""))
        stop_once(reactor)
        return
    state.start_drain()
    log.info("SIGTERM: draining {busy} active call(s) and allocation(s) for up to {seconds}s "
             "(new ones are refused)", busy=busy, seconds=seconds)
    deadline = reactor.seconds() + seconds

    def check() -> None:
        left = state.busy()
        if not left or reactor.seconds() >= deadline:
            log.info("drain finished ({left} still active): stopping", left=left)
            stop_once(reactor)
        else:
            reactor.callLater(DRAIN_POLL, check)

    reactor.callLater(DRAIN_POLL, check)
