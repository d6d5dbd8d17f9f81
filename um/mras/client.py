"""An MRAS client: media relay credentials from an A/V Authentication service over MTLS SIP.

The mailbox worker keeps one MTLS connection to its edge's MRAS port and
sends a SIP SERVICE per need; requests may be pipelined on the connection
(answers are matched by Call-ID). It runs on asyncio, so under umedge's
asyncio reactor a Twisted caller wraps a call as
`Deferred.fromFuture(asyncio.ensure_future(client.request_credentials(...)))`.

    context = client_ssl_context(certs_dir, "node1")   # pool CA + this node's certificate
    client = await MrasClient.connect("edge1.example.test", 5064, context)
    grant = await client.request_credentials("sip:alice@example.test", location="intranet")
    grant.credentials.username, grant.credentials.password, grant.media_relays
    await client.close()
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
from pathlib import Path

from certs.pki import CA_NAME, paths
from um.mras.codec import (
    CONTENT_TYPE,
    CredentialsRequest,
    CredentialsResponse,
    MrasError,
    Request,
    Response,
    decode_response,
    encode_request,
)
from um.sip.message import Headers
from um.sip.message import Request as SipRequest
from um.sip.message import Response as SipResponse
from um.sip.parser import StreamParser

DEFAULT_TIMEOUT = 10.0
MAX_SIP_MESSAGE = 1024 * 1024 + 16 * 1024  # an MRAS response of 100 credentials with relays fits


class MrasSipError(Exception):
    """The edge answered the SERVICE with a SIP error (not an MRAS reasonPhrase)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"SIP {status} {reason}")
        self.status, self.reason = status, reason


class MrasRefused(Exception):
    """The edge answered 200 with a reasonPhrase other than OK."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.reason_phrase)
        self.response = response
        self.reason_phrase = response.reason_phrase


def client_ssl_context(certs_dir: str | Path, name: str) -> ssl.SSLContext:
    """TLS client context trusting only the pool CA and presenting NAME's certificate."""
    context = ssl.create_default_context(cafile=str(paths(certs_dir, CA_NAME)[0]))
    crt, key = paths(certs_dir, name)
    context.load_cert_chain(str(crt), str(key))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def mras_uri(domain: str) -> str:
    """The MRAS service URI of a domain, as Lync clients address it."""
    return f"sip:mrasloc.{domain}@{domain}"


class _SipClientProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = StreamParser(max_message=MAX_SIP_MESSAGE)
        self.pending: dict[str, asyncio.Future[SipResponse]] = {}
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            if event.error is not None:
                self._fail_all(ConnectionError(f"unparseable SIP from the edge: {event.error}"))
                if self.transport is not None:
                    self.transport.close()
                return
            message = event.message
            if isinstance(message, SipResponse):
                call_id = message.headers.get("Call-ID") or ""
                future = self.pending.pop(call_id, None)
                if future is not None and not future.done() and message.status >= 200:
                    future.set_result(message)
                elif future is not None and message.status < 200:
                    self.pending[call_id] = future  # provisional: keep waiting

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_all(exc or ConnectionError("connection to the edge closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail_all(self, error: BaseException) -> None:
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(error)


class MrasClient:
    """One MTLS SIP connection to an MRAS service; many SERVICE requests on it."""

    def __init__(self, protocol: _SipClientProtocol, local: tuple[str, int], user: str,
                 timeout: float) -> None:
        self._protocol = protocol
        self._local = local
        self._user = user
        self._timeout = timeout
        self._cseq = 0

    @classmethod
    async def connect(cls, host: str, port: int, context: ssl.SSLContext, *,
                      server_hostname: str | None = None, user: str = "sip:umworker@localhost",
                      timeout: float = DEFAULT_TIMEOUT) -> MrasClient:
        """Open the MTLS connection; `server_hostname` is the name the edge's certificate must carry."""
        loop = asyncio.get_running_loop()
        transport, protocol = await asyncio.wait_for(loop.create_connection(
            _SipClientProtocol, host, port, ssl=context, server_hostname=server_hostname or host), timeout)
        local = transport.get_extra_info("sockname")[:2]
        return cls(protocol, local, user, timeout)

    async def request(self, request: Request, to_uri: str | None = None) -> Response:
        """Send one MRAS request as a SIP SERVICE and return the decoded MRAS response.

        Raises MrasSipError for a SIP error status, MrasError for an unreadable
        body, asyncio.TimeoutError without an answer in time, ConnectionError
        if the connection is gone.
        """
        protocol = self._protocol
        if protocol.transport is None or protocol.transport.is_closing():
            raise ConnectionError("MRAS connection is closed")
        self._cseq += 1
        call_id = secrets.token_hex(12)
        host, port = self._local
        target = to_uri or request.to
        headers = Headers()
        headers.add("Via", f"SIP/2.0/TLS {_host(host)}:{port};branch=z9hG4bK{secrets.token_hex(8)}")
        headers.add("Max-Forwards", "70")
        headers.add("From", f"<{self._user}>;tag={secrets.token_hex(6)}")
        headers.add("To", f"<{target}>")
        headers.add("Call-ID", call_id)
        headers.add("CSeq", f"{self._cseq} SERVICE")
        headers.add("Content-Type", CONTENT_TYPE)
        message = SipRequest("SERVICE", target, headers, encode_request(request))
        future: asyncio.Future[SipResponse] = asyncio.get_running_loop().create_future()
        protocol.pending[call_id] = future
        protocol.transport.write(message.encode())
        try:
            answer = await asyncio.wait_for(future, self._timeout)
        finally:
            protocol.pending.pop(call_id, None)
        if answer.status != 200:
            raise MrasSipError(answer.status, answer.reason)
        content_type = (answer.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != CONTENT_TYPE:
            raise MrasError("Request Malformed", f"answer has Content-Type {content_type!r}")
        return decode_response(answer.body)

    async def request_credentials(self, identity: str, *, location: str | None = None,
                                  duration: int | None = None, version: str = "2.0",
                                  to_uri: str | None = None) -> CredentialsResponse:
        """Credentials and relays for one identity; MrasRefused if the reasonPhrase is not OK."""
        domain = identity.rpartition("@")[2] or "localhost"
        request_id = str(self._cseq + 1)
        request = Request(request_id, version, to_uri or mras_uri(domain), identity,
                          (CredentialsRequest(request_id, identity, location, duration),))
        response = await self.request(request)
        if not response.ok:
            raise MrasRefused(response)
        if len(response.credentials_responses) != 1:
            raise MrasError("Request Malformed", "OK without exactly one credentialsResponse")
        return response.credentials_responses[0]

    async def close(self) -> None:
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.close()
        try:
            await asyncio.wait_for(asyncio.shield(self._protocol.closed), 2)
        except TimeoutError:
            if transport is not None:
                transport.abort()

    async def __aenter__(self) -> MrasClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
