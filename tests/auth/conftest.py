"""A real `umedge serve --roles edge` for the token paths, and the clients that talk to it."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aioice import turn

from certs import pki
from tests.conftest import NodeFiles, ServeProcess, write_config

SECRET = "auth-test-secret-0123456789"
OLD_SECRET = "auth-old-secret-9876543210"
API_KEY = "api-key-for-tests-0123456789abcdef"
CONTENT_TYPE = "application/msrtc-media-relay-auth+xml"


@dataclass
class EdgeNode:
    files: NodeFiles
    process: ServeProcess

    @property
    def certs(self) -> Path:
        return self.files.certs_dir

    def port(self, section: str, key: str) -> int:
        return self.files.port(section, key)


@pytest.fixture(scope="package")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeNode]:
    files = write_config(tmp_path_factory.mktemp("auth-edge"), {
        "edge": {"auth_secrets": [SECRET, OLD_SECRET]},
        "auth": {"api_keys": [API_KEY], "served_domains": ["example.org"], "max_token_lifetime": 60}})
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        pki.issue(files.certs_dir, "client1", [])
        yield EdgeNode(files, process)
    finally:
        assert process.stop() == 0
        process.kill()


def tls_context(certs: Path, client: str | None = "client1", max_tls12: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    if client:
        context.load_cert_chain(str(certs / f"{client}.crt"), str(certs / f"{client}.key"))
    if max_tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


def tls_connect(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(raw, server_hostname="node1.example.test")


# --- SIP ------------------------------------------------------------------------------

def sip_request(method: str, body: bytes = b"", content_type: str | None = CONTENT_TYPE,
                call_id: str = "mras-1", cseq: int = 1) -> bytes:
    lines = [f"{method} sip:mrasloc.example.test@example.test SIP/2.0",
             "Via: SIP/2.0/TLS 127.0.0.1:5999;branch=z9hG4bK-mras" + call_id,
             "Max-Forwards: 70", "From: <sip:umworker@example.test>;tag=w1",
             "To: <sip:mrasloc.example.test@example.test>", f"Call-ID: {call_id}", f"CSeq: {cseq} {method}"]
    if content_type and body:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def read_sip(sock: socket.socket) -> tuple[str, dict[str, str], bytes]:
    """(status line, headers, body) of one SIP response, framed by Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed without an answer")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    return lines[0], headers, body[:length]


def sip_exchange(edge: EdgeNode, method: str, body: bytes = b"", **kwargs: Any) -> tuple[str, dict[str, str], bytes]:
    with tls_connect(edge.port("auth", "mras_tls_port"), tls_context(edge.certs)) as sock:
        sock.sendall(sip_request(method, body, **kwargs))
        return read_sip(sock)


# --- HTTPS ----------------------------------------------------------------------------

def https_connection(edge: EdgeNode, client: str | None = None) -> http.client.HTTPSConnection:
    context = tls_context(edge.certs, client)
    context.check_hostname = False  # connecting by IP; the pool CA check still applies
    return http.client.HTTPSConnection("127.0.0.1", edge.port("auth", "https_port"), context=context, timeout=5)


def https_post(edge: EdgeNode, body: Any, client: str | None = None, key: str | None = API_KEY,
               raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    connection = https_connection(edge, client)
    try:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        connection.request("POST", "/v1/credentials", raw if raw is not None else json.dumps(body).encode(),
                           sent)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read())
    finally:
        connection.close()


# --- TURN -----------------------------------------------------------------------------

class _Sink(asyncio.DatagramProtocol):
    pass


async def _allocate(port: int, username: str, password: str, transport: str) -> tuple[str, int]:
    endpoint, _ = await turn.create_turn_endpoint(_Sink, ("127.0.0.1", port), username, password,
                                                  transport=transport)
    try:
        return endpoint.get_extra_info("sockname")
    finally:
        endpoint.close()
        await asyncio.sleep(0.05)


def allocate_at(port: int, username: str, password: str, transport: str = "udp") -> tuple[str, int]:
    """Allocate a relay on the TURN server at 127.0.0.1:port with aioice; the relayed address."""
    return asyncio.run(_allocate(port, username, password, transport))


def allocate(edge: EdgeNode, username: str, password: str, transport: str = "udp") -> tuple[str, int]:
    return allocate_at(edge.port("edge", "turn_udp_port"), username, password, transport)


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
