"""HTTP(S) resources: the node's status page and the A/V authentication HTTPS endpoint.

Everything the page needs is served from here (no external assets), so it
works on an isolated management network.
"""

from __future__ import annotations

import html
import json
from typing import Any, Callable

from twisted.web import resource, server

from edge.listeners import Listener, format_table


def _json(request: server.Request, status: int, body: Any) -> bytes:
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
            return _json(request, status, body)
        if any(path == request.path for _, path in self.routes):
            request.setHeader(b"allow", b", ".join(m for m, p in self.routes if p == request.path))
            return _json(request, 405, {"error": "method not allowed"})
        if self.fallback is not None:
            return self.fallback(request)
        return _json(request, 404, {"error": f"no such resource: {request.path.decode(errors='replace')}"})


def status_site(node: str, rows: list[Listener]) -> server.Site:
    """The web role: a status page at /, the ports table as JSON, and a health check."""
    table = format_table(rows)

    def page(request: server.Request) -> bytes:
        if request.path != b"/":
            return _json(request, 404, {"error": "no such resource"})
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>umedge {html.escape(node)}"
                f"</title></head><body><h1>umedge node {html.escape(node)}</h1><h2>Listeners</h2>"
                f"<pre id='listeners'>{html.escape(table)}</pre></body></html>").encode()

    routes = {
        (b"GET", b"/healthz"): lambda request: (200, {"status": "ok", "node": node}),
        (b"GET", b"/v1/ports"): lambda request: (200, [r.as_dict() for r in rows]),
    }
    return _quiet_site(JsonRoutes(routes, fallback=page))


def auth_site(node: str) -> server.Site:
    """The A/V authentication HTTPS endpoint: health now; the token API comes with the token service."""
    routes = {
        (b"GET", b"/healthz"): lambda request: (200, {"status": "ok", "node": node}),
        (b"POST", b"/v1/credentials"): lambda request: (
            503, {"error": "token service not enabled on this node"}),
    }
    return _quiet_site(JsonRoutes(routes))


def _quiet_site(root: resource.Resource) -> server.Site:
    site = server.Site(root)
    site.displayTracebacks = False  # never show internals to a client
    site.noisy = False
    return site
