"""`umedge serve` as a real process: every listener accepts, answers what it can, stops cleanly."""

from __future__ import annotations

import json
import re
import signal
import socket
import ssl
import time
import urllib.request
from pathlib import Path

import pytest
from aioice import stun as aioice_stun

from certs import pki
from tests.conftest import NodeFiles, ServeProcess, umedge, write_config


def sip_request(method: str, port: int, extra: str = "", body: str = "", length: bool = True) -> bytes:
    lines = [
        f"{method} sip:ping@127.0.0.1:{port} SIP/2.0",
        "Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-test1",
        "Max-Forwards: 70",
        "From: <sip:probe@127.0.0.1>;tag=abc",
        "To: <sip:ping@127.0.0.1>",
        "Call-ID: test-call-1",
        f"CSeq: 1 {method}",
    ]
    if extra:
        lines.append(extra)
    if length:
        lines.append(f"Content-Length: {len(body.encode())}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def read_response(sock: socket.socket, timeout: float = 5) -> str:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def tls_context(certs: Path, client: str | None = None, ca: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca or certs / "ca.crt"))
    if client:
        context.load_cert_chain(str(certs / f"{client}.crt"), str(certs / f"{client}.key"))
    return context


def tls_connect(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    return context.wrap_socket(raw, server_hostname="node1.example.test")


def stun_binding_request() -> aioice_stun.Message:
    return aioice_stun.Message(message_method=aioice_stun.Method.BINDING,
                               message_class=aioice_stun.Class.REQUEST)


def test_every_listener_in_the_table_accepts(serve: ServeProcess, node: NodeFiles) -> None:
    table = "".join(serve.stdout_lines)
    rows = json.loads(umedge("ports", "--json", "--config", str(node.path)).stdout)
    assert len(rows) == 16
    for row in rows:
        ports = row["tcp_port"] or row["udp_port"]
        assert f" {ports} " in table or table.rstrip().endswith(ports)
        if row["tcp_port"]:
            with socket.create_connection(("127.0.0.1", int(row["tcp_port"])), timeout=5):
                pass


def test_sip_tcp_answers_options_and_errors(serve: ServeProcess, node: NodeFiles) -> None:
    # INVITE: the call router finds no hunt group for pilot "ping" (404); the mailbox UM service
    # redirects a call router (127.0.0.1 is one by default) to its active worker, slot 1 (302).
    invite_answers = {"callrouter": "SIP/2.0 404 Not Found - no hunt group",
                      "mailbox": "SIP/2.0 302 Moved Temporarily"}
    for section, key in (("callrouter", "sip_tcp_port"), ("mailbox", "sip_tcp_port")):
        port = node.port(section, key)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(sip_request("OPTIONS", port))
            reply = read_response(sock)
            assert reply.startswith("SIP/2.0 200 OK\r\n"), reply
            assert "Call-ID: test-call-1" in reply and "CSeq: 1 OPTIONS" in reply
            assert "Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-test1" in reply
            sock.sendall(sip_request("INVITE", port))
            reply = read_response(sock)
            assert reply.startswith(invite_answers[section]), reply
            if section == "mailbox":
                assert f"Contact: <sip:ping@127.0.0.1:{node.values['worker']['sip_ports'][0]};transport=tcp>" in reply
            sock.sendall(sip_request("REGISTER", port))
            assert read_response(sock).startswith("SIP/2.0 405 Method Not Allowed")
            sock.sendall(b"\r\n\r\n")  # RFC 5626 keepalive ping
            assert sock.recv(2) == b"\r\n"
    worker_port = node.values["worker"]["sip_ports"][1]  # type: ignore[index]
    with socket.create_connection(("127.0.0.1", worker_port), timeout=5) as sock:
        sock.sendall(sip_request("OPTIONS", worker_port))
        assert read_response(sock).startswith("SIP/2.0 200 OK")


def test_sip_bad_input_gets_a_specific_error_and_closes_only_that_stream(
        serve: ServeProcess, node: NodeFiles) -> None:
    port = node.port("callrouter", "sip_tcp_port")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as bad, \
            socket.create_connection(("127.0.0.1", port), timeout=5) as good:
        bad.sendall(sip_request("OPTIONS", port, length=False))
        reply = read_response(bad)
        assert reply.startswith("SIP/2.0 400 Bad Request - missing Content-Length"), reply
        assert bad.recv(100) == b""  # framing is lost: that connection closes
        good.sendall(sip_request("OPTIONS", port))
        assert read_response(good).startswith("SIP/2.0 200 OK")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(sip_request("OPTIONS", port).replace(b"OPTIONS sip:ping@127.0.0.1:%d SIP/2.0" % port,
                                                         b"OPTIONS sip:ping@127.0.0.1 SIP/7.0"))
        assert read_response(sock).startswith("SIP/2.0 505 Version Not Supported")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"X" * 20000)
        assert read_response(sock) == ""  # no header end within the bound: closed


def test_mtls_accepts_pool_ca_client_and_refuses_others(serve: ServeProcess, node: NodeFiles,
                                                        tmp_path: Path) -> None:
    certs = node.certs_dir
    pki.issue(certs, "client1", [])
    foreign = tmp_path / "foreign"
    pki.init_ca(foreign, "someone else")
    pki.issue(foreign, "client1", [])
    for section, key in (("callrouter", "sip_tls_port"), ("mailbox", "sip_tls_port"),
                         ("auth", "mras_tls_port")):
        port = node.port(section, key)
        with tls_connect(port, tls_context(certs, "client1")) as sock:
            sock.sendall(sip_request("OPTIONS", port))
            assert read_response(sock).startswith("SIP/2.0 200 OK")
        for context in (tls_context(certs), tls_context(foreign, "client1", ca=certs / "ca.crt")):
            with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
                with tls_connect(port, context) as sock:
                    sock.sendall(sip_request("OPTIONS", port))
                    if not read_response(sock):
                        raise ConnectionError("closed without an answer")


def test_stun_binding_on_udp_tcp_and_tls(serve: ServeProcess, node: NodeFiles) -> None:
    udp_port, tls_port = node.port("edge", "turn_udp_port"), node.port("edge", "turn_tls_port")
    request = stun_binding_request()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.bind(("127.0.0.1", 0))
        sock.sendto(bytes(request), ("127.0.0.1", udp_port))
        data, _ = sock.recvfrom(2048)
        reply = aioice_stun.parse_message(data)
        assert reply.message_class == aioice_stun.Class.RESPONSE
        assert reply.transaction_id == request.transaction_id
        assert reply.attributes["XOR-MAPPED-ADDRESS"] == ("127.0.0.1", sock.getsockname()[1])
    with socket.create_connection(("127.0.0.1", udp_port), timeout=5) as sock:  # TCP on the same number
        sock.sendall(bytes(request))
        reply = aioice_stun.parse_message(sock.recv(2048))
        assert reply.attributes["XOR-MAPPED-ADDRESS"] == sock.getsockname()
    with tls_connect(tls_port, tls_context(node.certs_dir)) as sock:
        sock.sendall(bytes(request))
        reply = aioice_stun.parse_message(sock.recv(2048))
        assert reply.attributes["XOR-MAPPED-ADDRESS"][0] == "127.0.0.1"


def test_unauthenticated_allocate_is_challenged(serve: ServeProcess, node: NodeFiles) -> None:
    allocate = aioice_stun.Message(message_method=aioice_stun.Method.ALLOCATE,
                                   message_class=aioice_stun.Class.REQUEST)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(bytes(allocate), ("127.0.0.1", node.port("edge", "turn_udp_port")))
        reply = aioice_stun.parse_message(sock.recvfrom(2048)[0])
        assert reply.message_class == aioice_stun.Class.ERROR
        assert reply.attributes["ERROR-CODE"][0] == 401
        assert reply.attributes["REALM"] == "example.test" and reply.attributes["NONCE"]


def test_web_and_https_endpoints(serve: ServeProcess, node: NodeFiles) -> None:
    base = f"http://127.0.0.1:{node.port('web', 'http_port')}"
    page = urllib.request.urlopen(base + "/", timeout=5).read().decode()
    assert '<table id="listeners">' in page
    assert not re.search(r"(https?:)?//[\w.-]+[/:]", page)  # self-contained: no external asset
    status = json.loads(urllib.request.urlopen(base + "/v1/status", timeout=5).read())
    assert {row["service"] for row in status["listeners"]} >= {"UM Call Router", "A/V Edge media relay"}
    ports = json.loads(urllib.request.urlopen(base + "/v1/ports", timeout=5).read())
    assert len(ports) == 16
    metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    assert 'umedge_turn_allocations_active{transport="udp"} 0.0' in metrics
    assert "umedge_voicemails_stored_total 0.0" in metrics and "umedge_sip_requests_total" in metrics
    https = f"https://127.0.0.1:{node.port('auth', 'https_port')}/healthz"
    context = tls_context(node.certs_dir)
    context.check_hostname = False  # the URL names the IP; the CA check still applies
    health = json.loads(urllib.request.urlopen(https, context=context, timeout=5).read())
    assert health == {"status": "ok", "node": "node1"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_cleanly_within_5_seconds(tmp_path: Path, sig: int) -> None:
    files = write_config(tmp_path)
    process = ServeProcess(files.path)
    try:
        process.wait_ready()
        idle = socket.create_connection(("127.0.0.1", files.port("callrouter", "sip_tcp_port")))
        started = time.monotonic()
        assert process.stop(sig, timeout=5) == 0
        assert time.monotonic() - started < 5
        idle.close()
        assert "stopped" in process.stderr()
    finally:
        process.kill()


def test_port_in_use_fails_start_with_a_clear_message(tmp_path: Path) -> None:
    files = write_config(tmp_path)
    port = files.port("mailbox", "sip_tcp_port")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        result = umedge("serve", "--config", str(files.path), timeout=30)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_roles_subset_and_json_logs(tmp_path: Path) -> None:
    files = write_config(tmp_path)
    process = ServeProcess(files.path, "--roles", "edge", "--log-format", "json")
    try:
        process.wait_ready()
        with socket.create_connection(("127.0.0.1", files.port("auth", "mras_tls_port")), timeout=5):
            pass
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", files.port("callrouter", "sip_tcp_port")), timeout=5)
        assert process.stop() == 0
        lines = [json.loads(line) for line in process.stderr().splitlines()]
        assert any(entry["message"].startswith("listening role=edge") for entry in lines)
        assert all({"time", "level", "namespace", "message"} <= set(entry) for entry in lines)
    finally:
        process.kill()
