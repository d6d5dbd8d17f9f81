"""Hostile requests to the HTTPS token API and the UM web services: a 4xx with a JSON reason each, never a 500
and never a critical line (issue 21: a mutation fuzzer found these)."""

from __future__ import annotations

import json
import socket
import ssl
import time
from collections.abc import Iterator

import pytest

from tests.conftest import NodeFiles, ServeProcess, serving, write_config

API_KEY = "api-key-for-hostile-0123456789abcdef"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    files = write_config(tmp_path_factory.mktemp("hostile"), {
        "node": {"roles": ["mailbox", "worker", "edge", "web"]}, "auth": {"api_keys": [API_KEY]}})
    with serving(files) as process:
        yield files, process


def exchange(port: int, files: NodeFiles, head: bytes, body: bytes = b"") -> tuple[int, dict[str, object]]:
    """One raw HTTP/1.1 request over TLS (bytes as given); (status, JSON body)."""
    context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
    context.check_hostname = False
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="node1") as sock:
        sock.sendall(head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    payload = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(payload)


def token_request(headers: bytes) -> bytes:
    return b"POST /v1/credentials HTTP/1.1\r\nHost: node1\r\n" + headers


BEARER = f"Authorization: Bearer {API_KEY}\r\n".encode()
JSON = b"Content-Type: application/json\r\n"

TOKEN_CASES = {
    "identity with DEL": (BEARER + JSON, b'{"identity": "sip:al\\u007fice@example.test"}', 400),
    "identity with NUL": (BEARER + JSON, b'{"identity": "sip:al\\u0000ice@example.test"}', 400),
    "non-UTF-8 Authorization": (b"Authorization: Bearer \xff\xfe\xfd\r\n" + JSON, b'{"identity": "sip:a@b.c"}', 403),
    "non-UTF-8 Content-Type": (BEARER + b"Content-Type: application/\xffjson\r\n", b'{"identity": "sip:a@b.c"}', 415),
    "Authorization not bearer": (b"Authorization: Basic \xe9\r\n" + JSON, b'{"identity": "sip:a@b.c"}', 401),
}


@pytest.mark.parametrize("case", list(TOKEN_CASES))
def test_token_api_answers_hostile_requests_with_a_4xx(node: tuple[NodeFiles, ServeProcess], case: str) -> None:
    files, process = node
    headers, body, expected = TOKEN_CASES[case]
    status, answer = exchange(files.port("auth", "https_port"), files, token_request(headers), body)
    assert status == expected and isinstance(answer.get("error"), str), answer
    log = process.stderr()
    assert "Traceback" not in log and "critical" not in log


WEB_CASES = {
    "POST /v1/worker with a valid key": (b"POST /v1/worker HTTP/1.1\r\nHost: node1\r\n" + BEARER + JSON, b"{}", 405),
    "non-UTF-8 Authorization": (b"POST /v1/pin-reset HTTP/1.1\r\nHost: node1\r\nAuthorization: \xff\r\n" + JSON,
                                b'{"mailbox": "1001"}', 401),
    "non-UTF-8 Content-Type": (b"POST /v1/pin-reset HTTP/1.1\r\nHost: node1\r\n" + BEARER
                               + b"Content-Type: \xc3(\r\n", b'{"mailbox": "1001"}', 415),
    "a number in other digits": (b"POST /v1/play-on-phone HTTP/1.1\r\nHost: node1\r\n" + BEARER + JSON,
                                 '{"number": "\u0663\u0663\u0663", "message": "20200101T000000Z-deadbeef"}'.encode(),
                                 400),
}


@pytest.mark.parametrize("case", list(WEB_CASES))
def test_um_web_services_answer_hostile_requests_with_a_4xx(node: tuple[NodeFiles, ServeProcess], case: str) -> None:
    files, process = node
    head, body, expected = WEB_CASES[case]
    status, answer = exchange(files.port("web", "http_port"), files, head, body)
    assert status == expected and isinstance(answer.get("error"), str), answer
    log = process.stderr()
    assert "Traceback" not in log and "critical" not in log


@pytest.mark.parametrize("listener", [("auth", "https_port"), ("web", "http_port")])
def test_a_request_split_across_tls_records_is_served(node: tuple[NodeFiles, ServeProcess],
                                                      listener: tuple[str, str]) -> None:
    """Issue 21: a request in two TLS records once met "'HTTPChannel' has no '_version'" through the guard."""
    files, process = node
    context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
    context.check_hostname = False
    head = b"GET /healthz HTTP/1.1\r\nHost: node1\r\n" if listener[0] == "auth" else \
        b"GET /v1/status HTTP/1.1\r\nHost: node1\r\n"
    with socket.create_connection(("127.0.0.1", files.port(*listener)), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="node1") as sock:
        for piece in (head[:7], head[7:], b"Connection: close\r\n", b"\r\n"):  # one TLS record each
            sock.sendall(piece)
            time.sleep(0.05)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    log = process.stderr()
    assert "Traceback" not in log and "_version" not in log
