"""The UM worker as a Twisted service: starts and stops the worker context (store recovery, media clock).

The composition root builds the context and hands its call handler to the
mailbox service's worker slots; this service only runs it.
"""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from um.worker.context import WorkerContext

log = Logger(namespace="umedge.worker")


class WorkerService(service.Service):
    name = "um/worker"

    def __init__(self, context: WorkerContext) -> None:
        self.context = context

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
