"""The UM worker as a Twisted service: builds the worker context from config and plugs the call
handler into the mailbox service's worker slots (um.mailbox.MailboxService.call_handler)."""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from um.worker.calls import WorkerCalls, WorkerContext, WorkerSettings

log = Logger(namespace="umedge.worker")


class WorkerService(service.Service):
    name = "um/worker"

    def __init__(self, config: Any, mailbox: Any, roles: Any = None) -> None:
        """`roles` (um.callrouter.UmRoles) carries the config a SIGHUP reloads: the directory follows it."""
        self.config = config
        source = (lambda: roles.config) if roles is not None else None
        self.context = WorkerContext(WorkerSettings.from_config(config), config, source)
        self.calls = WorkerCalls(self.context)
        self.mailbox = mailbox
        mailbox.call_handler = self.calls

    def startService(self) -> None:
        service.Service.startService(self)
        self.context.start()
        s = self.context.settings
        log.info("UM worker: media {mode}, RTP ports {low}-{high}, voicemail in {store}",
                 mode="via the edge (TURN, token " + s.media_identity + ")" if s.media_via_edge else "direct",
                 low=s.rtp_port_min, high=s.rtp_port_max, store=str(self.context.store.root))

    def stopService(self) -> Any:
        service.Service.stopService(self)
        return defer.Deferred.fromFuture(asyncio.ensure_future(self.context.stop()))
