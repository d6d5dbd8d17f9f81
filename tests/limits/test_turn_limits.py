"""Abuse limits on the edge's TURN listeners: request floods, connection caps, slowloris."""

from __future__ import annotations

import resource
import socket
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from edge import stun
from edge.stun import Attr
from tests.conftest import ROOT, NodeFiles, ServeProcess, write_config

SECRET = "limits-secret-0123456789"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    files = write_config(tmp_path_factory.mktemp("limits"), {
        "edge": {"auth_secrets": [SECRET]},
        "limits": {"connections_per_source": 50, "handshake_timeout": 1, "idle_timeout": 30,
                   "stun_requests_per_second": 200, "stun_burst": 400}})
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        yield files, process
    finally:
        process.kill()


def allocate_rtt(port: int, source: str = "127.0.0.2") -> float:
    """Seconds from an Allocate to its (401) answer, from a second client."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.settimeout(2)
        request = stun.Message(stun.ALLOCATE, stun.REQUEST, None, [
            (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17))]).encode()
        started = time.monotonic()
        sock.sendto(request, ("127.0.0.1", port))
        reply = stun.decode(sock.recv(2048))
        assert reply.error_code()[0] == 401
        return time.monotonic() - started


def test_binding_flood_leaves_another_client_served(edge: tuple[NodeFiles, ServeProcess]) -> None:
    files, process = edge
    port = files.port("edge", "turn_udp_port")
    flood = subprocess.Popen([sys.executable, "-m", "tests.limits.flood", str(port), "50000", "5"],
                             stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        time.sleep(1)  # the flood is running
        rtts = []
        while flood.poll() is None and len(rtts) < 30:
            rtts.append(allocate_rtt(port))
            time.sleep(0.1)
    finally:
        sent = int(flood.communicate(timeout=15)[0].strip() or 0)
    assert sent > 100_000, f"the flood sent only {sent}"
    assert len(rtts) >= 10
    assert max(rtts) < 0.1, f"Allocate answer times during the flood: {sorted(rtts)[-5:]}"
    assert statistics.median(rtts) < 0.05
    log = process.stderr()
    assert log.count("STUN requests from 127.0.0.1 over udp exceed") == 1  # logged once per minute


def test_connection_cap_per_source(edge: tuple[NodeFiles, ServeProcess]) -> None:
    files, process = edge
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    port = files.port("edge", "turn_tcp_port")
    opened: list[socket.socket] = []
    try:
        for _ in range(2000):
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        time.sleep(0.5)
        alive = 0
        for sock in opened:
            sock.setblocking(False)
            try:
                alive += sock.recv(1) != b""  # b"" means the server closed it
            except BlockingIOError:
                alive += 1  # still open, nothing to read
            except OSError:
                pass
        assert alive == 50
        with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.2", 0)) as other:
            other.sendall(stun.Message(stun.BINDING, stun.REQUEST).encode())
            assert stun.decode(other.recv(2048)).msg_class == stun.SUCCESS
        assert "refusing connections from 127.0.0.1" in process.stderr()
    finally:
        for sock in opened:
            sock.close()


def test_slowloris_tls_is_cut_after_the_handshake_timeout(edge: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = edge
    with socket.create_connection(("127.0.0.1", files.port("edge", "turn_tls_port")), timeout=5,
                                  source_address=("127.0.0.3", 0)) as sock:
        sock.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
        started = time.monotonic()
        sock.settimeout(5)
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass  # aborted: a reset is a close too
        assert 0.8 < time.monotonic() - started < 3


def test_a_tls_client_that_talks_is_not_cut(edge: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = edge
    context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
    context.check_hostname = False
    raw = socket.create_connection(("127.0.0.1", files.port("edge", "turn_tls_port")), timeout=5,
                                   source_address=("127.0.0.4", 0))
    with context.wrap_socket(raw) as sock:
        for _ in range(3):
            time.sleep(0.6)  # more than half the handshake timeout each time, longer in total
            sock.sendall(stun.Message(stun.BINDING, stun.REQUEST).encode())
            assert stun.decode(sock.recv(2048)).msg_class == stun.SUCCESS
