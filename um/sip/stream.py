"""Twisted adapter: SIP over a TCP or TLS connection, fed through the sans-I/O parser and transactions.

The protocol only moves bytes; what to answer is the handler's business. A
handler gets each new request (retransmissions and the ACK of a non-2xx
final response are absorbed by the server transaction layer) and returns a
Response, None (no answer: ACK), or a Deferred firing with either (then an
INVITE gets 100 Trying at once). An unparseable stream closes this
connection and touches nothing else; no exception escapes the protocol.

Via handling follows RFC 3261 §18.2.1 and RFC 3581: `received` is added
when the sent-by host is not the source address, `rport` is filled in when
the client asked for it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet import defer, task
from twisted.internet.interfaces import ISSLTransport, ITCPTransport
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from um.netguard import settle_connection
from um.sip.headers import parse_cseq, parse_via
from um.sip.message import Request, Response, make_response
from um.sip.parser import (
    MAX_MESSAGE_BYTES,
    SipParseError,
    StreamParser,
    validate_request,
    validate_response,
)
from um.sip.transaction import RELIABLE, ClientTransaction, TransactionLayer
from um.sip.uri import same_address, unmapped


@dataclass(frozen=True)
class Peer:
    """Who sent a message: address, port, transport and, over MTLS, the certificate name(s)."""

    host: str
    port: int
    transport: str  # "tcp" or "tls"
    cert_name: str | None = None
    cert_names: tuple[str, ...] = ()  # subject CN and DNS/IP subjectAltNames of a TLS peer
    connection: Any = field(default=None, compare=False, repr=False)  # the protocol, to send on later


Handler = Callable[[Request, Peer],
                   "Response | None | defer.Deferred[Response] | defer.Deferred[Response | None]"]


def _certificate_names(cert: Any) -> tuple[str | None, tuple[str, ...]]:
    if cert is None:
        return None, ()
    common = cert.get_subject().commonName
    names = [common] if common else []
    try:
        from cryptography import x509

        sans = cert.to_cryptography().extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names += sans.get_values_for_type(x509.DNSName)
        names += [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    except Exception:  # noqa: BLE001 - no SAN extension, or an odd certificate: CN only
        pass
    return common, tuple(dict.fromkeys(n.lower() for n in names))


def fix_via(request: Request, peer: Peer) -> None:
    """Add received/rport to the top Via (RFC 3261 §18.2.1, RFC 3581 §4)."""
    via = request.vias[0] if request.vias else None
    if via is None:
        return
    params = via.params
    needs_rport = "rport" in params and params["rport"] is None
    differs = not same_address(via.host, peer.host)  # `[::1]` sent from ::1 needs no received
    if not differs and not needs_rport:
        return
    if differs:
        params["received"] = peer.host  # RFC 3261's form: an IPv6 address without brackets, as Kamailio writes
    if needs_rport:
        params["rport"] = str(peer.port)
    headers = request.headers
    rest = (headers.get("Via") or "").split(",", 1)
    headers.replace_first("Via", str(via) + ("," + rest[1] if len(rest) > 1 else ""))


KNOWN_METHODS = frozenset(("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REGISTER", "PRACK", "SUBSCRIBE",
                           "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE", "SERVICE"))


class SipStats:
    """Requests by method and responses by code, process-wide (bounded labels for /metrics)."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.responses: Counter[str] = Counter()
        self.rate_limited = 0

    def request(self, method: str) -> None:
        self.requests[method if method in KNOWN_METHODS else "other"] += 1

    def response(self, status: int) -> None:
        self.responses[str(status) if 100 <= status <= 699 else "other"] += 1


STATS = SipStats()
DEFAULT_SERVER = "umedge"  # no version: telling strangers the release helps nobody but them


class SipStreamProtocol(Protocol):
    log = Logger(namespace="umedge.sip")

    def __init__(self, handler: Handler, transport_name: str, role: str,
                 transactions: TransactionLayer | None = None, max_message: int = MAX_MESSAGE_BYTES,
                 server: str | None = DEFAULT_SERVER) -> None:
        self._handler = handler
        self._server = server
        self._transport_name = transport_name
        self._role = role
        self._parser = StreamParser(max_message=max_message, validate=False)  # validated below
        self._closing = False
        self._peer_cache: Peer | None = None
        self._transactions = transactions if transactions is not None else TransactionLayer(RELIABLE)
        self.connected_peer: Peer | None = None
        self._settled = False  # the connection guard's first-message timeout is over

    @property
    def _wire(self) -> ITCPTransport:
        """The connection's transport (TCP, or TLS over TCP); set whenever bytes can flow."""
        transport = self.transport
        assert transport is not None
        return cast(ITCPTransport, transport)

    def _peer(self) -> Peer:
        peer = self._peer_cache
        if peer is None:
            address = self._wire.getPeer()
            cert_name: str | None = None
            names: tuple[str, ...] = ()
            if self._transport_name == "tls":
                cert_name, names = _certificate_names(cast(ISSLTransport, self.transport).getPeerCertificate())
            peer = self._peer_cache = Peer(unmapped(address.host), address.port, self._transport_name, cert_name,
                                           names, self)
        return peer

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            events = self._parser.feed(data)
            if events and not self._settled and any(e.message is not None or e.ping for e in events):
                self._settled = True
                settle_connection(self)  # a whole message: only the idle timeout applies from now on
            for event in events:
                if self._closing:
                    return
                message = event.message
                if message is not None:
                    if isinstance(message, Request):
                        if message.method == "ACK" and self._absorb_ack(message):
                            continue
                        try:
                            validate_request(message)
                        except SipParseError as error:
                            self._reject(error)
                            continue
                        self._dispatch(message)
                    else:
                        try:
                            validate_response(message)
                        except SipParseError:
                            continue  # an invalid response is dropped (RFC 4475 §3.1.2.18/19)
                        self._response(message)
                elif event.error is not None:
                    self._reject(event.error)
                    if event.error.fatal:
                        return
                elif event.ping:
                    self._wire.write(b"\r\n")  # RFC 5626 §4.4.1 pong
        except Exception:  # noqa: BLE001 - nothing a peer sends may escape the protocol
            self.log.failure("{role}: unexpected error on a connection; closing it", role=self._role)
            self._closing = True
            self._wire.abortConnection()

    def _absorb_ack(self, ack: Request) -> bool:
        """The ACK of a non-2xx final response our server transaction sent: absorb it without the full parse.

        Matching needs only the top Via and CSeq (RFC 3261 §17.2.3). An ACK
        never gets a response, so one that does not match goes the full,
        strict way to the TU (an ACK for a 2xx belongs to a dialog).
        """
        if ack.defect is not None:
            return False
        headers = ack.headers
        via_value, cseq = headers.get("Via"), headers.get("CSeq")
        if not via_value or not cseq:
            return False
        try:
            vias = parse_via(via_value.split(",", 1)[0])
            number, method = parse_cseq(cseq)
        except ValueError:
            return False
        via = vias[0]
        if method != "ACK" or not via.rfc3261_branch:
            return False
        txn = self._transactions.server.get((via.branch, via.sent_by, "INVITE"))
        if txn is None or txn.status < 300:
            return False
        ack.vias, ack.cseq_number = vias, number
        return self._transactions.receive_request(ack, time.monotonic()).kind == "ack"

    def _response(self, response: Response) -> None:
        event = self._transactions.receive_response(response, time.monotonic())
        if event.kind == "response" and isinstance(event.transaction, ClientTransaction):
            context = event.transaction.context
            if callable(context):
                context(response, event.data)

    def _dispatch(self, request: Request) -> None:
        peer = self._peer()
        fix_via(request, peer)
        now = time.monotonic()
        event = self._transactions.receive_request(request, now, self)
        kind = event.kind
        if kind == "retransmission":
            if event.data:
                self._wire.write(event.data)
            return
        if kind == "ack":
            return
        txn = event.transaction
        STATS.request(request.method)
        limiter = getattr(self.factory, "limiter", None)
        if limiter is not None and not limiter.allow(peer.host):
            STATS.rate_limited += 1
            if limiter.should_log(peer.host):
                self.log.warn("{role}: SIP requests from {host} exceed {rate}/s: answering 503",
                              role=self._role, host=peer.host, rate=limiter.rate)
            if request.method != "ACK":
                busy = make_response(request, 503, "Service Unavailable - request rate exceeded",
                                     [("Retry-After", "5")])
                if txn is not None:
                    self._send(txn, busy, now)
                else:
                    self._write(busy)
            return
        try:
            result = self._handler(request, peer)
        except Exception:  # noqa: BLE001
            self.log.failure("handler failed for {method} from {host}", method=request.method, host=peer.host)
            result = make_response(request, 500, "Server Internal Error")
        if isinstance(result, defer.Deferred):
            if request.method == "INVITE" and txn is not None:
                self._send(txn, make_response(request, 100, "Trying"), now)
            result.addErrback(self._handler_failed, request, peer)
            result.addCallback(self._late_answer, txn)
            return
        if result is not None:
            if txn is not None:
                self._send(txn, result, now)
            else:
                self._write(result)

    def _handler_failed(self, failure: Any, request: Request, peer: Peer) -> Response:
        self.log.failure("handler failed for {method} from {host}", failure, method=request.method,
                         host=peer.host)
        return make_response(request, 500, "Server Internal Error")

    def _late_answer(self, response: Response | None, txn: Any) -> None:
        if response is None or self._closing or self.transport is None or not self.connected:
            return
        if txn is not None:
            self._send(txn, response, time.monotonic())
        else:
            self._write(response)

    def _send(self, txn: Any, response: Response, now: float) -> None:
        STATS.response(response.status)
        self._wire.write(self._transactions.send_response(txn, self._stamp(response), now))

    def _write(self, response: Response) -> None:
        STATS.response(response.status)
        self._wire.write(self._stamp(response).encode())

    def _stamp(self, response: Response) -> Response:
        """The listener's Server header (`[node] server_header`; none if empty), whatever the handler put."""
        response.headers.remove("Server")
        if self._server:
            response.headers.add("Server", self._server)
        return response

    def send_request(self, request: Request) -> None:
        """Send a request on this connection (an in-dialog BYE, for example), outside any transaction."""
        if not self._closing and self.connected:
            self._wire.write(request.encode())

    def _reject(self, error: SipParseError) -> None:
        peer = self._wire.getPeer()
        self.log.info("{role}: rejected message from {host}: {status} {reason}", role=self._role,
                      host=peer.host, status=error.status, reason=error.reason)
        request = error.partial
        if request is not None and request.method != "ACK" and request.headers.get("Via"):
            self._write(make_response(request, error.status, error.reason))
        if error.fatal:
            self._closing = True
            self._wire.loseConnection()


class SipStreamFactory(Factory):
    """Builds a SipStreamProtocol per connection for one role's listener.

    One transaction layer serves every connection of the listener; a timer
    fires its deadlines (Timer H for an INVITE whose non-2xx answer is never
    ACKed) while the listener runs.
    """

    noisy = False
    tick_interval = 1.0

    def __init__(self, handler: Handler, transport_name: str, role: str,
                 max_message: int = MAX_MESSAGE_BYTES, limiter: Any = None,
                 server: str | None = DEFAULT_SERVER) -> None:
        self.handler, self.transport_name, self.role = handler, transport_name, role
        self.server = server
        self.max_message = max_message
        self.limiter = limiter  # um.netguard.RateLimiter: requests per source address (None: unlimited)
        self.transactions = TransactionLayer(RELIABLE)
        self._ticker: task.LoopingCall | None = None

    def startFactory(self) -> None:
        self._ticker = task.LoopingCall(self._tick)
        self._ticker.start(self.tick_interval, now=False)

    def stopFactory(self) -> None:
        if self._ticker is not None and self._ticker.running:
            self._ticker.stop()
        self._ticker = None

    def _tick(self) -> None:
        for event in self.transactions.tick(time.monotonic()):
            if event.kind == "timeout":
                txn = event.transaction
                SipStreamProtocol.log.info("{role}: no ACK for the final response to {method} (Timer H)",
                                           role=self.role, method=getattr(txn, "method", "?"))
            elif event.kind == "send" and event.transaction is not None:
                peer = getattr(event.transaction, "peer", None)
                if peer is not None and getattr(peer, "connected", False) and event.data:
                    peer.transport.write(event.data)

    def buildProtocol(self, addr: object) -> SipStreamProtocol:
        protocol = SipStreamProtocol(self.handler, self.transport_name, self.role, self.transactions,
                                     self.max_message, self.server)
        protocol.factory = self
        return protocol
