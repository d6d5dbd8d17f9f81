"""The mailbox UM service (5062/5063) and its two UM worker slots.

The UM service accepts only call routers (a pool-CA certificate over MTLS,
or a configured address over TCP) and answers their INVITE with a 302 to
the active worker: `sip:` on the slot's TCP port, `sips:` on its MTLS port
(the worker's startup mode decides which exist; a `sips:` Request-URI asks
for a secured worker). OPTIONS answers liveness probes.

Worker slots follow the seed's port pairs: slot 1 on sip_ports[0] (and
sip_dual_tls_ports[0] in dual mode), slot 2 on sip_ports[1] / [1]. A
recycle starts a fresh worker on the other slot, sends every new call
there and lets the old worker finish its calls before it exits (or until
the drain timeout). `umedge worker recycle` asks for one over SIP (a
SERVICE request with an application/vnd.umedge.control+json body, from
loopback or a pool certificate); `[mailbox].recycle_time` schedules one
daily.

The worker's calls (media, voicemail, subscriber access) are um.worker's:
the composition root passes them as `call_handler` (um.slots.CallHandler),
which gets the slots' dialog requests and keeps each live call's dialog in
its slot's `calls`.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from um.control import CONTROL_TYPE
from um.sip.message import Request, Response, make_response
from um.sip.stream import Peer
from um.slots import CallHandler, WorkerSlot

SERVER = "umedge/0.1"

KNOWN_METHODS = frozenset(("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
                           "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE", "SERVICE"))
log = Logger(namespace="umedge.mailbox")


class SlotSupervisor(Protocol):
    """What runs the worker slots as processes (um.worker.supervisor.WorkerSupervisor)."""

    def recycle(self, why: str) -> Deferred[dict[str, Any]]: ...

    def summary(self) -> dict[str, Any]: ...

    def untrusted(self) -> int: ...


def refuse_method(request: Request, allow: str) -> Response:
    """405 for a method SIP defines that this element does not do, 501 for one it does not know."""
    if request.method in KNOWN_METHODS:
        return make_response(request, 405, None, [("Allow", allow), ("Server", SERVER)])
    return make_response(request, 501, None, [("Allow", allow), ("Server", SERVER)])


def _networks(items: tuple[str, ...]) -> list[Any]:
    return [ipaddress.ip_network(item, strict=False) for item in items]


def _allowed(host: str, networks: list[Any]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in networks)


class MailboxService:
    """UM service policy and worker slots of one mailbox server (sans sockets; uses a clock)."""

    def __init__(self, host: str, startup_mode: str, sip_ports: tuple[int, int],
                 dual_tls_ports: tuple[int, int], call_routers: tuple[str, ...] = ("127.0.0.1",),
                 drain_timeout: float = 3600.0, *, call_handler: CallHandler | None, clock: Any = None,
                 gateway: Callable[[Peer], object | None] | None = None,
                 control_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128"),
                 serve_slot: int | None = None) -> None:
        self.host = host
        self.mode = startup_mode
        self.slots = []
        for index in range(2):
            tcp = sip_ports[index] if startup_mode in ("tcp", "dual") else None
            tls = (sip_ports[index] if startup_mode == "tls"
                   else dual_tls_ports[index] if startup_mode == "dual" else None)
            self.slots.append(WorkerSlot(index + 1, tcp, tls))
        self.call_routers = _networks(call_routers)
        self.control_networks = _networks(control_networks)
        self.drain_timeout = drain_timeout
        self.clock = clock
        self.on_exit: Callable[[WorkerSlot], None] | None = None
        self.draining = False  # the node drains (SIGTERM): new calls get 503, active ones run on
        self._drain_timer: Any = None
        # The worker's calls, media and voicemail (um.worker); None on a node without the worker role,
        # which serves no worker listener.
        self.call_handler = call_handler
        # Who may call the worker: a configured UM IP gateway (the call router's table, FQDNs resolved),
        # the pool's call routers, or an MTLS peer the pool CA vouched for. None: call routers and MTLS only.
        self.gateway = gateway
        self._untrusted = 0  # requests refused for their source (`untrusted` adds the worker processes')
        # The node's main process hands its slots to a supervisor of worker processes (um.worker.supervisor):
        # it starts, recycles and replaces them and keeps `active` and each slot's state. None: the slots run
        # in this process (a worker process serves its one `serve_slot`; unit tests run both).
        self.supervisor: SlotSupervisor | None = None
        self.on_change: Callable[[], None] = lambda: None  # a counter changed (a worker process reports it)
        self.on_answer: Callable[[], None] = lambda: None  # a worker request is about to be answered
        self.active = self.slots[(serve_slot or 1) - 1]
        # Other requests the UM service takes (SUBSCRIBE for message-waiting, um.mwi), plugged in by the
        # composition root: an object with METHODS and handle(request, peer); it judges its sources itself.
        self.events: Any = None
        self._start(self.active)

    @property
    def untrusted(self) -> int:
        """Requests refused for their source, here and in the worker processes."""
        return self._untrusted + (self.supervisor.untrusted() if self.supervisor is not None else 0)

    @untrusted.setter
    def untrusted(self, value: int) -> None:
        self._untrusted += value - self.untrusted
        self.on_change()

    def _answering(self, result: Any) -> Any:
        """Just before a worker answer leaves: a worker process reports what the request changed."""
        self.on_answer()
        return result

    # --- worker slots ----------------------------------------------------------------------
    def _now(self) -> float:
        return self.clock.seconds() if self.clock is not None else time.time()

    def _start(self, slot: WorkerSlot) -> None:
        slot.state, slot.generation = "active", slot.generation + 1
        slot.started, slot.draining_since = self._now(), None
        log.info("worker slot {slot} started (generation {gen}, ports tcp={tcp} tls={tls})", slot=slot.number,
                 gen=slot.generation, tcp=slot.tcp_port, tls=slot.tls_port)

    def recycle(self) -> dict[str, Any] | Deferred[dict[str, Any]]:
        """Start a fresh worker on the other slot; the old one drains. Raises RuntimeError if it can't.

        With worker processes the supervisor's answer comes once the fresh process is ready (a Deferred).
        """
        if self.supervisor is not None:
            return self.supervisor.recycle("requested")
        old = self.active
        new = self.slots[1] if old is self.slots[0] else self.slots[0]
        if new.state != "idle":
            raise RuntimeError(f"worker slot {new.number} is still draining {len(new.calls)} call(s)")
        self._start(new)
        self.active = new
        log.info("worker recycle: new calls go to slot {new}; slot {old} drains {n} call(s)", new=new.number,
                 old=old.number, n=len(old.calls))
        self.drain_slot(old)
        return self.status()

    def drain_slot(self, slot: WorkerSlot, timeout: float | None = None) -> None:
        """`slot` takes no new calls, finishes its calls (up to the drain timeout) and then exits."""
        slot.state, slot.draining_since = "draining", self._now()
        self._maybe_exit(slot)
        if slot.state == "draining" and self.clock is not None:
            self._drain_timer = self.clock.callLater(self.drain_timeout if timeout is None else timeout,
                                                     self._drain_expired, slot, slot.generation)

    def _maybe_exit(self, slot: WorkerSlot) -> None:
        if slot.state == "draining" and not slot.calls:
            slot.state = "idle"
            log.info("worker slot {slot} (generation {gen}) finished its calls and exited", slot=slot.number,
                     gen=slot.generation)
            if self._drain_timer is not None and self._drain_timer.active():
                self._drain_timer.cancel()
            self._drain_timer = None
            if self.on_exit is not None:
                self.on_exit(slot)

    def _drain_expired(self, slot: WorkerSlot, generation: int) -> None:
        self._drain_timer = None
        if slot.state != "draining" or slot.generation != generation:
            return
        log.warn("worker slot {slot}: drain timeout, ending {n} call(s)", slot=slot.number, n=len(slot.calls))
        if self.call_handler is not None:
            self.call_handler.end_all(slot, "drain-timeout")  # each call leaves slot.calls as it ends
        self._maybe_exit(slot)

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"active_slot": self.active.number, "slots": [s.status() for s in self.slots]}
        if self.supervisor is not None:
            status.update(self.supervisor.summary())
        return status

    def worker_contact(self, user: str | None, secure: bool) -> str | None:
        """The active worker's URI for a new call (None: no worker serves that security)."""
        slot = self.active
        if slot.state != "active" or self.draining:
            return None
        user_part = f"{user}@" if user else ""
        if secure:
            if slot.tls_port is None:
                return None
            slot.redirects += 1
            return f"sips:{user_part}{self.host}:{slot.tls_port}"
        if slot.tcp_port is None:
            return None
        slot.redirects += 1
        return f"sip:{user_part}{self.host}:{slot.tcp_port};transport=tcp"

    # --- the UM service listener (5062/5063) -----------------------------------------------
    def handle_um_service(self, request: Request, peer: Peer) -> Response | None | Deferred[Response]:
        method = request.method
        if method == "ACK":
            return None
        if self.events is not None and method in self.events.METHODS:
            return self.events.handle(request, peer)
        if peer.transport != "tls" and not _allowed(peer.host, self.call_routers):
            self.untrusted += 1
            return make_response(request, 403, "Forbidden")
        if method == "INVITE":
            secure = request.ruri is not None and request.ruri.scheme == "sips"
            user = getattr(request.ruri, "user", None)
            contact = self.worker_contact(user, secure)
            if contact is None:
                reason = "no secured worker" if secure else "no unsecured worker"
                return make_response(request, 503, f"Service Unavailable - {reason}",
                                     [("Retry-After", "30"), ("Server", SERVER)])
            return make_response(request, 302, None, [("Contact", f"<{contact}>")])
        if method == "OPTIONS":
            events = [("Allow-Events", "message-summary")] if self.events is not None else []
            allow = "INVITE, ACK, CANCEL, OPTIONS, SERVICE" + (", SUBSCRIBE" if self.events is not None else "")
            return make_response(request, 200, None, [("Allow", allow), *events, ("Accept", "application/sdp"),
                                                      ("Server", SERVER)])
        if method == "SERVICE":
            return self._control(request, peer)
        if method == "CANCEL":
            return make_response(request, 481, None, [("Server", SERVER)])
        return refuse_method(request, "INVITE, ACK, CANCEL, OPTIONS, SERVICE")

    def _control(self, request: Request, peer: Peer) -> Response | Deferred[Response]:
        if peer.transport != "tls" and not _allowed(peer.host, self.control_networks):
            return make_response(request, 403, "Forbidden - control from loopback or the pool only")
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != CONTROL_TYPE:
            return make_response(request, 415, None, [("Accept", CONTROL_TYPE)])
        try:
            command = json.loads(request.body or b"{}")
            action = command.get("action")
        except (ValueError, AttributeError):
            return make_response(request, 400, "Bad Request - body is not a JSON object")
        def refused(error: BaseException) -> Response:
            return make_response(request, 503, f"Service Unavailable - {error}",
                                 [("Retry-After", "60"), ("Content-Type", CONTROL_TYPE)],
                                 json.dumps({"error": str(error), **self.status()}).encode())

        def done(result: dict[str, Any]) -> Response:
            return make_response(request, 200, None, [("Content-Type", CONTROL_TYPE)], json.dumps(result).encode())

        try:
            if action == "recycle":
                outcome = self.recycle()
            elif action == "status":
                outcome = self.status()
            else:
                return make_response(request, 400, "Bad Request - action must be recycle or status")
        except RuntimeError as error:
            return refused(error)
        if isinstance(outcome, Deferred):  # worker processes: answered once the fresh one took over
            return outcome.addCallbacks(done, lambda failure: refused(failure.value))
        return done(outcome)

    # --- worker listeners (5065/5067, 5066/5068) -------------------------------------------
    def worker_handler(self, slot_number: int) -> Callable[[Request, Peer], Response | None | Deferred[Response]]:
        slot = self.slots[slot_number - 1]

        def handle(request: Request, peer: Peer) -> Response | None | Deferred[Response]:
            return self._handle_worker(slot, request, peer)

        handle.slot = slot  # type: ignore[attr-defined]
        return handle

    def count_untrusted(self) -> None:
        """One request refused for its source by a service on our ports (MWI's SUBSCRIBE)."""
        self._untrusted += 1

    def trusts_caller(self, peer: Peer) -> bool:
        """Whether `peer` may send requests to a worker slot."""
        if peer.transport == "tls" or _allowed(peer.host, self.call_routers):
            return True
        return self.gateway is not None and self.gateway(peer) is not None

    def _handle_worker(self, slot: WorkerSlot, request: Request, peer: Peer) -> Response | None | Deferred[Response]:
        method = request.method
        if not self.trusts_caller(peer):
            self.untrusted += 1
            # The same generic answer whatever was asked: nothing about mailboxes or slots to strangers.
            return None if method == "ACK" else make_response(request, 403, "Forbidden")
        if method == "OPTIONS":
            return make_response(request, 200, None, [("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS"),
                                                      ("Accept", "application/sdp"), ("Server", SERVER)])
        if self.call_handler is None:
            return make_response(request, 503, "Service Unavailable - no UM worker on this node",
                                 [("Retry-After", "30"), ("Server", SERVER)])
        if method in self.call_handler.METHODS:
            result = self.call_handler.handle(self, slot, request, peer)  # calls, media and voicemail: um.worker
            if isinstance(result, Deferred):
                return result.addBoth(self._answering)
            return self._answering(result)
        return refuse_method(request, "INVITE, ACK, BYE, CANCEL, OPTIONS")
