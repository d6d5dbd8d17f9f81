"""/v1/admin/*: the operator's console over HTTPS on the web port (edge.node.admin does the work).

    GET  /v1/admin/sessions[?user=ID][&scope=node]   TURN allocations, pool-wide unless scope=node
    POST /v1/admin/sessions/kill  {"id": "NODE:PORT"} | {"user": ID, "until": EPOCH}
    GET  /v1/admin/refusals                           users whose new allocations are refused (this node)
    GET  /v1/admin/calls[?scope=node]                 active calls on the worker slots
    POST /v1/admin/calls/hangup   {"id": "NODE/CALL", "reason": TEXT}
    GET  /v1/admin/whoami                              who the console takes you for

HTTPS only (403 over plain HTTP), for a pool-CA client certificate (the
handshake verified it) or `Authorization: Bearer KEY` with a key of `[web]
admin_keys`; 401 without credentials. `X-Umedge-Operator: NAME` (the CLI
sends user@host) is added to the log line, as a hint, never as the
authority.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from edge.node.admin import Console
from um.apikeys import ApiKeys
from um.jsonweb import header_text, identify, json_body, media_type

log = Logger(namespace="umedge.admin")
PREFIX = b"/v1/admin/"
MAX_BODY = 4096
ROUTES = {b"/v1/admin/sessions": b"GET", b"/v1/admin/sessions/kill": b"POST", b"/v1/admin/refusals": b"GET",
          b"/v1/admin/calls": b"GET", b"/v1/admin/calls/hangup": b"POST", b"/v1/admin/whoami": b"GET"}


class BadRequest(Exception):
    pass


def _operator(request: server.Request) -> str:
    hint = header_text(request, b"x-umedge-operator") or ""
    hint = "".join(c for c in hint if c.isascii() and c.isprintable() and c not in " \"'\\")[:64]
    return f" (operator {hint})" if hint else ""


def _body(request: server.Request) -> dict[str, Any]:
    if media_type(request) != "application/json":
        raise BadRequest("Content-Type must be application/json")
    content = request.content
    data = content.read(MAX_BODY + 1) if content is not None else b""
    if len(data) > MAX_BODY:
        raise BadRequest(f"body over {MAX_BODY} bytes")
    try:
        body = json.loads(data or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    return body


def _text(value: Any, what: str, limit: int = 256) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise BadRequest(f"{what} must be a non-empty printable string of at most {limit} characters")
    return value


class AdminResource(resource.Resource):
    """/v1/admin/* here; every other path goes to `fallback` (the status page and its JSON)."""

    isLeaf = True

    def __init__(self, fallback: resource.Resource, console: Callable[[], Console | None],
                 keys: Callable[[], tuple[str, ...]]) -> None:
        super().__init__()
        self.fallback, self.console, self._keys = fallback, console, keys
        self._cached: tuple[tuple[str, ...], ApiKeys] | None = None

    def keys(self) -> ApiKeys:
        current = self._keys()  # SIGHUP may change [web] admin_keys
        if self._cached is None or self._cached[0] is not current:
            self._cached = (current, ApiKeys(current))
        return self._cached[1]

    def render(self, request: server.Request) -> Any:
        path = request.path
        if not path.startswith(PREFIX):
            return self.fallback.render(request)
        if path not in ROUTES:
            return json_body(request, 404, {"error": "no such console resource"})
        if not request.isSecure():
            return json_body(request, 403, {"error": "the console needs HTTPS (same port, TLS)"})
        grant, status, why = identify(request, self.keys(), "admin")
        if grant is None:
            if status == 401:
                request.setHeader(b"www-authenticate", b'Bearer realm="umedge admin"')
            return json_body(request, status, {"error": why})
        if request.method != ROUTES[path]:
            request.setHeader(b"allow", ROUTES[path])
            return json_body(request, 405, {"error": "method not allowed"})
        by = grant.requester + _operator(request)
        if path == b"/v1/admin/whoami":
            return json_body(request, 200, {"requester": by})
        console = self.console()
        if console is None:
            return json_body(request, 503, {"error": "the console is not running on this node"})
        try:
            op, args, pool = self._question(request, path, by)
        except BadRequest as error:
            return json_body(request, 400, {"error": str(error)})
        if op == "refusals":
            return json_body(request, 200, {"refusals": console.sessions.refusals.snapshot()})
        finished: list[bool] = []
        request.notifyFinish().addBoth(lambda _: finished.append(True))

        def answer(result: dict[str, Any]) -> None:
            if not finished:
                request.write(json_body(request, 200, result))
                request.finish()

        def failed(failure: Any) -> None:
            log.warn("console: {op} failed: {why}", op=op, why=failure.getErrorMessage())
            if not finished:
                request.write(json_body(request, 503, {"error": f"{op} failed: {failure.getErrorMessage()}"}))
                request.finish()

        future = asyncio.ensure_future(console.ask(op, args, pool))
        defer.Deferred.fromFuture(future).addCallbacks(answer, failed)
        return server.NOT_DONE_YET

    def _question(self, request: server.Request, path: bytes, by: str) -> tuple[str, dict[str, Any], bool]:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.uri.decode("latin-1")).query)
        pool = query.get("scope", ["pool"])[0] != "node"
        if path == b"/v1/admin/refusals":
            return "refusals", {}, False
        if path == b"/v1/admin/sessions":
            user = query.get("user", [None])[0]
            return "sessions", ({"user": _text(user, "user")} if user is not None else {}), pool
        if path == b"/v1/admin/calls":
            return "calls", {}, pool
        body = _body(request)
        if path == b"/v1/admin/calls/hangup":
            reason = body.get("reason", "ended by the operator")
            return "hangup", {"id": _text(body.get("id"), "id"), "reason": _text(reason, "reason", 120),
                              "by": by}, True
        if ("id" in body) == ("user" in body):
            raise BadRequest('give "id" (one allocation) or "user" (all of a user\'s)')
        if "id" in body:
            return "kill", {"id": _text(body["id"], "id"), "by": by}, True
        until = body.get("until")
        if until is not None and (isinstance(until, bool) or not isinstance(until, int | float)
                                  or until > time.time() + 30 * 86400):
            raise BadRequest('"until" must be epoch seconds within 30 days')
        return "kill", {"user": _text(body["user"], "user"), "until": until, "by": by}, True


__all__ = ["AdminResource"]
