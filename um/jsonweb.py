"""JSON over Twisted Web, shared by every HTTP listener (status page, token API, UM web services)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.web import resource, server


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
