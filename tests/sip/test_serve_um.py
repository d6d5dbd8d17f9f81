"""The UM roles in real `umedge serve` processes: SIPp over TCP and TLS, 403/404, a recycle during a
SIPp run, a worker call surviving a recycle, and the remote mailbox server path with two nodes."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from certs import pki
from tests.conftest import REQUIRE_TOOLS, NodeFiles, ServeProcess, umedge
from tests.sip.sipp_tools import TlsTunnel, run_sipp, sipp_available, write_scenario
from tests.sip.um_nodes import SECURE_PLANS, um_config

UM_ROLES = ("--roles", "callrouter,mailbox,worker")
needs_sipp = pytest.mark.skipif(not sipp_available() and not REQUIRE_TOOLS, reason="sipp (Debian sip-tester) missing")


def raw_invite(port: int, pilot: str = "5000", to: str = "1001", branch: str = "z9hG4bK-t1",
               body: bytes = b"", extra: str = "") -> bytes:
    headers = (f"INVITE sip:{pilot}@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch={branch}\r\n"
               f"Max-Forwards: 70\r\nFrom: <sip:gw@127.0.0.1>;tag=t-{branch}\r\nTo: <sip:{to}@127.0.0.1>\r\n"
               f"Call-ID: {branch}@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@127.0.0.1:5999;transport=tcp>\r\n"
               f"{extra}")
    if body:
        headers += "Content-Type: application/sdp\r\n"
    return (headers + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def exchange(port: int, data: bytes, timeout: float = 5) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until_final(sock)


def read_until_final(sock: socket.socket) -> str:
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data.decode(errors="replace")
        data += chunk
        text = data.decode(errors="replace")
        for block in text.split("\r\n\r\n"):
            if block.startswith("SIP/2.0 ") and not block.startswith("SIP/2.0 1"):
                return text


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    files = um_config(tmp_path_factory.mktemp("um"), {"callrouter": SECURE_PLANS})
    process = ServeProcess(files.path, *UM_ROLES)
    try:
        process.wait_ready()
        pki.issue(files.certs_dir, "client1", [])
        yield files, process
    finally:
        process.kill()


def slot_port(files: NodeFiles, key: str, slot: int = 1) -> int:
    return int(files.values["worker"][key][slot - 1])  # type: ignore[index]


@needs_sipp
def test_sipp_2000_calls_over_tcp_each_redirected_to_the_worker(node: tuple[NodeFiles, ServeProcess],
                                                                tmp_path: Path) -> None:
    files, _ = node
    worker = slot_port(files, "sip_ports")
    scenario = write_scenario(tmp_path / "tcp.xml",
                              contact_re=rf"^\s*<sip:5000@127\.0\.0\.1:{worker};transport=tcp>\s*$")
    result = run_sipp(scenario, files.port("callrouter", "sip_tcp_port"), calls=2000, rate=200, timeout=60)
    assert (result.returncode, result.successful, result.failed) == (0, 2000, 0), result.output[-2000:]


@needs_sipp
def test_sipp_2000_calls_over_tls_get_tls_workers(node: tuple[NodeFiles, ServeProcess], tmp_path: Path) -> None:
    files, _ = node
    worker = slot_port(files, "sip_dual_tls_ports")
    # SIPp asks with a sip: Request-URI over TLS: the Contact mirrors it (sip: + transport=tls, RFC 5630).
    scenario = write_scenario(tmp_path / "tls.xml", pilot="6000", via_transport="TLS",
                              contact_re=rf"^\s*<sip:6000@127\.0\.0\.1:{worker};transport=tls>\s*$")
    with TlsTunnel(files.port("callrouter", "sip_tls_port"), files.certs_dir) as tunnel:
        result = run_sipp(scenario, tunnel.port, calls=2000, rate=200, timeout=60)
    assert (result.returncode, result.successful, result.failed) == (0, 2000, 0), result.output[-2000:]


@needs_sipp
def test_sipp_diverted_calls(node: tuple[NodeFiles, ServeProcess], tmp_path: Path) -> None:
    files, _ = node
    worker = slot_port(files, "sip_ports")
    scenario = write_scenario(tmp_path / "div.xml", called="5000", diversion="1007",
                              contact_re=rf"^\s*<sip:5000@127\.0\.0\.1:{worker};transport=tcp>\s*$")
    result = run_sipp(scenario, files.port("callrouter", "sip_tcp_port"), calls=100, rate=100, timeout=30)
    assert (result.successful, result.failed) == (100, 0), result.output[-2000:]


def test_unknown_extension_pilot_and_tcp_on_a_secured_plan(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = node
    port = files.port("callrouter", "sip_tcp_port")
    assert exchange(port, raw_invite(port, to="1099", branch="z9hG4bK-a")).startswith(
        "SIP/2.0 404 Not Found - no mailbox")
    assert exchange(port, raw_invite(port, pilot="4321", branch="z9hG4bK-b")).startswith(
        "SIP/2.0 404 Not Found - no hunt group")
    assert exchange(port, raw_invite(port, pilot="6000", branch="z9hG4bK-c")).startswith(
        "SIP/2.0 403 Forbidden - dial plan secure")
    reply = exchange(port, raw_invite(port, pilot="5001", to="5001", branch="z9hG4bK-d"))  # subscriber access
    assert reply.startswith("SIP/2.0 302") and "Contact: <sip:5001@127.0.0.1:" in reply


def test_unknown_gateway_gets_403(tmp_path: Path) -> None:
    files = um_config(tmp_path, {"callrouter": {"gateways": [{"address": "192.0.2.10"}]}})
    process = ServeProcess(files.path, *UM_ROLES)
    try:
        process.wait_ready()
        port = files.port("callrouter", "sip_tcp_port")
        reply = exchange(port, raw_invite(port))
        assert reply.startswith("SIP/2.0 403 Forbidden\r\n"), reply
    finally:
        process.kill()


@needs_sipp
def test_tls_startup_mode_gives_tls_contacts_on_the_slot_ports(tmp_path: Path) -> None:
    files = um_config(tmp_path, {"callrouter": {**SECURE_PLANS, "startup_mode": "tls"},
                                 "mailbox": {"startup_mode": "tls"}, "worker": {"startup_mode": "tls"}})
    process = ServeProcess(files.path, *UM_ROLES)
    try:
        process.wait_ready()
        pki.issue(files.certs_dir, "client1", [])
        worker = slot_port(files, "sip_ports")
        scenario = write_scenario(tmp_path / "tlsmode.xml", pilot="6000", via_transport="TLS",
                                  contact_re=rf"^\s*<sip:6000@127\.0\.0\.1:{worker};transport=tls>\s*$")
        with TlsTunnel(files.port("callrouter", "sip_tls_port"), files.certs_dir) as tunnel:
            result = run_sipp(scenario, tunnel.port, calls=200, rate=200, timeout=30)
        assert (result.successful, result.failed) == (200, 0), result.output[-2000:]
    finally:
        process.kill()


def worker_cli(files: NodeFiles, action: str) -> dict:
    result = umedge("worker", action, "--config", str(files.path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_sipp
def test_recycle_during_a_sipp_run_fails_no_call(tmp_path: Path) -> None:
    files = um_config(tmp_path)
    process = ServeProcess(files.path, *UM_ROLES)
    try:
        process.wait_ready()
        slot1, slot2 = slot_port(files, "sip_ports", 1), slot_port(files, "sip_ports", 2)
        scenario = write_scenario(tmp_path / "recycle.xml",
                                  contact_re=rf"^\s*<sip:5000@127\.0\.0\.1:({slot1}|{slot2});transport=tcp>\s*$")
        results = []
        runner = threading.Thread(target=lambda: results.append(
            run_sipp(scenario, files.port("callrouter", "sip_tcp_port"), calls=2000, rate=200, timeout=60)))
        runner.start()
        time.sleep(4)
        recycled = worker_cli(files, "recycle")
        runner.join(90)
        [result] = results
        assert (result.returncode, result.successful, result.failed) == (0, 2000, 0), result.output[-2000:]
        assert recycled["active_slot"] == 2
        status = worker_cli(files, "status")
        one, two = status["slots"]
        assert one["state"] == "idle" and two["state"] == "active"  # slot 1 had no calls: it exited at once
        assert one["redirects"] > 300 and two["redirects"] > 300 and one["redirects"] + two["redirects"] == 2000
    finally:
        process.kill()


def test_a_worker_call_survives_a_recycle_and_the_old_worker_exits_after_it(tmp_path: Path) -> None:
    files = um_config(tmp_path)
    process = ServeProcess(files.path, *UM_ROLES)
    try:
        process.wait_ready()
        router = files.port("callrouter", "sip_tcp_port")
        redirect = exchange(router, raw_invite(router))
        slot1 = slot_port(files, "sip_ports", 1)
        assert f"Contact: <sip:5000@127.0.0.1:{slot1};transport=tcp>" in redirect
        sdp = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
        with socket.create_connection(("127.0.0.1", slot1), timeout=5) as call:
            call.sendall(raw_invite(slot1, branch="z9hG4bK-call", body=sdp))
            answer = read_until_final(call)
            answer = answer[answer.index("SIP/2.0 200 OK"):]  # after 100 Trying: the worker sets up media first
            assert "m=audio 0 " not in answer and "m=audio " in answer  # the worker's media (um.worker)
            to_line = next(line for line in answer.split("\r\n") if line.startswith("To: "))
            call.sendall(b"ACK sip:worker1@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-ack\r\n"
                         b"From: <sip:gw@127.0.0.1>;tag=t-z9hG4bK-call\r\n" + to_line.encode() + b"\r\n"
                         b"Call-ID: z9hG4bK-call@127.0.0.1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
            recycled = worker_cli(files, "recycle")
            assert recycled["active_slot"] == 2
            assert recycled["slots"][0] == {**recycled["slots"][0], "state": "draining", "calls": 1}
            slot2 = slot_port(files, "sip_ports", 2)
            again = exchange(router, raw_invite(router, branch="z9hG4bK-t2"))
            assert f"Contact: <sip:5000@127.0.0.1:{slot2};transport=tcp>" in again  # new calls: the new worker
            call.sendall(b"BYE sip:worker1@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-bye\r\n"
                         b"From: <sip:gw@127.0.0.1>;tag=t-z9hG4bK-call\r\n" + to_line.encode() + b"\r\n"
                         b"Call-ID: z9hG4bK-call@127.0.0.1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n")
            assert read_until_final(call).startswith("SIP/2.0 200 OK")  # the old worker finished its call
        deadline = time.monotonic() + 10  # the old process exits, a fresh one stands by on its slot
        while (status := worker_cli(files, "status"))["slots"][0]["state"] != "idle" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status["slots"][0]["state"] == "idle" and status["slots"][0]["calls_total"] == 1
        assert "finished its calls and exited" in process.stderr()
    finally:
        process.kill()


@needs_sipp
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_remote_mailbox_server_on_a_second_node(tmp_path: Path, transport: str) -> None:
    mailbox_node = um_config(tmp_path, {"node": {"name": "mbx-b", "state_dir": "state-b"}}, name="b.toml")
    router_node = um_config(tmp_path, {
        "node": {"name": "cr-a", "state_dir": "state-a"},
        "callrouter": {"mailboxes": [{"extension": "1000-1009", "server": "mbx-b"}],
                       "mailbox_servers": [{"name": "mbx-b", "address": "127.0.0.1", "transport": transport,
                                            "tcp_port": mailbox_node.port("mailbox", "sip_tcp_port"),
                                            "tls_port": mailbox_node.port("mailbox", "sip_tls_port")}]}},
        name="a.toml")
    b = ServeProcess(mailbox_node.path, "--roles", "mailbox,worker")
    a = None
    try:
        b.wait_ready()
        a = ServeProcess(router_node.path, "--roles", "callrouter")
        a.wait_ready()
        worker = slot_port(mailbox_node, "sip_ports")
        assert worker != slot_port(router_node, "sip_ports")
        scenario = write_scenario(tmp_path / f"remote-{transport}.xml",
                                  contact_re=rf"^\s*<sip:5000@127\.0\.0\.1:{worker};transport=tcp>\s*$")
        result = run_sipp(scenario, router_node.port("callrouter", "sip_tcp_port"), calls=300, rate=100, timeout=30)
        assert (result.returncode, result.successful, result.failed) == (0, 300, 0), result.output[-2000:]
        b.stop()  # the mailbox server goes away: its calls get 503 with Retry-After
        port = router_node.port("callrouter", "sip_tcp_port")
        reply = exchange(port, raw_invite(port, branch="z9hG4bK-down"))
        trying, final = reply.split("\r\n\r\n")[:2]  # asking a remote server: 100 Trying first
        assert trying.startswith("SIP/2.0 100 Trying"), reply
        assert final.startswith("SIP/2.0 503 Service Unavailable") and "Retry-After: 60" in final, reply
    finally:
        b.kill()
        if a is not None:
            a.kill()


def test_directory_file_is_reloaded_on_sighup(tmp_path: Path) -> None:
    import signal

    directory = tmp_path / "directory.toml"
    directory.write_text('mailboxes = [{ extension = "3000", server = "local" }]\n')
    files = um_config(tmp_path, {"callrouter": {"directory_file": str(directory)}})
    process = ServeProcess(files.path, *UM_ROLES)
    try:
        process.wait_ready()
        port = files.port("callrouter", "sip_tcp_port")
        assert exchange(port, raw_invite(port, to="3000", branch="z9hG4bK-r1")).startswith("SIP/2.0 302")
        assert exchange(port, raw_invite(port, to="3001", branch="z9hG4bK-r2")).startswith("SIP/2.0 404")
        directory.write_text('mailboxes = [{ extension = "3000-3001", server = "local" }]\n')
        process.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while "directory loaded" not in process.stderr() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exchange(port, raw_invite(port, to="3001", branch="z9hG4bK-r3")).startswith("SIP/2.0 302")
        assert process.stop() == 0  # still a clean stop after the reload
    finally:
        process.kill()
