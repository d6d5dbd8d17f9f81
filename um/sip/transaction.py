"""The transaction layer (RFC 3261 §17), sans-I/O: fed messages and the time, returns what to do.

Server transactions (INVITE and non-INVITE) absorb retransmissions, resend
the last response, match the ACK of a non-2xx final response and time out
(Timer H). Client transactions (OPTIONS, REGISTER, SERVICE, INVITE...)
retransmit on unreliable transports, time out (Timers B/F) and build the ACK
for a non-2xx final response (§17.1.1.3). Timers follow §17 and Table 4,
with the zero values reliable transports (TCP, TLS) get.

Matching uses the branch with the magic cookie (§17.2.3) and falls back to
RFC 2543 matching (Request-URI, tags, Call-ID, CSeq, top Via) for branches
without it (RFC 4475 §3.2.1).

Nothing here touches a socket or a clock: `now` comes in, and the caller
calls `tick(now)` at `next_deadline()` (or periodically).
"""

from __future__ import annotations

import heapq
import itertools
import secrets
from dataclasses import dataclass
from typing import Any

from um.sip.headers import MAGIC_COOKIE, Via
from um.sip.message import Headers, Request, Response

T1, T2, T4 = 0.5, 4.0, 5.0


@dataclass(frozen=True)
class Timers:
    """RFC 3261 Table 4 for one transport kind."""

    reliable: bool
    t1: float = T1
    t2: float = T2
    t4: float = T4

    @property
    def timeout(self) -> float:  # Timers B, F, H (and J on unreliable transports)
        return 64 * self.t1

    @property
    def timer_i(self) -> float:
        return 0.0 if self.reliable else self.t4

    @property
    def timer_j(self) -> float:
        return 0.0 if self.reliable else 64 * self.t1

    @property
    def timer_k(self) -> float:
        return 0.0 if self.reliable else self.t4

    @property
    def timer_d(self) -> float:
        return 0.0 if self.reliable else 32.0


RELIABLE = Timers(reliable=True)
UNRELIABLE = Timers(reliable=False)


def new_branch() -> str:
    return MAGIC_COOKIE + secrets.token_hex(8)


def _tag_of(value: str | None) -> str | None:
    if not value:
        return None
    params = value[value.rfind(">") + 1:] if "<" in value else value
    for item in params.split(";")[1:]:
        name, _, tag = item.partition("=")
        if name.strip().lower() == "tag":
            return tag.strip()
    return None


def server_key(request: Request) -> tuple[Any, ...]:
    """The server transaction a request belongs to (an ACK maps to its INVITE's)."""
    if not request.vias:
        raise ValueError("server_key needs a validated request (its Via headers parsed)")
    via: Via = request.vias[0]
    method = "INVITE" if request.method == "ACK" else request.method
    if via.rfc3261_branch:
        return (via.branch, via.sent_by, method)
    # RFC 2543 (§17.2.3 last paragraphs): everything but the To tag (the ACK carries ours).
    headers = request.headers
    return ("2543", request.uri, _tag_of(headers.get("From")), headers.get("Call-ID"),
            request.cseq_number, str(via), method)


@dataclass(eq=False)
class ServerTransaction:
    key: tuple[Any, ...]
    method: str
    request: Request
    timers: Timers
    state: str = "trying"  # trying/proceeding/completed/confirmed/accepted/terminated
    response: bytes | None = None
    status: int = 0
    deadline: float = 0.0
    retransmit_at: float = 0.0
    interval: float = 0.0
    peer: Any = None  # whatever the adapter needs to send on (connection, address)

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"


@dataclass(eq=False)
class ClientTransaction:
    key: tuple[str, str]
    request: Request
    timers: Timers
    wire: bytes
    state: str = "calling"  # calling/trying/proceeding/completed/terminated
    deadline: float = 0.0
    retransmit_at: float = 0.0
    interval: float = 0.0
    ack: bytes | None = None
    context: Any = None  # the TU's (e.g. a Deferred)

    @property
    def terminated(self) -> bool:
        return self.state == "terminated"


@dataclass
class Event:
    """Something the layer tells its user.

    kind: "request" (a new request for the TU; `transaction` set unless ACK to 2xx),
    "ack" (the ACK of a non-2xx final response, absorbed), "retransmission"
    (send `data` again, or nothing), "response" (a client transaction's
    response for the TU), "timeout" (a client transaction timed out, or a
    server INVITE transaction got no ACK), "send" (bytes to transmit),
    "stray" (a response matching no client transaction: drop it).
    """

    kind: str
    transaction: ServerTransaction | ClientTransaction | None = None
    message: Request | Response | None = None
    data: bytes | None = None


class TransactionLayer:
    """All transactions of one transport kind (reliable or not) on one node."""

    def __init__(self, timers: Timers = RELIABLE) -> None:
        self.timers = timers
        self.server: dict[tuple[Any, ...], ServerTransaction] = {}
        self.client: dict[tuple[str, str], ClientTransaction] = {}
        self._heap: list[tuple[float, int, Any]] = []
        self._seq = itertools.count()

    # --- server side -------------------------------------------------------------------------
    def receive_request(self, request: Request, now: float, peer: Any = None) -> Event:
        """A validated request arrives: a new transaction, a retransmission, or an ACK."""
        key = server_key(request)
        txn = self.server.get(key)
        if request.method == "ACK":
            if txn is not None and txn.method == "INVITE" and 300 <= txn.status:
                if txn.state == "completed":
                    txn.state = "confirmed"
                    self._finish_or_wait(txn, now, self.timers.timer_i)
                return Event("ack", txn, request)
            return Event("request", None, request)  # ACK for a 2xx: the TU's (dialog) business
        if txn is not None and not txn.terminated:
            data = txn.response if txn.state in ("proceeding", "completed", "accepted") else None
            return Event("retransmission", txn, request, data)
        txn = ServerTransaction(key, request.method, request, self.timers, peer=peer)
        txn.state = "proceeding" if request.method == "INVITE" else "trying"
        self.server[key] = txn
        return Event("request", txn, request)

    def send_response(self, txn: ServerTransaction, response: Response, now: float) -> bytes:
        """The TU answers: returns the bytes to send and moves the state machine."""
        wire = response.encode()
        status = response.status
        txn.response, txn.status = wire, status
        timers = self.timers
        if txn.method == "INVITE":
            if status < 200:
                txn.state = "proceeding"
            elif status < 300:
                # RFC 6026 Accepted: absorb INVITE retransmissions on unreliable transports.
                txn.state = "accepted"
                self._finish_or_wait(txn, now, 0.0 if timers.reliable else timers.timeout)
            else:
                txn.state = "completed"
                txn.deadline = now + timers.timeout  # Timer H
                if not timers.reliable:
                    txn.interval = timers.t1
                    txn.retransmit_at = now + timers.t1  # Timer G
                    self._schedule(txn.retransmit_at, txn)
                self._schedule(txn.deadline, txn)
        else:
            if status < 200:
                txn.state = "proceeding"
            else:
                txn.state = "completed"
                self._finish_or_wait(txn, now, timers.timer_j)
        return wire

    def _finish_or_wait(self, txn: ServerTransaction | ClientTransaction, now: float, delay: float) -> None:
        if delay <= 0:
            self._terminate(txn)
        else:
            txn.deadline = now + delay
            txn.retransmit_at = 0.0
            self._schedule(txn.deadline, txn)

    def _terminate(self, txn: ServerTransaction | ClientTransaction) -> None:
        txn.state = "terminated"
        if isinstance(txn, ServerTransaction):
            if self.server.get(txn.key) is txn:
                del self.server[txn.key]
        elif self.client.get(txn.key) is txn:
            del self.client[txn.key]

    # --- client side -------------------------------------------------------------------------
    def send_request(self, request: Request, now: float, context: Any = None,
                     timeout: float | None = None) -> ClientTransaction:
        """Start a client transaction; `request`'s top Via must carry a fresh branch. Send txn.wire."""
        via = request.headers.get("Via") or ""
        branch = via.split("branch=", 1)[1].split(";", 1)[0].strip() if "branch=" in via else ""
        if not branch.startswith(MAGIC_COOKIE):
            raise ValueError("client requests need a Via branch with the magic cookie")
        key = (branch, request.method)
        txn = ClientTransaction(key, request, self.timers, request.encode(), context=context)
        txn.state = "calling" if request.method == "INVITE" else "trying"
        txn.deadline = now + (timeout if timeout is not None else self.timers.timeout)  # Timer B / F
        if not self.timers.reliable:
            txn.interval = self.timers.t1
            txn.retransmit_at = now + self.timers.t1  # Timer A / E
            self._schedule(txn.retransmit_at, txn)
        self._schedule(txn.deadline, txn)
        self.client[key] = txn
        return txn

    def receive_response(self, response: Response, now: float) -> Event:
        """A validated response arrives: for the TU, absorbed, or stray."""
        via = response.vias[0] if response.vias else None
        method = response.cseq_method or ""
        txn = self.client.get((via.branch, method)) if via is not None and via.branch else None
        if txn is None or txn.terminated:
            return Event("stray", None, response)
        status = response.status
        if txn.state == "completed":
            # A retransmitted final response: resend the ACK (INVITE) or ignore.
            return Event("retransmission", txn, response, txn.ack)
        if status < 200:
            txn.state = "proceeding"
            if not self.timers.reliable and method != "INVITE":
                txn.interval = self.timers.t2  # Timer E continues at T2 in Proceeding
            elif method == "INVITE":
                txn.retransmit_at = 0.0  # Timer A stops
            return Event("response", txn, response)
        if method == "INVITE":
            if status < 300:
                self._terminate(txn)  # the TU ACKs a 2xx itself (§13.2.2.4)
                return Event("response", txn, response)
            txn.ack = build_ack(txn.request, response).encode()
            txn.state = "completed"
            self._finish_or_wait_completed(txn, now, self.timers.timer_d)
            return Event("response", txn, response, txn.ack)
        txn.state = "completed"
        self._finish_or_wait_completed(txn, now, self.timers.timer_k)
        return Event("response", txn, response)

    def _finish_or_wait_completed(self, txn: ClientTransaction, now: float, delay: float) -> None:
        if delay <= 0:
            self._terminate(txn)
        else:
            txn.deadline = now + delay
            txn.retransmit_at = 0.0
            self._schedule(txn.deadline, txn)

    def cancel_client(self, txn: ClientTransaction) -> None:
        """Forget a client transaction (its connection is gone)."""
        self._terminate(txn)

    # --- timers ------------------------------------------------------------------------------
    def _schedule(self, when: float, txn: Any) -> None:
        heapq.heappush(self._heap, (when, next(self._seq), txn))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def tick(self, now: float) -> list[Event]:
        """Fire every timer due by `now`: retransmissions ("send"), timeouts, terminations."""
        events: list[Event] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            when, _, txn = heapq.heappop(heap)
            if txn.terminated:
                continue
            if txn.retransmit_at and when == txn.retransmit_at and when < txn.deadline:
                txn.interval = min(txn.interval * 2, self.timers.t2) if (
                    isinstance(txn, ServerTransaction) or txn.request.method != "INVITE") else txn.interval * 2
                txn.retransmit_at = now + txn.interval
                self._schedule(txn.retransmit_at, txn)
                data = txn.response if isinstance(txn, ServerTransaction) else txn.wire
                events.append(Event("send", txn, None, data))
                continue
            if when < txn.deadline:
                continue  # a stale entry (the deadline moved)
            if isinstance(txn, ServerTransaction):
                timed_out = txn.method == "INVITE" and txn.state == "completed"  # Timer H: no ACK
                self._terminate(txn)
                if timed_out:
                    events.append(Event("timeout", txn))
            else:
                timed_out = txn.state in ("calling", "trying", "proceeding")
                self._terminate(txn)
                if timed_out:
                    events.append(Event("timeout", txn))
        return events


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK a client transaction sends for a non-2xx final response (RFC 3261 §17.1.1.3)."""
    items = []
    headers = invite.headers
    items.append(("Via", headers.get("Via") or ""))
    for name in ("Route",):
        items.extend((name, value) for value in headers.get_all(name))
    items.append(("Max-Forwards", headers.get("Max-Forwards") or "70"))
    items.append(("From", headers.get("From") or ""))
    items.append(("To", response.headers.get("To") or headers.get("To") or ""))
    items.append(("Call-ID", headers.get("Call-ID") or ""))
    number = (headers.get("CSeq") or "1").split(" ", 1)[0]
    items.append(("CSeq", f"{number} ACK"))
    return Request("ACK", invite.uri, Headers(items))


def make_request(method: str, uri: str, *, via_host: str, transport: str, from_uri: str, to_uri: str,
                 call_id: str | None = None, cseq: int = 1, extra: list[tuple[str, str]] | None = None,
                 body: bytes = b"", from_tag: str | None = None, branch: str | None = None) -> Request:
    """A new out-of-dialog request with a fresh branch, tag and Call-ID (RFC 3261 §8.1.1)."""
    items = [
        ("Via", f"SIP/2.0/{transport.upper()} {via_host};branch={branch or new_branch()};rport"),
        ("Max-Forwards", "70"),
        ("From", f"<{from_uri}>;tag={from_tag or secrets.token_hex(6)}"),
        ("To", f"<{to_uri}>"),
        ("Call-ID", call_id or f"{secrets.token_hex(10)}@{via_host.split(':')[0]}"),
        ("CSeq", f"{cseq} {method}"),
    ]
    items.extend(extra or [])
    return Request(method, uri, Headers(items), body)


__all__ = ["T1", "T2", "T4", "Timers", "RELIABLE", "UNRELIABLE", "TransactionLayer", "ServerTransaction",
           "ClientTransaction", "Event", "build_ack", "make_request", "new_branch", "server_key"]
