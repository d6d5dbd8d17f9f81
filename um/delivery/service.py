"""The delivery service: drains the voicemail store's outbox into the mail server, in the node's main process.

It learns about new voicemails by watching the outbox folder (polled every
`POLL` seconds; a listing only when the folder's mtime changed or an entry
is due), never by a callback from the worker, so it works the same whether
the worker runs in this process or in a child. Each attempt runs in a
thread (smtplib blocks): build the MIME message, hand it over, then record
the outcome in the entry (um.delivery.outbox). Trouble that concerns every
message (a wrong password, an unverifiable certificate, the server down) is
logged once a minute per kind and counted; the messages stay queued.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import task, threads
from twisted.logger import Logger

from um.delivery import message as mime
from um.delivery.imapsync import ImapAccess, ImapSync
from um.delivery.outbox import Entry, Outbox, pid_alive
from um.delivery.transport import Outcome, Server, send
from um.worker.store import StoreError, VoicemailStore

log = Logger(namespace="umedge.delivery")

POLL = 0.25
CONCURRENCY = 2
LOG_EVERY = 60.0


@dataclass(frozen=True)
class Recipient:
    email: str
    language: str = "en"


@dataclass(frozen=True)
class Policy:
    retry_for: float        # seconds
    initial: float
    ceiling: float
    max_bytes: int
    audio_format: str
    encoder_timeout: float = 60.0


class DeliveryService(service.Service):
    name = "um/delivery"

    def __init__(self, store: VoicemailStore, server: Server, sender: mime.Sender, policy: Policy,
                 recipient: Callable[[str], Recipient | None], imap: ImapAccess | None = None,
                 imap_poll: float = 30.0, clock: Any = None) -> None:
        self.store, self.server, self.sender, self.policy = store, server, sender, policy
        self.outbox = Outbox(store)
        self.recipient = recipient
        self.clock = clock
        self.counters: Counter[str] = Counter()   # delivered, retried, dead, skipped, dropped, errors_<kind>
        self.in_flight: set[str] = set()
        self._seen_stamp = -1
        self._entries: list[Entry] = []
        self._next_due = 0.0
        self._last_log: dict[str, float] = {}
        self._loop: task.LoopingCall | None = None
        self.imap = ImapSync(store, self.outbox, imap, counters=self.counters) if imap is not None else None
        self.imap_poll = imap_poll
        self._imap_loop: task.LoopingCall | None = None
        self._imap_busy = False
        self._imap_again = False
        self.last_error = ""

    def prepare(self) -> None:
        """Before the worker starts (and recovers): from now on every committed voicemail is queued."""
        self.outbox.enable()

    # --- the service ---------------------------------------------------------------------------
    def startService(self) -> None:
        service.Service.startService(self)
        self.prepare()
        self.outbox.clean_temps()
        log.info("delivery: {server}, outbox {path}: {n} queued, {d} dead", server=repr(self.server),
                 path=str(self.outbox.root), n=len(self.outbox.queued()), d=len(self.outbox.dead()))
        self._loop = task.LoopingCall(self._tick)
        if self.clock is not None:
            self._loop.clock = self.clock
        self._loop.start(POLL, now=True)
        if self.imap is not None:
            self._imap_loop = task.LoopingCall(self._imap_tick)
            if self.clock is not None:
                self._imap_loop.clock = self.clock
            self._imap_loop.start(self.imap_poll, now=True)

    def stopService(self) -> Any:
        service.Service.stopService(self)
        for loop in (self._loop, self._imap_loop):
            if loop is not None and loop.running:
                loop.stop()

    # --- the queue -----------------------------------------------------------------------------
    def _tick(self) -> None:
        now = time.time()
        stamp = self.outbox.stamp()
        if stamp != self._seen_stamp or now >= self._next_due:
            self._seen_stamp = stamp
            self._entries = self.outbox.queued()
            future = [e.next for e in self._entries if e.next > now]
            self._next_due = min(future) if future else now + 5.0
        for entry in self._entries:
            if len(self.in_flight) >= CONCURRENCY:
                return
            if entry.id in self.in_flight or entry.next > now:
                continue
            self.in_flight.add(entry.id)
            work = threads.deferToThread(self._deliver, entry)
            work.addErrback(self._crashed, entry)
            work.addBoth(self._done, entry)

    def _crashed(self, failure: Any, entry: Entry) -> None:
        self.counters["errors_internal"] += 1
        log.failure("delivery of {id} failed unexpectedly (it stays queued)", failure, id=entry.id)

    def _done(self, result: Any, entry: Entry) -> None:
        self.in_flight.discard(entry.id)
        self._seen_stamp = -1  # look again at once: the entry changed or is gone
        if isinstance(result, Outcome):
            self._report(entry, result)

    def _report(self, entry: Entry, outcome: Outcome) -> None:
        if outcome.kind == "accepted":
            log.info("delivery: voicemail {id} for {mailbox} accepted ({detail})", id=entry.id,
                     mailbox=entry.mailbox, detail=outcome.detail)
            return
        if outcome.kind == "permanent":
            log.warn("delivery: voicemail {id} for {mailbox} refused for good, kept in dead letters: {detail}",
                     id=entry.id, mailbox=entry.mailbox, detail=outcome.detail)
            return
        if outcome.kind in ("dropped", "wait"):
            return
        self.last_error = outcome.detail
        now = time.time()
        if now - self._last_log.get(outcome.category, 0.0) >= LOG_EVERY:  # one line a minute per kind
            self._last_log[outcome.category] = now
            log.warn("delivery: {detail} ({n} message(s) queued; retrying with backoff)", detail=outcome.detail,
                     n=len(self._entries))

    # --- one attempt (in a thread) -------------------------------------------------------------
    def _deliver(self, entry: Entry) -> Outcome:
        now = time.time()
        folder = self.store.mailbox_dir(entry.mailbox)
        try:
            voicemail = self.store.find(entry.id)
        except StoreError:
            if (folder / f"{entry.id}.wav").exists() and now - entry.queued < 300:
                return Outcome("wait", "its JSON is not written yet")  # the worker is committing it
            self.outbox.drop(entry)
            self.counters["dropped"] += 1
            log.info("delivery: voicemail {id} for {mailbox} was deleted before it was mailed", id=entry.id,
                     mailbox=entry.mailbox)
            return Outcome("dropped", "deleted")
        recipient = self.recipient(entry.mailbox)
        if recipient is None or not recipient.email:
            self.outbox.drop(entry)
            self.counters["skipped"] += 1
            return Outcome("dropped", "no email")
        message_id = mime.message_id(entry.id, self.sender.domain)
        if entry.sending and entry.sending != os.getpid() and not pid_alive(entry.sending) and \
                self.imap is not None and self.imap.contains(recipient.email, entry.id):
            # Interrupted after the server took it (kill -9 between 250 and the rename): not again.
            self.outbox.delivered(entry, recipient.email, message_id)
            self.counters["delivered"] += 1
            return Outcome("accepted", "found in the mailbox after an interrupted attempt", "ok")
        if now - entry.queued > self.policy.retry_for:
            self.outbox.bury(entry, f"not delivered within the retry period: {entry.error or 'no attempt'}")
            self.counters["dead"] += 1
            return Outcome("permanent", f"retry period over; last error: {entry.error}", "expired")
        try:
            mail = mime.build(voicemail, self.store.wav_path(voicemail).read_bytes(), to=recipient.email,
                              sender=self.sender, language=recipient.language,
                              audio_format=self.policy.audio_format, max_bytes=self.policy.max_bytes,
                              encoder_timeout=self.policy.encoder_timeout)
        except mime.EncodeError as error:
            outcome = Outcome("temporary", str(error), "encoder")
            self._retry(entry, outcome)
            return outcome
        except OSError as error:
            outcome = Outcome("temporary", f"cannot read the voicemail: {error}", "store")
            self._retry(entry, outcome)
            return outcome
        self.outbox.begin(entry)
        outcome = send(self.server, self.sender.address, recipient.email, mail)
        if outcome.kind == "accepted":
            self.outbox.delivered(entry, recipient.email, message_id)
            self.counters["delivered"] += 1
        elif outcome.kind == "permanent":
            self.outbox.bury(entry, outcome.detail)
            self.counters["dead"] += 1
        else:
            self._retry(entry, outcome)
        return outcome

    def _retry(self, entry: Entry, outcome: Outcome) -> None:
        self.outbox.retry_later(entry, outcome.detail, self.policy.initial, self.policy.ceiling)
        self.counters["retried"] += 1
        self.counters[f"errors_{outcome.category}"] += 1

    # --- IMAP read state -----------------------------------------------------------------------
    def _imap_tick(self) -> None:
        if self.imap is None:
            return
        if self._imap_busy:  # a slow pass: the next one starts as soon as it ends, not a whole period later
            self._imap_again = True
            return
        self._imap_busy, self._imap_again = True, False
        work = threads.deferToThread(self.imap.run_once)
        work.addErrback(lambda failure: log.failure("IMAP sync failed unexpectedly", failure))

        def finished(result: Any) -> None:
            self._imap_busy = False
            if isinstance(result, str) and result:
                now = time.time()
                if now - self._last_log.get("imap", 0.0) >= LOG_EVERY:
                    self._last_log["imap"] = now
                    log.warn("IMAP sync: {why}", why=result)
            if self._imap_again and self.running:
                self._imap_tick()

        work.addBoth(finished)

    # --- what others read ----------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """For the status page and `umedge status`: queue size, oldest age, dead, counters."""
        snapshot = self.outbox.snapshot()
        return {"mode": self.server.mode, "server": f"{self.server.host}:{self.server.port}",
                "queue_size": snapshot["queue_size"], "oldest_age": snapshot["oldest_age"],
                "dead": snapshot["dead_count"], "in_flight": len(self.in_flight),
                "last_error": self.last_error, "counters": dict(self.counters),
                "imap": self.imap.status() if self.imap is not None else None}


__all__ = ["DeliveryService", "Policy", "Recipient"]
