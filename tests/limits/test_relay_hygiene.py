"""A live edge under hostile datagrams and a full relay range: drops are counted, refusals reported, the
log stays short (issue 21: 1-byte ChannelData once raised per datagram; exhaustion was silent)."""

from __future__ import annotations

import json
import random
import socket
import time
import urllib.request
from collections.abc import Iterator

import pytest

from edge import stun
from edge.stun import Attr
from edge.tokens import mint
from tests.conftest import NodeFiles, ServeProcess, serving, umedge, write_config

SECRET = "hygiene-secret-0123456789"
RELAY_PORTS = 4


def free_range(size: int) -> int:
    """The first port of `size` consecutive free UDP ports on loopback."""
    for _ in range(200):
        base = random.randrange(40000, 49000)
        sockets = []
        try:
            for port in range(base, base + size):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError("no free port range")


class Client:
    """A UDP TURN client of our own, kept open after its Allocate."""

    def __init__(self, port: int, identity: str) -> None:
        self.server = ("127.0.0.1", port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(5)
        self.token = mint(SECRET, identity, 600, time.time())

    def allocate(self) -> int | None:
        """None on success, else the error code."""
        transport = (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17))
        self.sock.sendto(stun.Message(stun.ALLOCATE, stun.REQUEST, None, [transport]).encode(), self.server)
        nonce = stun.decode(self.sock.recv(2048)).get(Attr.NONCE)
        request = stun.Message(stun.ALLOCATE, stun.REQUEST, None, [
            transport, (Attr.USERNAME, self.token.username.encode()), (Attr.REALM, b"example.test"),
            (Attr.NONCE, nonce)])
        key = stun.long_term_key(self.token.username, "example.test", self.token.password)
        self.sock.sendto(request.encode(key, fingerprint=True), self.server)
        reply = stun.decode(self.sock.recv(2048))
        return None if reply.msg_class == stun.SUCCESS else reply.error_code()[0]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    low = free_range(RELAY_PORTS)
    files = write_config(tmp_path_factory.mktemp("hygiene"), {
        "node": {"roles": ["edge", "web"]},
        "edge": {"auth_secrets": [SECRET], "relay_port_min": low, "relay_port_max": low + RELAY_PORTS - 1}})
    with serving(files) as process:
        yield files, process


def metric(files: NodeFiles, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{files.port('web', 'http_port')}/metrics", timeout=5) as page:
        for line in page.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def test_one_byte_channel_data_flood_is_dropped_and_counted_quietly(edge: tuple[NodeFiles, ServeProcess]) -> None:
    files, process = edge
    client = Client(files.port("edge", "turn_udp_port"), "sip:flood@example.test")
    try:
        assert client.allocate() is None
        log_before = len(process.stderr().splitlines())
        sent = 0
        for index in range(5000):  # every first byte of the ChannelData ranges, one byte long
            client.sock.sendto(bytes([0x40 + index % 0x40]), client.server)
            sent += 1
        for _ in range(10):  # the relay drains its socket buffer
            time.sleep(0.3)
            if metric(files, 'umedge_turn_dropped_total{reason="no_channel"}') >= sent * 0.9:
                break
        assert metric(files, 'umedge_turn_dropped_total{reason="no_channel"}') >= sent * 0.9
        assert client.allocate() == 437  # still alive and still allocated (a second Allocate: mismatch)
        log = process.stderr()
        assert len(log.splitlines()) - log_before <= 5, log[-2000:]
        assert "Traceback" not in log and "critical" not in log and "IndexError" not in log
    finally:
        client.close()


def test_an_exhausted_relay_range_is_refused_logged_and_shown(edge: tuple[NodeFiles, ServeProcess]) -> None:
    files, process = edge
    port = files.port("edge", "turn_udp_port")
    clients = [Client(port, f"sip:user{index}@example.test") for index in range(RELAY_PORTS + 3)]
    try:
        codes = [client.allocate() for client in clients]
        assert codes == [None] * RELAY_PORTS + [508] * 3
        assert metric(files, "umedge_relay_ports_exhausted_total") == 3
        assert metric(files, "umedge_relay_ports_free") == 0
        deadline = time.monotonic() + 5
        while "relay ports exhausted" not in process.stderr() and time.monotonic() < deadline:
            time.sleep(0.2)
        log = process.stderr()
        assert log.count("relay ports exhausted: 3 Allocate(s) refused") == 1, log[-2000:]
        assert f"{RELAY_PORTS} of {RELAY_PORTS} ports in use" in log
        status = umedge("status", "--config", str(files.path), "--json")
        assert json.loads(status.stdout)["relay_ports"] == {"size": RELAY_PORTS, "in_use": RELAY_PORTS, "free": 0,
                                                            "exhausted_refusals": 3}
        text = umedge("status", "--config", str(files.path)).stdout
        assert f"relay ports: 0 free of {RELAY_PORTS}" in text
    finally:
        for client in clients:
            client.close()
