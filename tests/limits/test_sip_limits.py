"""Abuse limits on the SIP listeners: per-source request rate, connection caps, slowloris."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.conftest import ServeProcess, write_config
from tests.test_serve import sip_request


def options(port: int, index: int) -> bytes:
    return sip_request("OPTIONS", port).replace(b"z9hG4bK-test1", f"z9hG4bK-rate{index}".encode()).replace(
        b"test-call-1", f"rate-call-{index}".encode())


def read_statuses(sock: socket.socket, count: int) -> list[int]:
    data, statuses = b"", []
    sock.settimeout(5)
    while len(statuses) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
        while b"\r\n\r\n" in data:
            head, data = data.split(b"\r\n\r\n", 1)
            statuses.append(int(head.split(b" ", 2)[1]))
    return statuses


def test_sip_rate_caps_and_timeouts(tmp_path: Path) -> None:
    files = write_config(tmp_path, {
        "limits": {"sip_requests_per_second": 20, "sip_burst": 20, "connections_per_source": 10,
                   "handshake_timeout": 1},
        "callrouter": {"gateways": [{"address": "127.0.0.0/8", "status": "enabled", "name": "loopback"}]}})
    process = ServeProcess(files.path, "--roles", "callrouter")
    port = files.port("callrouter", "sip_tcp_port")
    try:
        process.wait_ready()
        # 1. a burst of 100 requests: about the bucket's 20 answered 200, the rest 503 with Retry-After
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"".join(options(port, i) for i in range(100)))
            statuses = read_statuses(sock, 100)
        assert len(statuses) == 100
        assert 20 <= statuses.count(200) <= 30 and statuses.count(503) == 100 - statuses.count(200)
        assert process.stderr().count("SIP requests from 127.0.0.1 exceed 20.0/s") == 1
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)) as other:
            other.sendall(options(port, 1000))
            assert read_statuses(other, 1) == [200]  # another source has its own bucket

        # 2. 30 connections from one source: 10 stay, the rest are closed at once
        opened = [socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.3", 0))
                  for _ in range(30)]
        time.sleep(0.3)
        alive = 0
        for sock in opened:
            sock.setblocking(False)
            try:
                alive += sock.recv(1) != b""
            except BlockingIOError:
                alive += 1
            except OSError:
                pass
            sock.close()
        assert alive == 10

        # 3. slowloris on the MTLS port: a half ClientHello, then silence, is cut after 1 s
        with socket.create_connection(("127.0.0.1", files.port("callrouter", "sip_tls_port")), timeout=5,
                                      source_address=("127.0.0.4", 0)) as slow:
            slow.sendall(b"\x16\x03\x01")
            started = time.monotonic()
            try:
                assert slow.recv(10) == b""
            except ConnectionResetError:
                pass
            assert 0.8 < time.monotonic() - started < 3
    finally:
        process.kill()


def test_total_connection_cap_and_idle_timeout(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"limits": {"max_connections": 5, "idle_timeout": 1, "handshake_timeout": 5}})
    process = ServeProcess(files.path, "--roles", "callrouter")
    port = files.port("callrouter", "sip_tcp_port")
    try:
        process.wait_ready()
        # five sources, one connection each, fill the listener; a sixth source is refused
        held = [socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(f"127.0.1.{i}", 0))
                for i in range(1, 6)]
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.1.9", 0)) as extra:
            extra.settimeout(2)
            try:
                assert extra.recv(10) == b""  # closed at once: the listener is full
            except ConnectionResetError:
                pass
        # a connection that talks once, then idles, is closed after idle_timeout
        talker = held[0]
        talker.sendall(options(port, 1))
        assert read_statuses(talker, 1) == [403]  # no gateway configured for 127.0.1.1; it still answers
        started = time.monotonic()
        talker.settimeout(5)
        try:
            assert talker.recv(10) == b""
        except ConnectionResetError:
            pass
        assert 0.8 < time.monotonic() - started < 3
        for sock in held:
            sock.close()
    finally:
        process.kill()
