"""`umedge worker recycle|status`: a SERVICE request to a UM service over SIP, blocking (for the CLI)."""

from __future__ import annotations

import json
from typing import Any

from um.sip.message import Response

CONTROL_TYPE = "application/vnd.umedge.control+json"


def control(host: str, port: int, action: str, ssl_context: Any = None, server_hostname: str | None = None,
            timeout: float = 10.0) -> tuple[int, str, dict[str, Any]]:
    """Ask a UM service for `action` ("recycle" or "status") over SIP; blocking (for the CLI).

    Returns (status, reason, JSON body). Over TLS pass an ssl.SSLContext with
    a pool certificate; over TCP connect from loopback.
    """
    import socket

    from um.sip.parser import StreamParser
    from um.sip.transaction import make_request

    body = json.dumps({"action": action}).encode()
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = ssl_context.wrap_socket(raw, server_hostname=server_hostname or host) if ssl_context else raw
        local = sock.getsockname()
        transport = "TLS" if ssl_context else "TCP"
        scheme = "sips" if ssl_context else "sip"
        request = make_request("SERVICE", f"{scheme}:umservice@{host}:{port}",
                               via_host=f"{local[0]}:{local[1]}", transport=transport,
                               from_uri=f"sip:cli@{local[0]}", to_uri=f"{scheme}:umservice@{host}",
                               extra=[("Content-Type", CONTROL_TYPE)], body=body)
        sock.sendall(request.encode())
        parser = StreamParser()
        while True:
            data = sock.recv(65536)
            if not data:
                raise ConnectionError("the UM service closed the connection without an answer")
            for event in parser.feed(data):
                message = event.message
                if isinstance(message, Response) and message.status >= 200:
                    try:
                        result = json.loads(message.body) if message.body else {}
                    except ValueError:
                        result = {}
                    return message.status, message.reason, result
