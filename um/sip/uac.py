"""The SIP user-agent client: requests over pooled TCP/TLS connections, on asyncio.

Every SIP request umedge originates goes through `UserAgentClient`: the call
router's OPTIONS probes and mailbox lookups, the worker's MRAS SERVICE and
outbound INVITE/BYE, the edge's REGISTER/OPTIONS to its mediation server
and the CLI's control SERVICE. The state machine (Via, transaction
matching, digest answers, timeouts) is the sans-I/O um.sip.uac_core; this
module only owns sockets and the clock.

It runs on asyncio because that is the one loop every user has: the node's
Twisted reactor runs on it (asyncioreactor), and the tests and the CLI run
the MRAS and control clients under plain `asyncio.run`. Twisted callers use
`DeferredUac`, which wraps each request as a Deferred.

    uac = UserAgentClient(ssl_context=context)
    response = await uac.request("edge1.example.test", 5061, "tls", make_request(...),
                                 credentials=Credentials("user", "secret"))
    await uac.aclose()
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from twisted.internet import defer

from um.sip.message import Request, Response, make_response
from um.sip.parser import MAX_MESSAGE_BYTES
from um.sip.uac_core import Close, Credentials, Failed, Final, Incoming, Send, SipTimeout, UacCore
from um.sip.uri import bracket

ConnectionKey = tuple[str, int, str]
RequestHandler = Callable[[Request], "Response | None"]
SslSource = ssl.SSLContext | Callable[[], ssl.SSLContext] | None
SERVER = "umedge/0.1"


class _Protocol(asyncio.Protocol):
    """Moves bytes between one connection and the client; nothing else."""

    def __init__(self, client: UserAgentClient, key: ConnectionKey) -> None:
        self.client, self.key = client, key
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # some loops' transports (uvloop's) are not subclasses

    def data_received(self, data: bytes) -> None:
        self.client._received(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client._lost(self, exc)
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass(eq=False)
class Connection:
    """One pooled connection: what a caller needs to build requests for it (its sent-by, for Contact)."""

    key: ConnectionKey
    protocol: _Protocol
    local: tuple[str, int]
    dialogs: dict[str, RequestHandler] = field(default_factory=dict)

    @property
    def sent_by(self) -> str:
        return f"{bracket(self.local[0])}:{self.local[1]}"

    @property
    def open(self) -> bool:
        transport = self.protocol.transport
        return transport is not None and not transport.is_closing()


class UserAgentClient:
    """Client transactions on connections reused per (host, port, transport).

    `via_host`: the sent-by of our Via headers (default: each connection's
    local address). `ssl_context`: for TLS, a context or a function making
    one when the first TLS connection opens. Requests the peer sends on our
    connections go to the handler registered for their Call-ID
    (`on_dialog`); others get a plain answer (200 to OPTIONS, else 481).
    """

    def __init__(self, *, via_host: str | None = None, ssl_context: SslSource = None,
                 max_message: int = MAX_MESSAGE_BYTES, connect_timeout: float = 5.0) -> None:
        self.via_host = via_host
        self._ssl_source = ssl_context
        self._ssl: ssl.SSLContext | None = None
        self.connect_timeout = connect_timeout
        self.core = UacCore(max_message)
        self._connections: dict[ConnectionKey, Connection] = {}
        self._connecting: dict[ConnectionKey, asyncio.Future[Connection]] = {}
        self._dialogs: dict[str, RequestHandler] = {}
        self._waiting: dict[object, asyncio.Future[Response]] = {}
        self._timer: asyncio.TimerHandle | None = None

    # --- connections --------------------------------------------------------------------------
    async def connect(self, host: str, port: int, transport: str = "tcp", *,
                      server_hostname: str | None = None) -> Connection:
        """The open connection to host:port (made, or reused); ConnectionError if it cannot be had."""
        key = (host.strip("[]"), port, transport.lower())
        existing = self._connections.get(key)
        if existing is not None and existing.open:
            return existing
        pending = self._connecting.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self._open(key, server_hostname))
            self._connecting[key] = pending
            pending.add_done_callback(lambda _: self._connecting.pop(key, None))
        return await asyncio.shield(pending)

    async def _open(self, key: ConnectionKey, server_hostname: str | None) -> Connection:
        host, port, transport = key
        if transport not in ("tcp", "tls"):
            raise ConnectionError(f"SIP over {transport} is not supported (TCP or TLS)")
        context = self._context() if transport == "tls" else None
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(loop.create_connection(
                lambda: _Protocol(self, key), host, port, ssl=context,
                server_hostname=(server_hostname or host) if context is not None else None), self.connect_timeout)
        except (OSError, TimeoutError) as error:
            raise ConnectionError(f"cannot connect to {bracket(host)}:{port} ({transport}): "
                                  f"{error or type(error).__name__}") from error
        assert protocol.transport is not None
        local = protocol.transport.get_extra_info("sockname")
        connection = Connection(key, protocol, (str(local[0]), int(local[1])))
        self._connections[key] = connection
        sent_by = f"{self.via_host}" if self.via_host else connection.sent_by
        self.core.opened(protocol, sent_by, transport)
        return connection

    def _context(self) -> ssl.SSLContext:
        if self._ssl is None:
            source = self._ssl_source
            if source is None:
                raise ConnectionError("no TLS client credentials configured")
            try:
                self._ssl = source if isinstance(source, ssl.SSLContext) else source()
            except (OSError, ValueError, ssl.SSLError) as error:
                raise ConnectionError(f"no TLS client credentials: {error}") from error
        return self._ssl

    # --- requests -----------------------------------------------------------------------------
    async def request(self, host: str, port: int, transport: str, request: Request, *,
                      timeout: float | None = None, credentials: Credentials | None = None,
                      server_hostname: str | None = None) -> Response:
        """Send `request` (its top Via becomes ours) and return the final response.

        A 401/407 is answered once when `credentials` are given. Raises
        SipTimeout (a TimeoutError) without a final response in time,
        ConnectionError when the connection cannot be made or is lost.
        """
        connection = await self.connect(host, port, transport, server_hostname=server_hostname)
        token = object()
        future: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            self._run(self.core.start(connection.protocol, request, self._now(), token, timeout=timeout,
                                      credentials=credentials))
            return await future
        finally:
            self._waiting.pop(token, None)

    async def send(self, connection: Connection, request: Request) -> None:
        """Send a request outside any transaction (the ACK of a 2xx): stamped Via, no answer awaited."""
        if not connection.open:
            raise ConnectionError("connection closed")
        self._write(connection.protocol, self.core.stamp(connection.protocol, request))

    def on_dialog(self, call_id: str, handler: RequestHandler | None) -> None:
        """Route the peer's requests with this Call-ID to `handler` (None: stop)."""
        if handler is None:
            self._dialogs.pop(call_id, None)
        else:
            self._dialogs[call_id] = handler

    # --- the core's actions -------------------------------------------------------------------
    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _run(self, actions: list[Send | Final | Failed | Incoming | Close]) -> None:
        for action in actions:
            if isinstance(action, Send):
                assert isinstance(action.conn, _Protocol)
                self._write(action.conn, action.data)
            elif isinstance(action, Final):
                self._settle(action.token, action.response, None)
            elif isinstance(action, Failed):
                self._settle(action.token, None, action.error)
            elif isinstance(action, Incoming):
                assert isinstance(action.conn, _Protocol)
                self._incoming(action.conn, action.request)
            elif isinstance(action.conn, _Protocol) and action.conn.transport is not None:
                action.conn.transport.abort()
        self._arm()

    def _write(self, protocol: _Protocol, data: bytes) -> None:
        if protocol.transport is not None and not protocol.transport.is_closing():
            protocol.transport.write(data)

    def _settle(self, token: object, response: Response | None, error: Exception | None) -> None:
        future = self._waiting.get(token)
        if future is None or future.done():
            return
        if response is not None:
            future.set_result(response)
        else:
            future.set_exception(error or ConnectionError("request failed"))

    def _incoming(self, protocol: _Protocol, request: Request) -> None:
        handler = self._dialogs.get(request.headers.get("Call-ID") or "")
        if handler is not None:
            response = handler(request)
        elif request.method == "OPTIONS":
            response = make_response(request, 200, None, [("Server", SERVER)])
        elif request.method == "ACK":
            response = None
        else:
            response = make_response(request, 481, None, [("Server", SERVER)])
        if response is not None:
            self._write(protocol, response.encode())

    def _received(self, protocol: _Protocol, data: bytes) -> None:
        self._run(self.core.received(protocol, data, self._now()))

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        connection = self._connections.get(protocol.key)
        if connection is not None and connection.protocol is protocol:
            del self._connections[protocol.key]
        error = ConnectionError(f"connection lost before the final response: {exc}" if exc else
                                "connection lost before the final response")
        self._run(self.core.lost(protocol, error))

    def _arm(self) -> None:
        """Wake up at the core's next deadline (Timer B/F or a caller's timeout)."""
        deadline = self.core.next_deadline()
        if self._timer is not None:
            if deadline is not None and self._timer.when() <= deadline:
                return
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = asyncio.get_running_loop().call_at(deadline, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._run(self.core.tick(self._now()))

    # --- closing ------------------------------------------------------------------------------
    def close(self) -> None:
        """Close every connection (requests still waiting fail with ConnectionError)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for connection in list(self._connections.values()):
            transport = connection.protocol.transport
            if transport is not None and not transport.is_closing():
                transport.close()

    async def aclose(self, grace: float = 2.0) -> None:
        """Close, then wait (up to `grace`) for the connections to be gone; abort what lingers."""
        connections = list(self._connections.values())
        self.close()
        for connection in connections:
            try:
                await asyncio.wait_for(asyncio.shield(connection.protocol.closed), grace)
            except TimeoutError:
                if connection.protocol.transport is not None:
                    connection.protocol.transport.abort()


class DeferredUac:
    """`UserAgentClient` for Twisted callers: each request is a Deferred (the reactor runs on asyncio)."""

    def __init__(self, client: UserAgentClient) -> None:
        self.client = client

    def request(self, host: str, port: int, transport: str, request: Request, *,
                timeout: float | None = None, credentials: Credentials | None = None) -> defer.Deferred[Response]:
        return defer.Deferred.fromFuture(asyncio.ensure_future(self.client.request(
            host, port, transport, request, timeout=timeout, credentials=credentials)))

    def close(self) -> None:
        self.client.close()


__all__ = ["Connection", "Credentials", "DeferredUac", "SipTimeout", "UserAgentClient", "bracket"]
