"""JSON over Twisted Web, shared by every HTTP listener (status page, token API, UM web services)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.web import http, resource, server

from um.apikeys import ApiKeys, bearer
from um.webtokens import Grant, WebTokenError, WebTokens, looks_like_jwt


class QuietSite(server.Site):
    """A Site for every umedge HTTP listener: no tracebacks to clients and no access log line per request
    (a polling status page or a scanner would otherwise fill the log; /metrics counts requests)."""

    displayTracebacks = False
    noisy = False

    def log(self, request: http.Request) -> None:
        pass


def json_body(request: server.Request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body, indent=1).encode() + b"\n"


class JsonRoutes(resource.Resource):
    """Exact-path JSON routes; anything else is a JSON 404, a wrong method a JSON 405."""

    isLeaf = True

    def __init__(self, routes: dict[tuple[bytes, bytes], Callable[[server.Request], tuple[int, Any]]],
                 fallback: Callable[[server.Request], bytes] | None = None) -> None:
        super().__init__()
        self.routes = routes
        self.fallback = fallback

    def render(self, request: server.Request) -> bytes:
        key = (request.method, request.path)
        if key in self.routes:
            status, body = self.routes[key](request)
            return json_body(request, status, body)
        if any(path == request.path for _, path in self.routes):
            request.setHeader(b"allow", b", ".join(m for m, p in self.routes if p == request.path))
            return json_body(request, 405, {"error": "method not allowed"})
        if self.fallback is not None:
            return self.fallback(request)
        return json_body(request, 404, {"error": f"no such resource: {request.path.decode(errors='replace')}"})


def header_text(request: server.Request, name: bytes) -> str | None:
    """A request header as text, whatever bytes a client sent (ISO-8859-1, as HTTP/1.1 defines it):
    a non-UTF-8 value must get a 4xx for what it says, never a decoding error."""
    value = request.getHeader(name)
    if value is None:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else value


def media_type(request: server.Request, default: str = "application/json") -> str:
    """The request's Content-Type without parameters, lower-cased."""
    return (header_text(request, b"content-type") or default).split(";")[0].strip().lower()


def authenticate(request: server.Request, keys: ApiKeys, where: str) -> tuple[str | None, int, str]:
    """Who asks: a pool-CA client certificate (verified in the handshake) or a configured bearer API key.

    Returns (requester, 200, "") or (None, 401/403, why).
    """
    grant, status, error = identify(request, keys, where)
    return (grant.requester if grant is not None else None), status, error


def identify(request: server.Request, keys: ApiKeys, where: str,
             tokens: WebTokens | None = None) -> tuple[Grant | None, int, str]:
    """Who asks and what they may do: a pool-CA client certificate or an API key of `[auth] api_keys`
    (both admin: any mailbox, every scope), or with `tokens` a per-mailbox JWT (um.webtokens).

    Returns (grant, 200, "") or (None, 401/403, why).
    """
    transport = getattr(request.channel, "transport", None)
    get_cert = getattr(transport, "getPeerCertificate", None)
    cert = get_cert() if get_cert is not None else None
    if cert is not None:
        return Grant(f"cert:{cert.get_subject().commonName}@{where}"), 200, ""
    what = "Bearer <API key>" if tokens is None else "Bearer <API key or web token>"
    header = header_text(request, b"authorization")
    if header is None:
        return None, 401, f"authentication required: a pool-CA client certificate or Authorization: {what}"
    token = bearer(header)
    if token is None:
        return None, 401, f"Authorization must be {what}"
    ident = keys.match(token)
    if ident is not None:
        return Grant(f"apikey:{ident}@{where}"), 200, ""
    if tokens is not None and looks_like_jwt(token):
        try:
            return tokens.verify(token, where), 200, ""
        except WebTokenError as error:
            return None, 401 if "expired" in str(error) else 403, str(error)
    return None, 403, "API key not accepted"
