"""The user-agent client's state machine, sans-I/O: requests out, bytes in, actions back.

One `UacCore` serves every connection of one client. The driver (um.sip.uac)
owns the sockets and the clock; it tells the core what happened (`start` a
request, bytes `received`, a connection `lost`, the time passed: `tick`) and
carries out the actions the core returns:

- `Send(conn, data)`: write bytes on a connection,
- `Final(token, response)` / `Failed(token, error)`: a request is settled,
- `Incoming(conn, request)`: a request from the peer (an in-dialog BYE...),
- `Close(conn)`: the stream is beyond repair.

The core stamps the top Via (our sent-by and a fresh branch), matches
responses to client transactions by branch and CSeq method (and, for peers
that answer an unparseable request without our Via, by Call-ID and CSeq on
the same connection), answers one 401/407 per request with digest
credentials (RFC 3261 §22.2), and turns Timers B/F (or a caller's shorter
timeout) and lost connections into failures. Only reliable transports (TCP,
TLS) are supported: no user of the client needs UDP.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

from um.sip.digest import DigestError, authorize
from um.sip.message import Request, Response
from um.sip.parser import MAX_MESSAGE_BYTES, StreamParser
from um.sip.transaction import RELIABLE, ClientTransaction, TransactionLayer, new_branch

ConnKey = Hashable


class SipTimeout(TimeoutError):
    """No final response in time (Timer B/F, or the caller's shorter timeout)."""


@dataclass(frozen=True)
class Credentials:
    """Digest credentials answering a 401/407 challenge."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Send:
    conn: ConnKey
    data: bytes


@dataclass(frozen=True)
class Final:
    token: object
    response: Response


@dataclass(frozen=True)
class Failed:
    token: object
    error: Exception


@dataclass(frozen=True)
class Incoming:
    conn: ConnKey
    request: Request


@dataclass(frozen=True)
class Close:
    conn: ConnKey


Action = Send | Final | Failed | Incoming | Close


@dataclass(eq=False)
class _Pending:
    """One request the caller waits for, across its digest retry."""

    token: object
    conn: ConnKey
    request: Request
    timeout: float | None
    credentials: Credentials | None
    txn: ClientTransaction | None = None
    challenged: bool = False


@dataclass(eq=False)
class _Connection:
    sent_by: str
    transport: str
    parser: StreamParser
    pending: set[_Pending] = field(default_factory=set)


def stamp_via(request: Request, transport: str, sent_by: str) -> None:
    """Make the top Via ours: transport, sent-by, a fresh branch (RFC 3261 §8.1.1.7), rport (RFC 3581)."""
    via = f"SIP/2.0/{transport.upper()} {sent_by};branch={new_branch()};rport"
    request.headers.items = [("Via", via), *((n, v) for n, v in request.headers.items if n != "Via")]


class UacCore:
    """Client transactions on any number of reliable connections."""

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self.layer = TransactionLayer(RELIABLE)
        self.max_message = max_message
        self._connections: dict[ConnKey, _Connection] = {}

    # --- connections --------------------------------------------------------------------------
    def opened(self, conn: ConnKey, sent_by: str, transport: str) -> None:
        """A connection is up; `sent_by` (host:port) goes into the Via of requests sent on it."""
        self._connections[conn] = _Connection(sent_by, transport, StreamParser(max_message=self.max_message))

    def lost(self, conn: ConnKey, error: Exception | None = None) -> list[Action]:
        """The connection is gone: every request waiting on it fails."""
        state = self._connections.pop(conn, None)
        if state is None:
            return []
        actions: list[Action] = []
        for pending in state.pending:
            if pending.txn is not None:
                self.layer.cancel_client(pending.txn)
            actions.append(Failed(pending.token, error or ConnectionError(
                "connection lost before the final response")))
        return actions

    def sent_by(self, conn: ConnKey) -> str:
        return self._connections[conn].sent_by

    # --- requests -----------------------------------------------------------------------------
    def start(self, conn: ConnKey, request: Request, now: float, token: object, *,
              timeout: float | None = None, credentials: Credentials | None = None) -> list[Action]:
        """Send `request` on `conn` as a new client transaction; `token` names it in Final/Failed."""
        state = self._connections.get(conn)
        if state is None:
            return [Failed(token, ConnectionError("not connected"))]
        pending = _Pending(token, conn, request, timeout, credentials)
        state.pending.add(pending)
        return [self._transmit(state, pending, request, now)]

    def stamp(self, conn: ConnKey, request: Request) -> bytes:
        """A request outside any transaction (the ACK of a 2xx, §13.2.2.4): stamped Via, the bytes to send."""
        state = self._connections[conn]
        stamp_via(request, state.transport, state.sent_by)
        return request.encode()

    def _transmit(self, state: _Connection, pending: _Pending, request: Request, now: float) -> Send:
        stamp_via(request, state.transport, state.sent_by)
        pending.request = request
        pending.txn = self.layer.send_request(request, now, context=pending, timeout=pending.timeout)
        return Send(pending.conn, pending.txn.wire)

    # --- input --------------------------------------------------------------------------------
    def received(self, conn: ConnKey, data: bytes, now: float) -> list[Action]:
        """Bytes from a connection: responses settle requests, requests go up, pings are answered."""
        state = self._connections.get(conn)
        if state is None:
            return []
        actions: list[Action] = []
        for event in state.parser.feed(data):
            if event.error is not None:
                if event.error.fatal:
                    actions.append(Close(conn))
                    return actions + self.lost(conn, ConnectionError(f"unparseable SIP from the peer: "
                                                                     f"{event.error}"))
                continue
            message = event.message
            if isinstance(message, Response):
                actions.extend(self._response(state, message, now))
            elif isinstance(message, Request):
                actions.append(Incoming(conn, message))
            elif event.ping:
                actions.append(Send(conn, b"\r\n"))  # RFC 5626 §4.4.1 pong
        return actions

    def _response(self, state: _Connection, response: Response, now: float) -> list[Action]:
        event = self.layer.receive_response(response, now)
        pending: _Pending | None = None
        if event.kind == "response" and isinstance(event.transaction, ClientTransaction):
            pending = event.transaction.context
        elif event.kind == "retransmission":
            conn = self._conn_of(event.transaction)
            return [Send(conn, event.data)] if event.data and conn is not None else []
        elif event.kind == "stray":
            pending = self._by_call_id(state, response)
            if pending is not None and pending.txn is not None:
                self.layer.cancel_client(pending.txn)
        if pending is None or response.status < 200:
            return []
        actions: list[Action] = []
        if event.data:  # the ACK of a non-2xx final response to an INVITE (§17.1.1.3)
            actions.append(Send(pending.conn, event.data))
        if response.status in (401, 407) and pending.credentials is not None and not pending.challenged:
            pending.challenged = True
            try:
                retry = authorize(pending.request, response, pending.credentials.username,
                                  pending.credentials.password)
            except DigestError:
                pass  # no usable challenge: the caller gets the 401/407
            else:
                actions.append(self._transmit(state, pending, retry, now))
                return actions
        state.pending.discard(pending)
        actions.append(Final(pending.token, response))
        return actions

    def _conn_of(self, txn: object) -> ConnKey | None:
        context = getattr(txn, "context", None)
        return context.conn if isinstance(context, _Pending) else None

    @staticmethod
    def _by_call_id(state: _Connection, response: Response) -> _Pending | None:
        """A peer answering a request it could not parse may lack our Via: Call-ID and CSeq still match."""
        call_id, cseq = response.headers.get("Call-ID"), response.headers.get("CSeq")
        for pending in state.pending:
            headers = pending.request.headers
            if call_id and headers.get("Call-ID") == call_id and headers.get("CSeq") == cseq:
                return pending
        return None

    # --- time ---------------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return self.layer.next_deadline()

    def tick(self, now: float) -> list[Action]:
        """Timers due by `now`: timed-out requests fail."""
        actions: list[Action] = []
        for event in self.layer.tick(now):
            txn = event.transaction
            if event.kind == "timeout" and isinstance(txn, ClientTransaction) and isinstance(txn.context, _Pending):
                pending = txn.context
                state = self._connections.get(pending.conn)
                if state is not None:
                    state.pending.discard(pending)
                actions.append(Failed(pending.token, SipTimeout(f"no final response to {txn.request.method}")))
        return actions


__all__ = ["Action", "Close", "ConnKey", "Credentials", "Failed", "Final", "Incoming", "Send", "SipTimeout",
           "UacCore", "stamp_via"]
