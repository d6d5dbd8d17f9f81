"""Twisted SIP client over TCP/TLS: client transactions on pooled connections.

`SipClient.request(...)` sends a request on a (re)used connection to
host:port and returns a Deferred firing with the final response, or failing
with `SipTimeout` (Timer B/F, or the caller's shorter timeout) or
`ConnectionError`. A non-2xx final response to an INVITE is ACKed by the
transaction (RFC 3261 §17.1.1.3). Used by the call router (OPTIONS probes,
asking a mailbox server's UM service for its worker) and by tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import SSL4ClientEndpoint, TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from um.sip.message import Request, Response
from um.sip.parser import StreamParser
from um.sip.transaction import RELIABLE, TransactionLayer, new_branch


class SipTimeout(Exception):
    """No final response in time."""


class _ClientProtocol(Protocol):
    log = Logger(namespace="umedge.sip.client")

    def __init__(self, client: SipClient, key: tuple[str, int, str]) -> None:
        self.client, self.key = client, key
        self.parser = StreamParser()
        self.pending: set[Any] = set()

    def dataReceived(self, data: bytes) -> None:
        try:
            for event in self.parser.feed(data):
                if event.error is not None and event.error.fatal:
                    self.transport.loseConnection()
                    return
                message = event.message
                if isinstance(message, Response):
                    self.client._on_response(message)
                elif event.ping:
                    self.transport.write(b"\r\n")
        except Exception:  # noqa: BLE001
            self.log.failure("client connection failed on input")
            self.transport.abortConnection()

    def connectionLost(self, reason: Any = None) -> None:
        self.client._lost(self)


class SipClient:
    """Client transactions for one node; one connection per (host, port, transport), reused."""

    log = Logger(namespace="umedge.sip.client")

    def __init__(self, reactor: Any, via_host: str,
                 tls_creator: Callable[[str], Any] | None = None) -> None:
        self.reactor = reactor
        self.via_host = via_host
        self.tls_creator = tls_creator  # hostname -> IOpenSSLClientConnectionCreator
        self.layer = TransactionLayer(RELIABLE)
        self._connections: dict[tuple[str, int, str], _ClientProtocol] = {}
        self._waiting: dict[tuple[str, int, str], list[defer.Deferred[_ClientProtocol]]] = {}
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.clock = reactor
        self._ticker.start(0.25, now=False)

    def close(self) -> None:
        if self._ticker.running:
            self._ticker.stop()
        for protocol in list(self._connections.values()):
            protocol.transport.loseConnection()

    def _connect(self, host: str, port: int, transport: str) -> defer.Deferred[_ClientProtocol]:
        key = (host, port, transport)
        existing = self._connections.get(key)
        if existing is not None and existing.transport is not None and existing.connected:
            return defer.succeed(existing)
        waiter: defer.Deferred[_ClientProtocol] = defer.Deferred()
        waiters = self._waiting.get(key)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        if transport == "tls" and self.tls_creator is None:
            return defer.fail(ConnectionError("no TLS client credentials configured"))
        self._waiting[key] = [waiter]
        factory = Factory.forProtocol(lambda: _ClientProtocol(self, key))
        factory.noisy = False
        if transport == "tls":
            endpoint = SSL4ClientEndpoint(self.reactor, host, port, self.tls_creator(host), timeout=5)
        else:
            endpoint = TCP4ClientEndpoint(self.reactor, host, port, timeout=5)

        def connected(protocol: _ClientProtocol) -> None:
            self._connections[key] = protocol
            for each in self._waiting.pop(key, []):
                each.callback(protocol)

        def failed(failure: Any) -> None:
            for each in self._waiting.pop(key, []):
                each.errback(failure)

        endpoint.connect(factory).addCallbacks(connected, failed)
        return waiter

    def request(self, host: str, port: int, transport: str, request: Request,
                timeout: float | None = None) -> defer.Deferred[Response]:
        """Send `request` (its top Via gets our sent-by and a fresh branch); fire with the final response."""
        branch = new_branch()
        via = f"SIP/2.0/{transport.upper()} {self.via_host};branch={branch};rport"
        items = [(n, v) for n, v in request.headers.items if n != "Via"]
        request.headers.items = [("Via", via), *items]
        result: defer.Deferred[Response] = defer.Deferred()

        def send(protocol: _ClientProtocol) -> None:
            def on_response(response: Response, ack: bytes | None) -> None:
                if ack:
                    protocol.transport.write(ack)
                if response.status >= 200 and not result.called:
                    protocol.pending.discard(txn)
                    result.callback(response)

            txn = self.layer.send_request(request, self.reactor.seconds(), context=on_response,
                                          timeout=timeout)
            txn.peer = (protocol, result)
            protocol.pending.add(txn)
            protocol.transport.write(txn.wire)

        def not_connected(failure: Any) -> None:
            if not result.called:
                result.errback(ConnectionError(f"cannot connect to {host}:{port} ({transport}): "
                                               f"{failure.getErrorMessage()}"))

        self._connect(host, port, transport).addCallbacks(send, not_connected)
        return result

    def _on_response(self, response: Response) -> None:
        event = self.layer.receive_response(response, self.reactor.seconds())
        if event.kind == "response" and event.transaction is not None:
            event.transaction.context(response, event.data)
        elif event.kind == "retransmission" and event.data and event.transaction is not None:
            protocol = event.transaction.peer[0]
            protocol.transport.write(event.data)

    def _tick(self) -> None:
        for event in self.layer.tick(self.reactor.seconds()):
            if event.kind == "timeout" and event.transaction is not None:
                protocol, result = event.transaction.peer
                protocol.pending.discard(event.transaction)
                if not result.called:
                    result.errback(SipTimeout(f"no final response to {event.transaction.request.method}"))

    def _lost(self, protocol: _ClientProtocol) -> None:
        if self._connections.get(protocol.key) is protocol:
            del self._connections[protocol.key]
        for txn in list(protocol.pending):
            self.layer.cancel_client(txn)
            result = txn.peer[1]
            if not result.called:
                result.errback(ConnectionError("connection lost before the final response"))
        protocol.pending.clear()

