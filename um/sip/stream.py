"""Twisted adapter: SIP over a TCP or TLS connection, fed through the sans-I/O parser.

The protocol only moves bytes; what to answer is the handler's business. An
unparseable stream closes this connection and touches nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger

from um.sip.message import Request, Response, make_response
from um.sip.parser import SipParseError, StreamParser


@dataclass(frozen=True)
class Peer:
    """Who sent a message: address, port, transport and, over MTLS, the certificate name."""

    host: str
    port: int
    transport: str  # "tcp" or "tls"
    cert_name: str | None = None


Handler = Callable[[Request, Peer], Response | None]


class SipStreamProtocol(Protocol):
    log = Logger(namespace="umedge.sip")

    def __init__(self, handler: Handler, transport_name: str, role: str) -> None:
        self._handler = handler
        self._transport_name = transport_name
        self._role = role
        self._parser = StreamParser()
        self._closing = False

    def _peer(self) -> Peer:
        address = self.transport.getPeer()
        cert_name = None
        if self._transport_name == "tls":
            cert = self.transport.getPeerCertificate()
            cert_name = cert.get_subject().commonName if cert is not None else None
        return Peer(address.host, address.port, self._transport_name, cert_name)

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        for event in self._parser.feed(data):
            if event.ping:
                self.transport.write(b"\r\n")  # RFC 5626 §4.4.1 pong
            elif event.error is not None:
                self._reject(event.error)
                if event.error.fatal:
                    return
            elif isinstance(event.message, Request):
                self._dispatch(event.message)

    def _dispatch(self, request: Request) -> None:
        peer = self._peer()
        try:
            response = self._handler(request, peer)
        except Exception:
            self.log.failure("handler failed for {method} from {host}", method=request.method,
                             host=peer.host)
            response = make_response(request, 500, "Server Internal Error")
        if response is not None:
            self.transport.write(response.encode())

    def _reject(self, error: SipParseError) -> None:
        peer = self.transport.getPeer()
        self.log.info("{role}: rejected message from {host}: {status} {reason}", role=self._role,
                      host=peer.host, status=error.status, reason=error.reason)
        request = error.partial
        if request is not None and request.method != "ACK" and request.headers.get("Via"):
            self.transport.write(make_response(request, error.status, error.reason).encode())
        if error.fatal:
            self._closing = True
            self.transport.loseConnection()


class SipStreamFactory(Factory):
    """Builds a SipStreamProtocol per connection for one role's listener."""

    noisy = False

    def __init__(self, handler: Handler, transport_name: str, role: str) -> None:
        self.handler, self.transport_name, self.role = handler, transport_name, role

    def buildProtocol(self, addr: object) -> SipStreamProtocol:
        protocol = SipStreamProtocol(self.handler, self.transport_name, self.role)
        protocol.factory = self
        return protocol
