"""Message-waiting indication for the UM service: subscriptions, unsolicited NOTIFYs, and the store watch.

Runs in the node's main process next to the UM service. It learns about
changes by watching the voicemail store on disk (each watched mailbox
folder's mtime, every `POLL` seconds), not by callbacks from the worker, so
a worker in a child process, the phone menu, the web API and the IMAP sync
all move the light alike. NOTIFYs go out through the project's one SIP
client (um.sip.uac), to each subscriber's Contact, and to `[mwi]
notify_targets` (gateways/IP-PBXs that do not subscribe) for every mailbox
of their dial plan.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.application import service
from twisted.internet import task
from twisted.logger import Logger

from um.mwi.subscriptions import DigestGate, Subscription, SubscriptionTable, hop
from um.mwi.summary import CONTENT_TYPE, EVENT, body
from um.sip.message import Headers, Request, Response, make_response
from um.sip.stream import Peer
from um.sip.uac import UserAgentClient
from um.sip.uri import split_header_values
from um.worker.store import VoicemailStore

log = Logger(namespace="umedge.mwi")

POLL = 0.25
NOTIFY_TIMEOUT = 8.0
METHODS = ("SUBSCRIBE",)


class MwiService(service.Service):
    name = "um/mwi"
    METHODS = METHODS

    def __init__(self, store: VoicemailStore, table: SubscriptionTable, client: UserAgentClient, *,
                 mailbox_of: Callable[[str | None], str | None],
                 trusted: Callable[[Peer], bool],
                 gate: DigestGate | None = None,
                 refused: Callable[[], None] | None = None,
                 targets: Callable[[], list[tuple[tuple[str, int, str], list[str]]]] | None = None,
                 clock: Any = None) -> None:
        self.store, self.table, self.client = store, table, client
        self.mailbox_of, self.trusted, self.gate = mailbox_of, trusted, gate
        # The UM service counts every stranger it refuses in one place (umedge_sip_untrusted_total).
        self.refused = refused or (lambda: None)
        self.targets = targets or (lambda: [])
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self._stamps: dict[str, int] = {}
        self._target_sent: dict[tuple[tuple[str, int, str], str], tuple[int, ...]] = {}
        self._target_busy: set[tuple[str, int, str]] = set()
        self._loop: task.LoopingCall | None = None

    # --- the UM service's hook -------------------------------------------------------------------
    def handle(self, request: Request, peer: Peer) -> Response | None:
        """A SUBSCRIBE to the UM service (5062/5063)."""
        now = time.time()
        trusted = self.trusted(peer)
        if not trusted:
            if self.gate is None:
                self.counters["untrusted"] += 1
                self.refused()
                return make_response(request, 403, "Forbidden")
            ruri = request.ruri
            mailbox = self.mailbox_of(getattr(ruri, "user", None))
            if mailbox is None:
                return self.gate.challenge(request, now)  # the same answer as for a real one: nothing leaks
            refusal = self.gate.check(request, mailbox, now)
            if refusal is not None:
                if refusal.status == 403:
                    self.counters["auth_failed"] += 1
                return refusal
        decision = self.table.subscribe(request, now, self.mailbox_of, source=f"{peer.host}")
        subscription = decision.subscription
        if subscription is not None and not trusted:
            # A phone that authenticated gets its NOTIFYs at the address it came from, whatever its Contact
            # names: a password must not let anyone aim our NOTIFYs at other hosts.
            contact = hop(split_header_values(request.headers.get("Contact") or "")[0]) or subscription.target
            subscription.routes = []  # nor through a route set of its choosing
            subscription.target = (peer.host, contact[1], contact[2])
        if decision.response.status == 200 and subscription is not None:
            self.counters["subscribes"] += 1
            if decision.ending:
                self.table.remove(subscription)
                self._send(subscription, reason="timeout")
            else:
                self._watch(subscription.mailbox)
                subscription.sent = None
                self._schedule(lambda: self._send(subscription))
        return decision.response

    def _schedule(self, work: Callable[[], None]) -> None:
        if self.clock is not None:
            self.clock.callLater(0, work)
        else:
            asyncio.get_event_loop().call_soon(work)

    # --- the service -----------------------------------------------------------------------------
    def startService(self) -> None:
        service.Service.startService(self)
        self._loop = task.LoopingCall(self._tick)
        if self.clock is not None:
            self._loop.clock = self.clock
        self._loop.start(POLL, now=True)

    def stopService(self) -> Any:
        service.Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.client.close()

    def _watch(self, mailbox: str) -> None:
        self._stamps.setdefault(mailbox, self.store.stamp(mailbox))

    def _tick(self) -> None:
        now = time.time()
        for subscription in self.table.expired(now):
            self.table.remove(subscription)
            self.counters["expired"] += 1
            self._send(subscription, reason="timeout")
        watched = self.table.mailboxes()
        targets = self.targets()
        for _, mailboxes in targets:
            watched.update(mailboxes)
        for mailbox in list(self._stamps):
            if mailbox not in watched:
                del self._stamps[mailbox]
        changed = []
        for mailbox in watched:
            stamp = self.store.stamp(mailbox)
            if self._stamps.get(mailbox) != stamp:
                first = mailbox not in self._stamps
                self._stamps[mailbox] = stamp
                if not first or targets:
                    changed.append(mailbox)
        for mailbox in changed:
            counts = self.store.summary(mailbox)
            for subscription in self.table.of(mailbox):
                if subscription.sent != counts:
                    self._send(subscription)
            for target, mailboxes in targets:
                if mailbox in mailboxes and self._target_sent.get((target, mailbox)) != counts:
                    self._unsolicited(target, mailbox, counts)

    # --- NOTIFY ----------------------------------------------------------------------------------
    def _send(self, subscription: Subscription, reason: str | None = None) -> None:
        if subscription.busy and reason is None:
            subscription.again = True
            return
        counts = self.store.summary(subscription.mailbox)
        request = self.table.notify(subscription, body(counts[0], counts[1], subscription.account, *counts[2:]),
                                    time.time(), reason)
        subscription.busy = True
        subscription.sent = counts
        host, port, transport = subscription.target

        def done(response: Response | BaseException) -> None:
            subscription.busy = False
            if isinstance(response, Response) and 200 <= response.status < 300:
                self.counters["notify_ok"] += 1
                if subscription.again and not subscription.ended:
                    subscription.again = False
                    if self.store.summary(subscription.mailbox) != subscription.sent:
                        self._send(subscription)
                return
            self.counters["notify_failed"] += 1
            why = f"{response.status} {response.reason}" if isinstance(response, Response) else str(response)
            if not subscription.ended:  # 481 or no answer: the subscriber is gone (RFC 6665 §4.1.3)
                log.info("MWI: subscription of {source} for {mailbox} ended: NOTIFY got {why}",
                         source=subscription.source, mailbox=subscription.mailbox, why=why[:200])
                self.table.remove(subscription)

        self._request(host, port, transport, request, done)

    def _unsolicited(self, target: tuple[str, int, str], mailbox: str, counts: tuple[int, ...]) -> None:
        """An out-of-dialog NOTIFY to a PBX that does not subscribe (as Exchange does)."""
        key = (target, mailbox)
        self._target_sent[key] = counts
        host, port, transport = target
        domain = self.table.domain
        account = f"sip:{mailbox}@{domain}"
        headers = Headers([
            ("Via", "SIP/2.0/TCP placeholder"), ("Max-Forwards", "70"),
            ("From", f"<sip:voicemail@{domain}>;tag={secrets.token_hex(6)}"), ("To", f"<{account}>"),
            ("Call-ID", f"{secrets.token_hex(10)}@{domain}"), ("CSeq", "1 NOTIFY"),
            ("Contact", f"<{self.table.contact}>"), ("Event", EVENT),
            ("Subscription-State", "active"), ("Content-Type", CONTENT_TYPE)])
        scheme = "sips" if transport == "tls" else "sip"
        request = Request("NOTIFY", f"{scheme}:{mailbox}@{host}:{port};transport={transport}", headers,
                          body(counts[0], counts[1], account, *counts[2:]))

        def done(response: Response | BaseException) -> None:
            if isinstance(response, Response) and 200 <= response.status < 300:
                self.counters["unsolicited_ok"] += 1
            else:
                self.counters["unsolicited_failed"] += 1
                self._target_sent.pop(key, None)  # tried again at the next change
                why = f"{response.status} {response.reason}" if isinstance(response, Response) else str(response)
                log.warn("MWI: NOTIFY for {mailbox} to {host}:{port} failed: {why}", mailbox=mailbox, host=host,
                         port=port, why=why[:200])

        self._request(host, port, transport, request, done)

    def _request(self, host: str, port: int, transport: str, request: Request,
                 done: Callable[[Response | BaseException], None]) -> None:
        future = asyncio.ensure_future(self.client.request(host, port, transport, request, timeout=NOTIFY_TIMEOUT))

        def settled(result: asyncio.Future[Response]) -> None:
            error = result.exception() if not result.cancelled() else ConnectionError("cancelled")
            done(error if error is not None else result.result())

        future.add_done_callback(settled)

    # --- what others read ------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"subscriptions": len(self.table.by_key), "watched_mailboxes": len(self._stamps),
                "counters": dict(self.counters)}


__all__ = ["METHODS", "MwiService"]
