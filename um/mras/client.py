"""An MRAS client: media relay credentials from an A/V Authentication service over MTLS SIP.

The mailbox worker keeps one MTLS connection to its edge's MRAS port and
sends a SIP SERVICE per need through the user-agent client (um.sip.uac);
requests may be pipelined on the connection (answers are matched to their
client transactions). It runs on asyncio, so under umedge's asyncio reactor
a Twisted caller wraps a call as
`Deferred.fromFuture(asyncio.ensure_future(client.request_credentials(...)))`.

    context = client_ssl_context(certs_dir, "node1")   # pool CA + this node's certificate
    client = await MrasClient.connect("edge1.example.test", 5064, context)
    grant = await client.request_credentials("sip:alice@example.test", location="intranet")
    grant.credentials.username, grant.credentials.password, grant.media_relays
    await client.close()
"""

from __future__ import annotations

import ssl

from certs.tls import client_ssl_context
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
from um.sip.message import Headers, new_tag
from um.sip.message import Request as SipRequest
from um.sip.uac import Connection, UserAgentClient

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


def mras_uri(domain: str) -> str:
    """The MRAS service URI of a domain, as Lync clients address it."""
    return f"sip:mrasloc.{domain}@{domain}"


class MrasClient:
    """One MTLS SIP connection to an MRAS service; many SERVICE requests on it."""

    def __init__(self, uac: UserAgentClient, connection: Connection, user: str, timeout: float) -> None:
        self._uac = uac
        self._connection = connection
        self._user = user
        self._timeout = timeout
        self._cseq = 0
        self._call_id = new_tag() + new_tag()

    @classmethod
    async def connect(cls, host: str, port: int, context: ssl.SSLContext, *,
                      server_hostname: str | None = None, user: str = "sip:umworker@localhost",
                      timeout: float = DEFAULT_TIMEOUT) -> MrasClient:
        """Open the MTLS connection; `server_hostname` is the name the edge's certificate must carry."""
        uac = UserAgentClient(ssl_context=context, max_message=MAX_SIP_MESSAGE, connect_timeout=timeout)
        connection = await uac.connect(host, port, "tls", server_hostname=server_hostname or host)
        return cls(uac, connection, user, timeout)

    async def request(self, request: Request, to_uri: str | None = None) -> Response:
        """Send one MRAS request as a SIP SERVICE and return the decoded MRAS response.

        Raises MrasSipError for a SIP error status, MrasError for an unreadable
        body, TimeoutError (um.sip.uac.SipTimeout) without an answer in time,
        ConnectionError if the connection is gone.
        """
        connection = self._connection
        if not connection.open:
            raise ConnectionError("MRAS connection is closed")
        self._cseq += 1
        target = to_uri or request.to
        headers = Headers([("Max-Forwards", "70"), ("From", f"<{self._user}>;tag={new_tag()}"),
                           ("To", f"<{target}>"), ("Call-ID", f"{self._call_id}-{self._cseq}"),
                           ("CSeq", f"{self._cseq} SERVICE"), ("Content-Type", CONTENT_TYPE)])
        host, port, transport = connection.key
        answer = await self._uac.request(host, port, transport, SipRequest(
            "SERVICE", target, headers, encode_request(request)), timeout=self._timeout)
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
        await self._uac.aclose()

    async def __aenter__(self) -> MrasClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["MrasClient", "MrasRefused", "MrasSipError", "client_ssl_context", "mras_uri"]
