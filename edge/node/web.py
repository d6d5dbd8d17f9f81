"""HTTP(S) resources: the node's status page, and JsonRoutes (also used by edge.auth.https).

Everything the page needs is served from here (no external assets), so it
works on an isolated management network.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from twisted.web import resource, server

from edge.listeners import listeners
from edge.metrics import exposition, registry_for
from edge.nodestate import NodeState


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


def status_site(state: NodeState) -> server.Site:
    """The web role: the live status page at /, its JSON, the ports table, /metrics and a health check."""
    page_bytes = resources.files("edge").joinpath("static/status.html").read_bytes()
    registry = registry_for(state)
    node = state.config.node.name

    def page(request: server.Request) -> bytes:
        if request.path == b"/metrics" and request.method in (b"GET", b"HEAD"):
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
            return exposition(registry)
        if request.path != b"/":
            return _json(request, 404, {"error": "no such resource"})
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", b"default-src 'self'; script-src 'unsafe-inline' 'self'; "
                                                      b"style-src 'unsafe-inline'")
        return page_bytes

    routes = {
        (b"GET", b"/healthz"): lambda request: (200, {"status": "ok", "node": node}),
        (b"GET", b"/v1/ports"): lambda request: (200, [r.as_dict() for r in listeners(state.config)]),
        (b"GET", b"/v1/status"): lambda request: (200, state.snapshot()),
    }
    return _quiet_site(JsonRoutes(routes, fallback=page))


def _quiet_site(root: resource.Resource) -> server.Site:
    site = server.Site(root)
    site.displayTracebacks = False  # never show internals to a client
    site.noisy = False
    return site
