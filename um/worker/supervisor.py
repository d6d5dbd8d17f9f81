"""The UM service's worker processes: one OS process per worker slot, started, recycled and replaced here.

Exchange runs its calls in UM worker processes on fixed port pairs and
recycles one by starting a fresh process on the other pair while the old
one finishes its calls. umedge does the same: each slot (um.slots) is a
child process running `argv(slot)` (the composition root's worker-process
entry point) that owns the slot's SIP listeners and half of the RTP ports.
A process that dies (kill -9, a fault in call handling) takes only its own
calls: it is logged, counted and replaced with backoff, and new calls go to
the other slot meanwhile (the UM service answers 503 only when both are
down). The call router, edge and web roles in the main process never go
down with a worker.

Both slots always run a process: the active one takes new calls (the UM
service's 302 names it), the idle one stands by. A recycle (`umedge worker
recycle`, [mailbox] recycle_time, or [worker] recycle_after_calls /
recycle_after_hours / recycle_memory_mb) replaces the idle process with a
fresh one, switches new calls to it once it reports ready, and tells the
old one to drain: it finishes its calls (up to [mailbox] drain_timeout) and
exits, and a fresh idle process takes its slot.

Processes are spawned with subprocess (fork+exec, nothing of this process
runs in the child), and talk over their stdin/stdout in JSON lines
(um.worker.child). The pipes and a pidfd per process are watched on the
event loop; at start-up the supervisor waits for both processes to be
ready before the node reports ready.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from um.sip.message import Request, Response, make_response
from um.sip.stream import STATS as SIP_STATS
from um.slots import WorkerSlot

log = Logger(namespace="umedge.worker.supervisor")
START_TIMEOUT = 30.0      # seconds a fresh worker process has to report ready
STOP_TIMEOUT = 3.5        # seconds a stopping worker process has before SIGKILL (the node's own stop takes 4)
BACKOFF_FIRST, BACKOFF_MAX = 0.5, 30.0
STABLE_AFTER = 60.0       # a process that lived this long resets its slot's backoff
MAX_BUFFER = 4 << 20      # bytes of an unfinished line from a worker: beyond it the worker is killed
REPLY_TIMEOUT = 5.0
FOLLOW_EVERY = 0.25       # seconds between looks at the node's config and drain state


@dataclass
class RecycleLimits:
    """[worker] recycle_after_calls / recycle_after_hours / recycle_memory_mb; 0 turns one off."""

    calls: int = 0
    hours: float = 0.0
    memory_mb: int = 0


class WorkerProcess:
    """One worker process of a slot: the Popen, its stdout lines and its exit, watched on the event loop."""

    def __init__(self, slot: int, generation: int, argv: list[str], loop: Any) -> None:
        self.slot, self.generation, self.loop = slot, generation, loop
        # Its own session: a terminal's Ctrl-C reaches the main process, which stops the workers itself.
        self.popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
                                      start_new_session=True)
        self.pid = self.popen.pid
        self.started = time.time()
        self.ready = False
        self.expected: str | None = None   # why it is going away when asked to: "drain", "replace", "stop"
        self.failure = ""                  # what it reported before failing to start
        self.listen_error: tuple[str, int, str] | None = None
        self.status: dict[str, Any] = {}
        self.sip_seen: dict[str, Any] = {}  # its SIP counts already added to this process's (for /metrics)
        self.told_draining = False          # it knows the node drains (no new calls)
        self.exited = False
        self.returncode: int | None = None
        self._buffer = b""
        self._pidfd: int | None = None
        assert self.popen.stdout is not None and self.popen.stdin is not None
        self._out = self.popen.stdout.fileno()
        os.set_blocking(self._out, False)
        self.on_event: Callable[[WorkerProcess, dict[str, Any]], None] = lambda process, event: None
        self.on_exit: Callable[[WorkerProcess], None] = lambda process: None
        self._poll: Any = None

    # --- watching ------------------------------------------------------------------------
    def watch(self) -> None:
        """Read its events and notice its exit on the event loop (a pidfd; else a 0.2 s poll)."""
        self.loop.add_reader(self._out, self._readable)
        try:
            self._pidfd = os.pidfd_open(self.pid)
            self.loop.add_reader(self._pidfd, self._reap)
        except (AttributeError, OSError):
            self._pidfd = None
            self._poll = self.loop.call_later(0.2, self._poll_exit)

    def _poll_exit(self) -> None:
        if self.popen.poll() is not None:
            self._reap()
        elif not self.exited:
            self._poll = self.loop.call_later(0.2, self._poll_exit)

    def _readable(self) -> None:
        try:
            data = os.read(self._out, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.loop.remove_reader(self._out)
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_BUFFER:
            log.error("worker slot {slot} (pid {pid}): runaway control output, killing it", slot=self.slot,
                      pid=self.pid)
            self._buffer = b""
            self.kill()
        for line in lines:
            if not line.strip():
                continue
            try:
                event = json.loads(line)
            except ValueError:
                log.warn("worker slot {slot} (pid {pid}): not an event: {line!r}", slot=self.slot, pid=self.pid,
                         line=line[:80])
                continue
            if isinstance(event, dict):
                self.on_event(self, event)

    def _reap(self) -> None:
        if self.exited:
            return
        try:
            self.returncode = self.popen.wait(timeout=1)
        except subprocess.TimeoutExpired:
            return
        self.exited = True
        self._readable_rest()
        for fd in (self._out, self._pidfd):
            if fd is not None:
                self.loop.remove_reader(fd)
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None
        for pipe in (self.popen.stdin, self.popen.stdout):
            try:
                if pipe is not None:
                    pipe.close()
            except OSError:
                pass
        self.on_exit(self)

    def _readable_rest(self) -> None:
        """What it wrote just before it exited (its last status, "drained")."""
        for _ in range(64):
            try:
                data = os.read(self._out, 1 << 16)
            except OSError:
                return
            if not data:
                return
            self._feed(data)

    def wait_ready(self, deadline: float) -> None:
        """At start-up, before the event loop runs: block until it reports ready, fails, or the deadline."""
        while not self.ready and not self.failure and time.monotonic() < deadline:
            if self.popen.poll() is not None:
                self._readable_rest()
                if not self.ready:
                    self.failure = self.failure or f"exited with {self.popen.returncode} before it was ready"
                return
            readable, _, _ = select.select([self._out], [], [], max(0.0, min(0.2, deadline - time.monotonic())))
            if readable:
                try:
                    data = os.read(self._out, 1 << 16)
                except BlockingIOError:
                    continue
                if data:
                    self._feed(data)
        if not self.ready and not self.failure:
            self.failure = f"not ready within {START_TIMEOUT:g} s"

    # --- commands ------------------------------------------------------------------------
    def send(self, command: dict[str, Any]) -> bool:
        stdin = self.popen.stdin
        if self.exited or stdin is None or stdin.closed:
            return False
        try:
            stdin.write(json.dumps(command).encode() + b"\n")
            stdin.flush()
            return True
        except (BrokenPipeError, OSError, ValueError):
            return False

    def terminate(self) -> None:
        if not self.exited and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if not self.exited and self.popen.poll() is None:
            self.popen.kill()

    @property
    def age(self) -> float:
        return time.time() - self.started


class WorkerSupervisor(service.Service):
    """Runs the mailbox service's two worker slots as processes (see the module docstring).

    Also the node's um.callcontrol.CallControl (the operator console's calls) over the processes' control
    channels, and the stand-in call handler of the main process's slots (which serve no SIP themselves).
    """

    name = "um/workers"
    METHODS: frozenset[str] = frozenset()

    def __init__(self, mailbox: Any, argv: Callable[[int], list[str]], limits: Callable[[], RecycleLimits],
                 drain_timeout: Callable[[], float], loop: Any, clock: Any,
                 reload_token: Callable[[], object] | None = None) -> None:
        """`reload_token()` changes when the node reloads its config (SIGHUP): the processes get a SIGHUP."""
        self.mailbox = mailbox
        self.slots: list[WorkerSlot] = mailbox.slots
        self.argv, self.limits, self.drain_timeout = argv, limits, drain_timeout
        self.loop, self.clock = loop, clock
        self.processes: dict[int, WorkerProcess | None] = {1: None, 2: None}
        self.backoff = {1: BACKOFF_FIRST, 2: BACKOFF_FIRST}
        self._respawn: dict[int, Any] = {}
        self._recycle: tuple[int, defer.Deferred[dict[str, Any]], str, Any] | None = None
        self._last_auto = 0.0
        self.stopping = False
        self.crashes = 0
        self.recycles = 0
        self.retired: dict[str, int] = {}            # counters of processes that exited
        self.retired_untrusted = 0
        self._replies: dict[int, asyncio.Future[Any]] = {}
        self._next_reply = 1
        self._reload_token = reload_token
        self._seen_token = reload_token() if reload_token is not None else None
        self._reload_check: Any = None
        for slot in self.slots:
            slot.state, slot.pid = "down", None
        mailbox.supervisor = self
        mailbox.call_handler = self

    # --- start and stop ------------------------------------------------------------------
    def startService(self) -> None:
        super().startService()
        for number in (1, 2):
            self._spawn(number, watch=False)
        deadline = time.monotonic() + START_TIMEOUT
        problems = []
        for number in (1, 2):
            process = self.processes[number]
            assert process is not None
            process.wait_ready(deadline)
            if not process.ready:
                problems.append(process)
        if problems:
            for number in (1, 2):
                process = self.processes[number]
                if process is not None:
                    process.kill()
                    process.popen.wait()
            self.processes = {1: None, 2: None}
            self.stopping = True
            first = problems[0]
            if first.listen_error is not None:
                interface, port, why = first.listen_error
                raise CannotListenError(interface, port, why)
            raise OSError(f"worker slot {first.slot} did not start: {first.failure}")
        for number in (1, 2):
            process = self.processes[number]
            assert process is not None
            process.watch()
        self._reload_check = self.clock.callLater(FOLLOW_EVERY, self._follow_node)

    def _follow_node(self) -> None:
        """The node reloaded its config (SIGHUP): each worker process re-reads it too. The node drains
        (SIGTERM): the worker processes take no new calls either (their calls run on)."""
        token = self._reload_token() if self._reload_token is not None else None
        if token is not self._seen_token:
            self._seen_token = token
            for process in self.live():
                process.popen.send_signal(signal.SIGHUP)
        if self.mailbox.draining:
            for process in self.live():
                if process.ready and not process.told_draining:
                    process.told_draining = process.send({"cmd": "node-draining"})
        if not self.stopping:
            self._reload_check = self.clock.callLater(FOLLOW_EVERY, self._follow_node)

    def stopService(self) -> Any:
        super().stopService()
        self.stopping = True
        if self._reload_check is not None and self._reload_check.active():
            self._reload_check.cancel()
        for call in self._respawn.values():
            if call.active():
                call.cancel()
        self._respawn.clear()
        live = [p for p in self.processes.values() if p is not None and not p.exited]
        for process in live:
            process.expected = process.expected or "stop"
            if not process.send({"cmd": "stop"}):
                process.terminate()
        if not live:
            return None
        from twisted.internet import reactor

        if not reactor.running:  # start-up failed before the loop ran: wait here
            for process in live:
                try:
                    process.popen.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.popen.wait()
            return None
        done: defer.Deferred[None] = defer.Deferred()

        def check(deadline: float) -> None:
            if all(p.exited or p.popen.poll() is not None for p in live):
                for process in live:
                    process._reap()
                done.callback(None)
            elif time.monotonic() >= deadline:
                for process in live:
                    if not process.exited and process.popen.poll() is None:
                        log.warn("worker slot {slot} (pid {pid}) did not stop in time: killed", slot=process.slot,
                                 pid=process.pid)
                        process.kill()
                self.clock.callLater(0.1, check, deadline + 5)
            else:
                self.clock.callLater(0.05, check, deadline)

        check(time.monotonic() + STOP_TIMEOUT)
        return done

    # --- processes -----------------------------------------------------------------------
    def _spawn(self, number: int, watch: bool = True) -> WorkerProcess | None:
        slot = self.slots[number - 1]
        self._respawn.pop(number, None)
        try:
            process = WorkerProcess(number, slot.generation + 1, self.argv(number), self.loop)
        except OSError as error:
            log.error("worker slot {slot}: cannot start a process: {error}", slot=number, error=error)
            self._schedule_respawn(number)
            return None
        slot.generation = process.generation
        slot.state, slot.pid, slot.started = "starting", process.pid, process.started
        slot.reported_calls, slot.reported_total, slot.rss_bytes = 0, 0, 0
        process.on_event, process.on_exit = self._event, self._exit
        self.processes[number] = process
        log.info("worker slot {slot}: process {pid} started (generation {gen})", slot=number, pid=process.pid,
                 gen=process.generation)
        if watch:
            process.watch()
            self._deadline(process, START_TIMEOUT, "did not report ready", lambda: process.ready)
        return process

    def _deadline(self, process: WorkerProcess, seconds: float, what: str, done: Callable[[], bool]) -> None:
        """Kill `process` if `done()` is still false after `seconds` (its exit is then handled as usual)."""

        def check() -> None:
            if not process.exited and not done():
                log.error("worker slot {slot} (pid {pid}) {what} within {s:g} s: killed", slot=process.slot,
                          pid=process.pid, what=what, s=seconds)
                process.kill()

        self.clock.callLater(seconds, check)

    def _schedule_respawn(self, number: int) -> None:
        if self.stopping or number in self._respawn:
            return
        delay = self.backoff[number]
        self.backoff[number] = min(BACKOFF_MAX, delay * 2)
        self._respawn[number] = self.clock.callLater(delay, self._spawn, number)

    def _other(self, number: int) -> WorkerSlot:
        return self.slots[1 if number == 1 else 0]

    def _event(self, process: WorkerProcess, event: dict[str, Any]) -> None:
        kind = event.get("event")
        slot = self.slots[process.slot - 1]
        current = self.processes.get(process.slot) is process
        if kind == "status":
            process.status = event
            self._add_sip_counts(process, event.get("sip"))
            if current:
                slot.reported_calls = int(event.get("calls", 0))
                slot.reported_total = int(event.get("calls_total", 0))
                slot.rss_bytes = int(event.get("rss_bytes", 0))
                self._check_limits(slot, process)
        elif kind == "untrusted":
            process.status["untrusted"] = int(event.get("untrusted", 0))
        elif kind == "ready":
            process.ready = True
            if current:
                self._ready(slot, process)
        elif kind == "failed":
            process.failure = str(event.get("error", "failed"))[:300]
            if event.get("port"):
                process.listen_error = (str(event.get("interface", "")), int(event["port"]), process.failure)
        elif kind == "reply":
            waiter = self._replies.pop(int(event.get("id") or 0), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event.get("result"))
        elif kind == "drained":
            pass  # its exit follows

    @staticmethod
    def _add_sip_counts(process: WorkerProcess, sip: Any) -> None:
        """The worker's SIP request/response counts since its last report, into this process's (/metrics)."""
        if not isinstance(sip, dict):
            return
        seen = process.sip_seen
        for kind in ("requests", "responses"):
            now, before = sip.get(kind) or {}, seen.get(kind) or {}
            counter = getattr(SIP_STATS, kind)
            for name, value in now.items():
                delta = int(value) - int(before.get(name, 0))
                if delta > 0 and len(str(name)) <= 16:
                    counter[str(name)] += delta
        SIP_STATS.rate_limited += max(0, int(sip.get("rate_limited", 0)) - int(seen.get("rate_limited", 0)))
        process.sip_seen = sip

    def _ready(self, slot: WorkerSlot, process: WorkerProcess) -> None:
        active = self.mailbox.active
        recycle = self._recycle
        if recycle is not None and recycle[0] == slot.number:  # a recycle's fresh process: switch to it
            self._recycle = None
            if recycle[3] is not None and recycle[3].active():
                recycle[3].cancel()
            old = active if active is not slot else self._other(slot.number)
            slot.state = "active"
            self.mailbox.active = slot
            self.recycles += 1
            old_process = self.processes.get(old.number)
            log.info("worker recycle ({why}): new calls go to slot {new} (pid {pid}); slot {old} drains {n} call(s)",
                     why=recycle[2], new=slot.number, pid=process.pid, old=old.number, n=old.reported_calls)
            if old_process is not None and not old_process.exited:
                old.state, old.draining_since = "draining", time.time()
                old_process.expected = "drain"
                timeout = self.drain_timeout()
                old_process.send({"cmd": "drain", "timeout": timeout})
                self._deadline(old_process, timeout + STOP_TIMEOUT + 10, "did not finish draining", lambda: False)
            recycle[1].callback(self.mailbox.status())
            return
        if active is slot or active.state != "active":
            slot.state = "active"
            self.mailbox.active = slot
            log.info("worker slot {slot}: process {pid} ready, taking new calls", slot=slot.number, pid=process.pid)
        else:
            slot.state = "idle"
            log.info("worker slot {slot}: process {pid} ready, standing by", slot=slot.number, pid=process.pid)

    def _exit(self, process: WorkerProcess) -> None:
        number = process.slot
        slot = self.slots[number - 1]
        for name, value in (process.status.get("counters") or {}).items():
            self.retired[name] = self.retired.get(name, 0) + int(value)
        self.retired_untrusted += int(process.status.get("untrusted", 0))
        slot.calls_total += int(process.status.get("calls_total", 0))
        if self.processes.get(number) is not process:
            return
        self.processes[number] = None
        slot.pid, slot.reported_calls, slot.reported_total, slot.rss_bytes = None, 0, 0, 0
        code = process.returncode
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        slot.last_exit = how
        if process.age >= STABLE_AFTER:
            self.backoff[number] = BACKOFF_FIRST
        if self.stopping:
            slot.state = "down"
            return
        expected = process.expected
        recycle = self._recycle
        if expected == "drain":
            slot.recycles += 1
            log.info("worker slot {slot} (generation {gen}, pid {pid}) finished its calls and exited ({how})",
                     slot=number, gen=process.generation, pid=process.pid, how=how)
            slot.state = "down"
            self._spawn(number)  # a fresh idle process on this slot
            return
        if expected == "replace" and recycle is not None and recycle[0] == number:
            slot.state = "down"
            self._spawn(number)  # the recycle's fresh process
            return
        # Nobody asked it to go: a crash. Its calls are gone; the rest of the node carries on.
        self.crashes += 1
        slot.crashes += 1
        slot.state = "down"
        other = self._other(number)
        log.error("worker slot {slot} (pid {pid}, generation {gen}) died ({how}) with {n} call(s); replacing it "
                  "in {delay:g} s", slot=number, pid=process.pid, gen=process.generation, how=how,
                  n=int(process.status.get("calls", 0)), delay=self.backoff[number])
        if self.mailbox.active is slot and other.state in ("idle", "active"):
            other.state = "active"
            self.mailbox.active = other
            log.warn("worker slot {other} takes the new calls while slot {slot} is replaced", other=other.number,
                     slot=number)
        if recycle is not None and recycle[0] == number:  # the recycle's fresh process died before it was ready
            self._recycle = None
            if recycle[3] is not None and recycle[3].active():
                recycle[3].cancel()
            recycle[1].errback(RuntimeError(f"the fresh worker process on slot {number} died ({how})"))
        self._schedule_respawn(number)

    # --- recycling -----------------------------------------------------------------------
    def recycle(self, why: str) -> defer.Deferred[dict[str, Any]]:
        """A fresh process on the idle slot; new calls go there once it is ready; the old one drains.

        Raises RuntimeError when it cannot start one now (a drain or a recycle still under way).
        """
        if self._recycle is not None:
            raise RuntimeError("a worker recycle is already under way")
        if self.stopping:
            raise RuntimeError("the node is stopping")
        target = self._other(self.mailbox.active.number)
        if target.state == "draining":
            raise RuntimeError(f"worker slot {target.number} is still draining {target.reported_calls} call(s)")
        if target.state == "starting":
            raise RuntimeError(f"worker slot {target.number} is still starting")
        if target.state == "idle" and target.reported_calls:
            raise RuntimeError(f"worker slot {target.number} still has {target.reported_calls} call(s)")
        deferred: defer.Deferred[dict[str, Any]] = defer.Deferred()
        timer = self.clock.callLater(START_TIMEOUT + STOP_TIMEOUT, self._recycle_timeout, target.number)
        self._recycle = (target.number, deferred, why, timer)
        process = self.processes.get(target.number)
        if process is not None and not process.exited:
            process.expected = "replace"
            if not process.send({"cmd": "stop"}):
                process.terminate()
            self._deadline(process, STOP_TIMEOUT, "did not stop", lambda: False)
        else:
            pending = self._respawn.pop(target.number, None)
            if pending is not None and pending.active():
                pending.cancel()
            self._spawn(target.number)
        return deferred

    def _recycle_timeout(self, number: int) -> None:
        recycle = self._recycle
        if recycle is not None and recycle[0] == number:
            self._recycle = None
            recycle[1].errback(RuntimeError(f"the fresh worker process on slot {number} was not ready in time"))

    def _check_limits(self, slot: WorkerSlot, process: WorkerProcess) -> None:
        """[worker] recycle_after_*: the active process recycles itself once it passes one."""
        if self.mailbox.active is not slot or slot.state != "active" or self._recycle is not None:
            return
        limits = self.limits()
        why = ""
        if limits.calls and int(process.status.get("calls_total", 0)) >= limits.calls:
            why = f"{limits.calls} calls"
        elif limits.hours and process.age >= limits.hours * 3600:
            why = f"{limits.hours:g} hours"
        elif limits.memory_mb and slot.rss_bytes >= limits.memory_mb * (1 << 20):
            why = f"resident memory {slot.rss_bytes >> 20} MB >= {limits.memory_mb} MB"
        now = time.monotonic()
        if not why or now - self._last_auto < 10:
            return
        self._last_auto = now
        try:
            self.recycle(why).addErrback(lambda failure: log.warn("worker recycle ({why}) failed: {error}", why=why,
                                                                  error=failure.getErrorMessage()))
        except RuntimeError as error:
            log.info("worker recycle ({why}) postponed: {error}", why=why, error=error)

    # --- what the processes report -------------------------------------------------------
    def live(self) -> list[WorkerProcess]:
        return [p for p in self.processes.values() if p is not None and not p.exited]

    def summary(self) -> dict[str, Any]:
        return {"crashes": self.crashes, "recycles": self.recycles,
                "recycle_in_progress": self._recycle is not None}

    def remote_status(self) -> dict[str, Any]:
        """The processes' last reports, merged (um.worker.context.WorkerContext.remote)."""
        counters = dict(self.retired)
        tokens: dict[str, int] = {}
        calls: list[Any] = []
        recent: list[Any] = []
        active = late = 0
        for process in self.live():
            status = process.status
            for name, value in (status.get("counters") or {}).items():
                counters[name] = counters.get(name, 0) + int(value)
            for name, value in (status.get("tokens") or {}).items():
                tokens[name] = tokens.get(name, 0) + int(value)
            active += int(status.get("calls", 0))
            late += int(status.get("late_ticks", 0))
            calls += status.get("calls_list") or []
            recent += status.get("recent") or []
        return {"counters": counters, "tokens": tokens, "active_calls": active, "late_ticks": late,
                "calls": calls[:200], "recent": recent[-20:]}

    def untrusted(self) -> int:
        return self.retired_untrusted + sum(int(p.status.get("untrusted", 0)) for p in self.live())

    # --- um.callcontrol.CallControl over the control channels ---------------------------
    def _ask(self, process: WorkerProcess, command: dict[str, Any]) -> asyncio.Future[Any]:
        """Its reply (None if it does not answer within REPLY_TIMEOUT), as a future on the node's asyncio
        loop, which the console's coroutines await."""
        number = self._next_reply
        self._next_reply += 1
        waiter: asyncio.Future[Any] = self.loop.create_future()
        self._replies[number] = waiter
        if not process.send({**command, "id": number}):
            self._replies.pop(number, None)
            waiter.set_result(None)
            return waiter

        def expire() -> None:
            if self._replies.pop(number, None) is not None and not waiter.done():
                waiter.set_result(None)

        self.clock.callLater(REPLY_TIMEOUT, expire)
        return waiter

    async def list_calls(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for process in self.live():
            result = await self._ask(process, {"cmd": "calls"})
            found += result if isinstance(result, list) else []
        return found

    async def hang_up(self, call_id: str, reason: str) -> bool:
        for process in self.live():
            if await self._ask(process, {"cmd": "hang_up", "call_id": call_id, "reason": reason}):
                return True
        return False

    # --- um.slots.CallHandler: the main process's slots serve no SIP -------------------
    def handle(self, service: Any, slot: WorkerSlot, request: Request, peer: Any) -> Response | None:
        return make_response(request, 503, "Service Unavailable - the worker runs in its own process",
                             [("Retry-After", "5")])

    def end_all(self, slot: WorkerSlot, reason: str) -> None:
        process = self.processes.get(slot.number)
        if process is not None:
            process.send({"cmd": "stop"})


__all__ = ["RecycleLimits", "WorkerProcess", "WorkerSupervisor"]
