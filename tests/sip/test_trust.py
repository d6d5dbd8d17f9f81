"""Trust boundaries of the SIP listeners (issue 14): strangers get one generic 403 everywhere, and a
gateway that never completes its calls cannot hold the worker's relay allocations or starve others."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from tests.conftest import NodeFiles, ServeProcess, serving, write_config
from tests.sip.test_serve_um import raw_invite, read_until_final

STRANGER = "127.0.0.2"   # not a gateway, not a call router
GATEWAY_A, GATEWAY_B = "127.0.0.4", "127.0.0.5"
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0\r\n")
PER_SOURCE = 10


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    files = write_config(tmp_path_factory.mktemp("trust"), {
        "callrouter": {"gateways": [{"address": "127.0.0.1"}, {"address": GATEWAY_A}, {"address": GATEWAY_B}]},
        "worker": {"media_via_edge": True, "ack_timeout": 2, "max_calls_per_source": PER_SOURCE,
                   "rtp_port_min": 46000, "rtp_port_max": 46999},
        "edge": {"allowed_peer_networks": ["127.0.0.0/8"]}})
    with serving(files) as process:
        yield files, process


def send_from(source: str, port: int, data: bytes) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(5)
        sock.connect(("127.0.0.1", port))
        sock.sendall(data)
        return read_until_final(sock)


def request(method: str, port: int, to: str, branch: str) -> bytes:
    invite = raw_invite(port, to=to, branch=branch, body=SDP if method == "INVITE" else b"")
    return invite.replace(b"INVITE ", f"{method} ".encode(), 1).replace(b" INVITE\r\n", f" {method}\r\n".encode())


def status_line(answer: str) -> str:
    return next(block for block in answer.split("\r\n\r\n") if block.startswith("SIP/2.0 ") and
                not block.startswith("SIP/2.0 1")).split("\r\n")[0]


def test_strangers_get_one_generic_403_on_every_sip_listener(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = node
    ports = {"call router": files.port("callrouter", "sip_tcp_port"),
             "UM service": files.port("mailbox", "sip_tcp_port"),
             "worker": int(files.values["worker"]["sip_ports"][0])}  # type: ignore[index]
    answers = set()
    for name, port in ports.items():
        for method in ("INVITE", "OPTIONS", "SUBSCRIBE"):
            for mailbox in ("1001", "9999"):  # one that exists, one that does not: no difference to learn
                branch = f"z9hG4bK-{name[:2]}{method}{mailbox}"
                answer = send_from(STRANGER, port, request(method, port, mailbox, branch))
                answers.add((name, status_line(answer)))
                assert "Server: umedge\r\n" in answer and "umedge/" not in answer  # no version
    assert {line for _, line in answers} == {"SIP/2.0 403 Forbidden"}
    web = files.port("web", "http_port")
    with urllib.request.urlopen(f"http://127.0.0.1:{web}/metrics", timeout=5) as page:
        text = page.read().decode()
    assert 'umedge_sip_untrusted_total{role="callrouter"} 6.0' in text
    assert 'umedge_sip_untrusted_total{role="mailbox"} 12.0' in text  # UM service and worker


def allocations(files: NodeFiles) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{files.port('web', 'http_port')}/v1/status", timeout=5) as page:
        return float(json.loads(page.read())["allocations"]["active"])


def test_unanswered_invites_release_their_allocations_and_starve_no_one(node: tuple[NodeFiles, ServeProcess]
                                                                        ) -> None:
    files, _ = node
    worker = int(files.values["worker"]["sip_ports"][0])  # type: ignore[index]
    statuses = []
    held = []
    for index in range(100):  # INVITEs never ACKed, on connections kept open
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((GATEWAY_A, 0))
        sock.settimeout(10)
        sock.connect(("127.0.0.1", worker))
        sock.sendall(request("INVITE", worker, "1001", f"z9hG4bK-flood{index}"))
        statuses.append(status_line(read_until_final(sock)))
        held.append(sock)
    assert statuses.count("SIP/2.0 200 OK") == PER_SOURCE  # the rest: 503, too many calls from that source
    assert all(line.startswith("SIP/2.0 503 ") for line in statuses if line != "SIP/2.0 200 OK")
    assert allocations(files) >= PER_SOURCE
    other = send_from(GATEWAY_B, worker, request("INVITE", worker, "1002", "z9hG4bK-other"))
    assert status_line(other) == "SIP/2.0 200 OK"  # another gateway's call is served meanwhile
    deadline = time.monotonic() + 10
    while allocations(files) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert allocations(files) == 0  # no ACK within [worker] ack_timeout: every allocation released
    for sock in held:
        sock.close()


def test_an_unknown_pilot_gets_the_same_404_at_the_worker_as_at_the_router(
        node: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = node
    worker = int(files.values["worker"]["sip_ports"][0])  # type: ignore[index]
    router = files.port("callrouter", "sip_tcp_port")
    for port in (router, worker):
        invite = raw_invite(port, pilot="7777", to="1001", branch=f"z9hG4bK-pilot{port}", body=SDP)
        assert status_line(send_from("127.0.0.1", port, invite)) == \
            "SIP/2.0 404 Not Found - no hunt group for this pilot number"


def test_server_header_can_be_turned_off(tmp_path_factory: pytest.TempPathFactory) -> None:
    files = write_config(tmp_path_factory.mktemp("no-server"), {"node": {"server_header": ""}})
    process = ServeProcess(files.path, "--roles", "callrouter")
    try:
        process.wait_ready()
        port = files.port("callrouter", "sip_tcp_port")
        answer = send_from("127.0.0.1", port, request("OPTIONS", port, "1001", "z9hG4bK-noserver"))
        assert status_line(answer) == "SIP/2.0 200 OK" and "\r\nServer:" not in answer
    finally:
        process.kill()
