"""The UM roles' Twisted services: what runs on timers around the sans-socket cores.

The composition root (edge.node.build) builds the cores (CallRouter,
MailboxService, the worker's calls) and hands them to these services; the
services only schedule: probes, directory reloads, gateway name resolution
and the daily worker recycle.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from um.callrouter import CallRouter, GatewayTable
from um.config import CallRouterConfig
from um.directory import MailboxServer, load_directory
from um.mailbox import MailboxService
from um.sip.message import Request
from um.sip.transaction import make_request
from um.sip.uri import bracket
from um.slots import next_daily

log = Logger(namespace="umedge.callrouter")


class CallRouterService(service.Service):
    """Probes the mailbox servers, reloads the directory (timer and SIGHUP), resolves gateway names.

    The router's SIP client (given to it by the composition root) is closed when the service stops.
    """

    name = "um/callrouter"

    def __init__(self, router: CallRouter, config: CallRouterConfig, host: str) -> None:
        self.router = router
        self.config = config
        self.host = host
        self._timers: list[task.LoopingCall] = []

    def reconfigure(self, config: CallRouterConfig) -> None:
        """SIGHUP: take the new gateways, hunt groups and directory."""
        self.config = config
        self.router.gateways = GatewayTable(config.gateways)
        self.router.set_directory(self.router.state.directory, config.hunt_groups)
        self.reload()

    def reload(self) -> None:
        """Re-read the directory file and re-resolve gateway FQDNs (timer and SIGHUP)."""
        try:
            self.router.set_directory(load_directory(self.config))
            directory = self.router.state.directory
            log.info("call router: directory loaded ({n} mailboxes, {s} remote servers)",
                     n=len(directory.mailboxes), s=len(directory.servers))
        except Exception as error:  # noqa: BLE001 - keep serving the previous directory
            log.error("call router: directory reload failed, keeping the previous one: {error}", error=error)
        self._resolve_gateways()

    def _resolve_gateways(self) -> None:
        names = self.router.gateways.fqdns
        if not names:
            return

        async def resolve() -> dict[str, list[str]]:
            import dns.asyncresolver
            import dns.exception

            found: dict[str, list[str]] = {}
            for name in names:
                addresses: list[str] = []
                for kind in ("A", "AAAA"):
                    try:
                        answer = await dns.asyncresolver.resolve(name, kind, lifetime=5)
                        addresses += [r.to_text() for r in answer]
                    except dns.exception.DNSException:
                        continue
                found[name] = addresses
            return found

        def done(found: dict[str, list[str]]) -> None:
            self.router.gateways.set_resolved(found)
            log.info("call router: gateway names resolved: {found}", found=found)

        deferred = defer.Deferred.fromFuture(asyncio.ensure_future(resolve()))
        deferred.addCallbacks(done, lambda f: log.warn("gateway resolution failed: {why}", why=f.getErrorMessage()))

    def _make_options(self, server: MailboxServer) -> Request:
        scheme = "sips" if server.transport == "tls" else "sip"
        uri = f"{scheme}:{bracket(server.address)}:{server.port}"  # an IPv6 server in [ ] (RFC 3261 §19.1.1)
        return make_request("OPTIONS", uri, via_host=self.host, transport=server.transport,
                            from_uri=f"sip:callrouter@{self.host}", to_uri=uri, extra=[("Max-Forwards", "70")])

    def startService(self) -> None:
        super().startService()
        probe = task.LoopingCall(lambda: self.router.probe_all(self._make_options))
        probe.start(self.config.probe_interval, now=True)
        reload = task.LoopingCall(self.reload)
        reload.start(self.config.directory_reload_interval, now=False)
        self._timers += [probe, reload]
        self._resolve_gateways()

    def stopService(self) -> Any:
        for timer in self._timers:
            if timer.running:
                timer.stop()
        self._timers.clear()
        if self.router.client is not None:
            self.router.client.close()
        return super().stopService()


class DailyRecycle(service.Service):
    """`[mailbox] recycle_time`: recycle the worker once a day at HH:MM (local time)."""

    name = "um/recycle"

    def __init__(self, mailbox: MailboxService, at: Callable[[], str]) -> None:
        self.mailbox = mailbox
        self._at = at  # read at each scheduling, so a SIGHUP's new time applies from the next run
        self._call: Any = None

    def _schedule(self) -> None:
        from twisted.internet import reactor

        at = self._at()
        if at:
            self._call = reactor.callLater(next_daily(at), self._run)

    def _run(self) -> None:
        try:
            outcome = self.mailbox.recycle()
        except RuntimeError as error:
            log.warn("scheduled worker recycle skipped: {error}", error=error)
        else:
            if isinstance(outcome, defer.Deferred):  # worker processes: done once the fresh one took over
                outcome.addErrback(lambda failure: log.warn("scheduled worker recycle failed: {error}",
                                                            error=failure.getErrorMessage()))
        self._schedule()

    def startService(self) -> None:
        super().startService()
        self._schedule()

    def stopService(self) -> Any:
        if self._call is not None and self._call.active():
            self._call.cancel()
        return super().stopService()
