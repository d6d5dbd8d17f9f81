"""The worker process's side of its control channel: one JSON object per line on stdin and stdout.

A worker slot runs as its own OS process (um.worker.supervisor starts it);
its SIP listeners and calls are its own, so a crash or a leak there takes
only its calls with it. The supervisor and the process talk over the
process's stdin (commands) and stdout (events); logs go to stderr.

Commands (supervisor -> worker), each a JSON object with "cmd":
    drain     {"timeout": seconds}: take no new calls, finish these (ended after `timeout`), then exit
    stop      end every call now (recordings kept) and exit
    node-draining  the node drains: new calls get 503, the calls in progress run on
    status    send a status event now
    calls     {"id": n}: reply with the calls in progress (um.callcontrol's list_calls)
    hang_up   {"id": n, "call_id": ..., "reason": ...}: reply with true/false (um.callcontrol's hang_up)
Events (worker -> supervisor), each with "event":
    ready     {"pid", "slot"}: its listeners are bound, it takes calls
    status    {"pid", "slot", "state", "calls", "calls_total", "rss_bytes", "counters", "untrusted",
               "tokens", "late_ticks", "recent", "sip", ["calls_list"]}: every STATUS_EVERY s and soon after a
               call ends ("sip": its SIP listeners' request/response counts, added to the node's /metrics)
    untrusted {"untrusted"}: a request was refused for its source (the count so far)
    drained   its last call ended after a drain: it exits now
    reply     {"id", "result"}: the answer to calls / hang_up

End of stdin means the supervisor is gone: the worker stops (its recordings are kept).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from um.sip.stream import STATS as SIP_STATS

log = Logger(namespace="umedge.worker.process")
STATUS_EVERY = 0.5   # seconds between status events
MIN_GAP = 0.02       # seconds between status events sent for a change (a call ended, a stranger refused)
MAX_LINE = 1 << 16   # a command line longer than this is dropped
DRAINED_GRACE = 1.0  # seconds between a drained worker's last call ending and its exit


def rss_bytes() -> int:
    """This process's resident memory (Linux /proc), 0 where unknown."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class ChildChannel:
    """A worker process's end of the control channel (stdin, stdout). `mailbox` serves the one `slot`.

    Events are written straight to the stdout pipe (blocking, whole lines): one written when a counter
    changes is in the pipe before the answer that changed it leaves, so the node's /metrics and web API
    never lag behind what a client has already seen.
    """

    def __init__(self, mailbox: Any, slot: int, context: Any, calls: Any, stop: Callable[[], None],
                 clock: Any, stdin: int = 0, stdout: int = 1) -> None:
        self.mailbox, self.slot = mailbox, mailbox.slots[slot - 1]
        self.context, self.calls, self._stop, self.clock = context, calls, stop, clock
        self._timer: task.LoopingCall | None = None
        self._soon: Any = None
        self._last = 0.0
        self._in, self._out = stdin, stdout
        self._buffer = b""
        self._loop: Any = None
        self.stopping = False
        context.on_change = self.soon
        mailbox.on_change = self._refused
        mailbox.on_answer = self._if_changed
        self._seen: tuple[int, ...] = ()
        mailbox.on_exit = self._drained

    # --- events -----------------------------------------------------------------------------
    def attach(self, loop: Any) -> None:
        """Read commands from stdin on the event loop."""
        self._loop = loop
        os.set_blocking(self._in, False)
        os.set_blocking(self._out, True)
        loop.add_reader(self._in, self._readable)

    def send(self, event: dict[str, Any]) -> None:
        if self.stopping:
            return
        data = memoryview(json.dumps(event, default=str).encode() + b"\n")
        try:
            while data:
                data = data[os.write(self._out, data):]
        except OSError:  # the supervisor is gone
            self.connectionLost()

    def ready(self) -> None:
        self.send({"event": "ready", "pid": os.getpid(), "slot": self.slot.number})
        self._timer = task.LoopingCall(self.status, True)
        self._timer.clock = self.clock
        self._timer.start(STATUS_EVERY, now=True)

    def status(self, full: bool = False) -> None:
        self._last = self.clock.seconds()
        self._seen = self._fingerprint()
        context, slot = self.context, self.slot
        event: dict[str, Any] = {
            "event": "status", "pid": os.getpid(), "slot": slot.number, "state": slot.state,
            "calls": len(slot.calls), "calls_total": slot.calls_total, "rss_bytes": rss_bytes(),
            "counters": dict(context.counters), "untrusted": self.mailbox.untrusted,
            "tokens": dict(context.tokens.counters), "late_ticks": context.clock.late_ticks,
            "recent": context.finished[-20:],
            "sip": {"requests": dict(SIP_STATS.requests), "responses": dict(SIP_STATS.responses),
                    "rate_limited": SIP_STATS.rate_limited}}
        if full:
            event["calls_list"] = [call.describe() for call in list(context.calls.values())[:200]]
        self.send(event)

    def soon(self) -> None:
        """A call ended: a status event now, or once MIN_GAP has passed since the last one, so the node's web
        API and /metrics are current before the caller's next step."""
        if self._soon is not None and self._soon.active():
            return
        wait = self._last + MIN_GAP - self.clock.seconds()
        if wait <= 0:
            self.status()
        else:
            self._soon = self.clock.callLater(wait, self.status)

    def _fingerprint(self) -> tuple[int, ...]:
        context, slot = self.context, self.slot
        return (sum(context.counters.values()), sum(context.tokens.counters.values()), len(context.finished),
                id(context.finished[-1]) if context.finished else 0, len(slot.calls), slot.calls_total)

    def _if_changed(self) -> None:
        """A SIP answer is about to leave: if the request changed a count, report it first."""
        if self._fingerprint() != self._seen:
            self.status()

    def _refused(self) -> None:
        """A stranger was refused: the count, at once (tiny; sent before the 403 leaves)."""
        self.send({"event": "untrusted", "untrusted": self.mailbox.untrusted})

    def _drained(self, slot: Any) -> None:
        log.info("worker slot {slot}: drained, exiting", slot=slot.number)
        self.status()
        self.send({"event": "drained"})
        # A moment for what the last call still sends (the 200 to its BYE goes out once its message is stored).
        self.clock.callLater(DRAINED_GRACE, self._stop)

    # --- commands ---------------------------------------------------------------------------
    def _readable(self) -> None:
        try:
            data = os.read(self._in, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.connectionLost()
            return
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_LINE:
            log.warn("worker control: command line over {n} bytes dropped", n=MAX_LINE)
            self._buffer = b""
        for line in lines:
            if line.strip():
                self.lineReceived(line)

    def lineReceived(self, line: bytes) -> None:
        try:
            command = json.loads(line)
            name = command["cmd"]
        except (ValueError, TypeError, KeyError):
            log.warn("worker control: not a command: {line!r}", line=line[:80])
            return
        if name == "drain":
            timeout = float(command.get("timeout", 3600))
            log.info("worker slot {slot}: draining {n} call(s) (up to {t:g} s)", slot=self.slot.number,
                     n=len(self.slot.calls), t=timeout)
            self.mailbox.drain_slot(self.slot, timeout)
        elif name == "stop":
            self.clock.callLater(0, self._stop)
        elif name == "node-draining":  # the node drains (SIGTERM): new calls get 503, these run on
            self.mailbox.draining = True
        elif name == "status":
            self.status(True)
        elif name in ("calls", "hang_up"):
            self._reply(command)
        else:
            log.warn("worker control: unknown command {name!r}", name=str(name)[:40])

    def _reply(self, command: dict[str, Any]) -> None:
        if command["cmd"] == "calls":
            work = self.calls.list_calls()
        else:
            work = self.calls.hang_up(str(command.get("call_id", "")), str(command.get("reason", "")))
        deferred = defer.Deferred.fromFuture(asyncio.ensure_future(work))
        deferred.addCallbacks(lambda result: self.send({"event": "reply", "id": command.get("id"), "result": result}),
                              lambda failure: self.send({"event": "reply", "id": command.get("id"), "result": None,
                                                         "error": failure.getErrorMessage()}))

    def connectionLost(self) -> None:
        """stdin closed: the supervisor (the node's main process) is gone; stop, keeping recordings."""
        if self._loop is not None:
            self._loop.remove_reader(self._in)
            self._loop = None
        if self._timer is not None and self._timer.running:
            self._timer.stop()
        if not self.stopping:
            self.stopping = True
            log.info("worker slot {slot}: control channel closed, stopping", slot=self.slot.number)
            self.clock.callLater(0, self._stop)


__all__ = ["ChildChannel", "rss_bytes"]
