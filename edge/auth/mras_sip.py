"""MRAS over SIP: the handler behind the MTLS listener on [auth].mras_tls_port.

OPTIONS gets 200 (keepalives and monitoring), SERVICE with Content-Type
application/msrtc-media-relay-auth+xml gets 200 with an MRAS <response>,
SERVICE with another body type 415, ACK nothing, other methods 405. MRAS
refusals are 200s whose reasonPhrase says why (Request Malformed, Request Too
Large, Not Supported, Forbidden, Version Mismatch, Internal Server Error), as
Lync clients expect. A request is granted whole or not at all: one identity of
a foreign domain makes it Forbidden.

The listener requires a pool-CA client certificate, so every requester is a
pool member; its certificate name is the requester in the audit log.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.logger import Logger

from edge.auth import audit
from edge.auth.issuer import IdentityError, TokenIssuer
from edge.auth.relays import for_location
from um.mras import codec
from um.sip.message import Request, Response, make_response
from um.sip.stream import Peer

SERVER = "umedge/0.1 MRAS"
ALLOW = "OPTIONS, SERVICE"


class MrasHandler:
    log = Logger(namespace="umedge.auth.mras")

    def __init__(self, issuer: TokenIssuer,
                 relays: tuple[codec.MediaRelay, ...] | Callable[[], tuple[codec.MediaRelay, ...]],
                 realm: str | None) -> None:
        self.issuer = issuer
        self._relays = relays if callable(relays) else (lambda: relays)  # the pool's change over time
        self.realm = realm

    @property
    def relays(self) -> tuple[codec.MediaRelay, ...]:
        return self._relays()

    def __call__(self, request: Request, peer: Peer) -> Response | None:
        if request.method == "ACK":
            return None
        if request.method == "OPTIONS":
            return make_response(request, 200, "OK", [("Allow", ALLOW), ("Accept", codec.CONTENT_TYPE),
                                                     ("Server", SERVER)])
        if request.method != "SERVICE":
            return make_response(request, 405, "Method Not Allowed", [("Allow", ALLOW), ("Server", SERVER)])
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != codec.CONTENT_TYPE:
            return make_response(request, 415, "Unsupported Media Type",
                                 [("Accept", codec.CONTENT_TYPE), ("Server", SERVER)])
        answer = self.answer(request.body, _requester(peer))
        return make_response(request, 200, "OK", [("Content-Type", codec.CONTENT_TYPE), ("Server", SERVER)],
                             codec.encode_response(answer))

    def answer(self, body: bytes, requester: str) -> codec.Response:
        """The MRAS response to one request body (sans-I/O: also what the benchmark and tests drive)."""
        try:
            request = codec.decode_request(body)
        except codec.MrasError as error:
            audit.refused(requester, "mras", f"{error.reason_phrase}: {error.detail}")
            return codec.error_response(error)
        try:
            for item in request.credentials_requests:
                self.issuer.check(item.identity)
        except IdentityError as error:
            reason = codec.FORBIDDEN if error.forbidden else codec.REQUEST_MALFORMED
            audit.refused(requester, "mras", f"{reason}: {error}")
            return codec.response_to(request, reason)
        try:
            grants = [self._grant(item, requester) for item in request.credentials_requests]
        except Exception:  # noqa: BLE001 - the client gets the MRAS answer, the log the details
            self.log.failure("MRAS request {request_id} from {requester} failed",
                             request_id=request.request_id, requester=requester)
            return codec.response_to(request, codec.INTERNAL_SERVER_ERROR)
        return codec.response_to(request, codec.OK, grants)

    def _grant(self, item: codec.CredentialsRequest, requester: str) -> codec.CredentialsResponse:
        ttl = None if item.duration is None else min(item.duration, self.issuer.max_lifetime // 60) * 60
        issued = self.issuer.issue(item.identity, ttl, requester, "mras")
        credentials = codec.Credentials(issued.token.username, issued.token.password, issued.ttl // 60,
                                        self.realm)
        return codec.CredentialsResponse(item.credentials_request_id, credentials,
                                         for_location(self.relays, item.location))


def _requester(peer: Peer) -> str:
    return f"cert:{peer.cert_name or '-'}@{peer.host}:{peer.port}"
