"""The UM web services as an admin sees them: GET /v1/worker needs the admin scope over HTTPS, so tests
that read the live calls mint an admin web token (um.webtokens) with the node's state_dir."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any

from tests.conftest import NodeFiles
from um import webtokens


def state_dir(files: NodeFiles) -> str:
    return str(files.path.parent / str(files.values.get("node", {}).get("state_dir", "state")))


def admin_token(files: NodeFiles) -> str:
    return webtokens.issue(state_dir(files), None, "admin", ttl=600)[0]


def web_request(files: NodeFiles, method: str, path: str, body: Any = None, token: str | None = None,
                secure: bool = True) -> tuple[int, http.client.HTTPMessage, Any]:
    """One request to the web port (HTTPS, or plain HTTP with secure=False): (status, headers, JSON)."""
    port = files.port("web", "http_port")
    connection: http.client.HTTPConnection
    if secure:
        context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=30)
    else:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(method, path, json.dumps(body).encode() if body is not None else None, headers)
        answer = connection.getresponse()
        return answer.status, answer.headers, json.loads(answer.read())
    finally:
        connection.close()


def worker_status(files: NodeFiles) -> dict[str, Any]:
    """GET /v1/worker with an admin token over HTTPS."""
    status, _, body = web_request(files, "GET", "/v1/worker", token=admin_token(files))
    assert status == 200, body
    return body
