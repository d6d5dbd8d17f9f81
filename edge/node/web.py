"""HTTP(S) resources: the node's status page, its JSON, /metrics and the health check.

Everything the page needs is served from here (no external assets), so it
works on an isolated management network.
"""

from __future__ import annotations

from importlib import resources

from prometheus_client import CONTENT_TYPE_LATEST
from twisted.web import resource, server

from edge.node.admin_web import AdminResource
from edge.node.console_status import Rates, whole_node
from edge.node.listeners import listeners
from edge.node.metrics import exposition, registry_for
from edge.node.state import NodeState
from um.jsonweb import JsonRoutes, QuietSite, json_body


def status_site(state: NodeState) -> server.Site:
    """The web role: the live status page at /, its JSON, the ports table, /metrics and a health check."""
    page_bytes = resources.files("edge.node").joinpath("static/status.html").read_bytes()
    registry = registry_for(state)
    node = state.config.node.name
    rates = Rates()

    def page(request: server.Request) -> bytes:
        if request.path == b"/metrics" and request.method in (b"GET", b"HEAD"):
            request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode())
            return exposition(registry)
        if request.path != b"/":
            return json_body(request, 404, {"error": "no such resource"})
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"content-security-policy", b"default-src 'self'; script-src 'unsafe-inline' 'self'; "
                                                      b"style-src 'unsafe-inline'")
        return page_bytes

    routes = {
        (b"GET", b"/healthz"): lambda request: (200, {"status": "ok", "node": node}),
        (b"GET", b"/v1/ports"): lambda request: (200, [r.as_dict() for r in listeners(state.config)]),
        (b"GET", b"/v1/status"): lambda request: (200, whole_node(state, rates)),
    }
    return _quiet_site(AdminResource(JsonRoutes(routes, fallback=page), lambda: state.console,
                                     lambda: state.config.web.admin_keys))


def _quiet_site(root: resource.Resource) -> server.Site:
    return QuietSite(root)
