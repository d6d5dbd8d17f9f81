"""The HTTPS token API on [auth].https_port: POST /v1/credentials, and GET /healthz.

    POST /v1/credentials   {"identity": "sip:alice@example.test", "ttl": 3600}
    200 {"username": "<expiry>:<identity>", "password": "...", "ttl": 3600,
         "uris": ["turn:HOST:3478?transport=udp", "turn:HOST:3478?transport=tcp",
                  "turns:HOST:5349?transport=tcp"]}

the TURN REST API answer. `ttl` (seconds) is optional and capped at
[auth].max_token_lifetime. Callers authenticate with a pool-CA client
certificate (verified in the TLS handshake) or `Authorization: Bearer KEY`
with a key of [auth].api_keys: no credentials get 401, a wrong key 403. Every
error is a JSON object {"error": ...}; request errors name the field
({"error": ..., "field": "ttl"}).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.web import server

from edge.auth import audit
from edge.auth.issuer import IdentityError, TokenIssuer
from um.apikeys import ApiKeys
from um.jsonweb import JsonRoutes, QuietSite, authenticate, media_type

MAX_BODY = 8 * 1024
FIELDS = ("identity", "ttl")


class CredentialsEndpoint:
    def __init__(self, issuer: TokenIssuer, keys: ApiKeys, uris: list[str] | Callable[[], list[str]]) -> None:
        self.issuer, self.keys = issuer, keys
        self._uris = uris if callable(uris) else (lambda: uris)  # pool members come and go

    @property
    def uris(self) -> list[str]:
        return self._uris()

    def __call__(self, request: server.Request) -> tuple[int, Any]:
        peer = request.getClientAddress()
        where = f"{getattr(peer, 'host', '-')}:{getattr(peer, 'port', '-')}"
        requester, status, error = self._authenticate(request, where)
        if requester is None:
            audit.refused(f"-@{where}", "https", error)
            if status == 401:
                request.setHeader(b"www-authenticate", b'Bearer realm="umedge"')
            return status, {"error": error}
        body, problem = self._body(request)
        if problem is not None:
            return problem
        try:
            issued = self.issuer.issue(body["identity"], body.get("ttl"), requester, "https")
        except IdentityError as refused:
            audit.refused(requester, "https", str(refused))
            return (403 if refused.forbidden else 400), {"error": str(refused), "field": "identity"}
        token = issued.token
        return 200, {"username": token.username, "password": token.password, "ttl": issued.ttl,
                     "uris": self.uris}

    def _authenticate(self, request: server.Request, where: str) -> tuple[str | None, int, str]:
        return authenticate(request, self.keys, where)

    def _body(self, request: server.Request) -> tuple[dict[str, Any], tuple[int, Any] | None]:
        if media_type(request) != "application/json":
            return {}, (415, {"error": "Content-Type must be application/json", "field": "body"})
        data = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(data) > MAX_BODY:
            return {}, (413, {"error": f"body larger than {MAX_BODY} bytes", "field": "body"})
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            return {}, (400, {"error": "body is not valid JSON", "field": "body"})
        if not isinstance(body, dict):
            return {}, (400, {"error": "body must be a JSON object", "field": "body"})
        unknown = sorted(set(body) - set(FIELDS))
        if unknown:
            return {}, (400, {"error": f"unknown field {unknown[0]!r}; allowed: {', '.join(FIELDS)}",
                              "field": unknown[0]})
        identity = body.get("identity")
        if not isinstance(identity, str) or not identity:
            return {}, (400, {"error": "identity must be a SIP URI string such as sip:alice@example.test",
                              "field": "identity"})
        ttl = body.get("ttl")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
            return {}, (400, {"error": "ttl must be a positive integer (seconds)", "field": "ttl"})
        return body, None


def credentials_site(node: str, endpoint: CredentialsEndpoint) -> server.Site:
    routes: dict[tuple[bytes, bytes], Callable[[server.Request], tuple[int, Any]]] = {
        (b"GET", b"/healthz"): lambda request: (200, {"status": "ok", "node": node}),
        (b"POST", b"/v1/credentials"): endpoint,
    }
    return QuietSite(JsonRoutes(routes))
