"""`umedge worker recycle|status`: a SERVICE request to a UM service over SIP, blocking (for the CLI).

The request goes through the user-agent client (um.sip.uac) on a private
asyncio loop: the CLI has no reactor, and blocking is what it wants.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Any

from um.sip.message import Request
from um.sip.transaction import make_request
from um.sip.uac import UserAgentClient, bracket

CONTROL_TYPE = "application/vnd.umedge.control+json"


def control(host: str, port: int, action: str, ssl_context: Any = None, server_hostname: str | None = None,
            timeout: float = 10.0) -> tuple[int, str, dict[str, Any]]:
    """Ask a UM service for `action` ("recycle" or "status") over SIP; blocking (for the CLI).

    Returns (status, reason, JSON body). Over TLS pass an ssl.SSLContext with
    a pool certificate; over TCP connect from loopback.
    """
    return asyncio.run(_control(host, port, action, ssl_context, server_hostname, timeout))


async def _control(host: str, port: int, action: str, ssl_context: ssl.SSLContext | None,
                   server_hostname: str | None, timeout: float) -> tuple[int, str, dict[str, Any]]:
    transport = "tls" if ssl_context is not None else "tcp"
    uac = UserAgentClient(ssl_context=ssl_context, connect_timeout=timeout)
    try:
        connection = await uac.connect(host, port, transport, server_hostname=server_hostname or host)
        response = await uac.request(host, port, transport, _request(host, port, connection.local[0], transport,
                                                                   action), timeout=timeout)
    finally:
        await uac.aclose()
    try:
        result = json.loads(response.body) if response.body else {}
    except ValueError:
        result = {}
    return response.status, response.reason, result


def _request(host: str, port: int, local_host: str, transport: str, action: str) -> Request:
    scheme = "sips" if transport == "tls" else "sip"
    target = bracket(host)
    return make_request("SERVICE", f"{scheme}:umservice@{target}:{port}", via_host=bracket(local_host),
                        transport=transport, from_uri=f"sip:cli@{bracket(local_host)}",
                        to_uri=f"{scheme}:umservice@{target}", extra=[("Content-Type", CONTROL_TYPE)],
                        body=json.dumps({"action": action}).encode())
