"""Every TCP/TLS listener of `umedge serve` enforces `[limits]`: per-source cap, handshake and idle timeouts.

One real process with every role and small limits (20 connections per
source, a 2 s handshake timeout). For each stream listener (MRAS, the HTTPS
token API, SIP over TLS and TCP, TURN over TCP and TLS, the web port) a
flood of connections from one address: those above the cap are closed by the
server at once, the rest by the handshake timeout; the server's descriptors
go back to where they were and an honest client from the same address is
served at once. The issue's flood was 3,000 connections per listener; 200
keep this file well under a minute and are ten times the cap, which is what
matters.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import ssl
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from certs import pki
from edge import stun
from tests.conftest import NodeFiles, ServeProcess, write_config
from tests.test_serve import read_response, sip_request
from um.netguard import ConnectionGuard, ConnectionLimits

CAP = 20
HANDSHAKE = 2.0
FLOOD = 200  # connections per listener (the issue's 3,000, bounded to keep the file fast)


@dataclass
class Node:
    files: NodeFiles
    process: ServeProcess

    @property
    def pid(self) -> int:
        return self.process.proc.pid

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    files = write_config(tmp_path_factory.mktemp("guards"), {
        "limits": {"connections_per_source": CAP, "handshake_timeout": HANDSHAKE, "idle_timeout": 30},
        "callrouter": {"gateways": [{"address": "127.0.0.0/8", "status": "enabled", "name": "loopback"}]}})
    process = ServeProcess(files.path)
    try:
        process.wait_ready()
        pki.issue(files.certs_dir, "client1", [])
        yield Node(files, process)
        log = process.stderr()
        assert not re.search(r"\scritical\s", log), log[-3000:]
        assert "Traceback" not in log and "NoneType" not in log, log[-3000:]
    finally:
        process.kill()


# --- honest clients -------------------------------------------------------------------

def tls_wrap(node: Node, sock: socket.socket, client_cert: bool) -> ssl.SSLSocket:
    certs = node.files.certs_dir
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.check_hostname = False
    if client_cert:
        context.load_cert_chain(str(certs / "client1.crt"), str(certs / "client1.key"))
    return context.wrap_socket(sock, server_hostname="node1.example.test")


def sip_exchange(sock: socket.socket, port: int, index: int) -> str:
    request = sip_request("OPTIONS", port).replace(b"z9hG4bK-test1", f"z9hG4bK-guard{index}".encode())
    sock.sendall(request.replace(b"test-call-1", f"guard-call-{index}".encode()))
    return read_response(sock)


def http_exchange(sock: socket.socket, port: int, index: int) -> str:
    """One keep-alive request; reads the whole response (framed by Content-Length)."""
    sock.sendall(f"GET /v1/status?{index} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data and (chunk := sock.recv(65536)):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    while length and len(body) < int(length.group(1)) and (chunk := sock.recv(65536)):
        body += chunk
    return head.decode(errors="replace")


def stun_exchange(sock: socket.socket, port: int, index: int) -> str:
    sock.sendall(stun.Message(stun.BINDING, stun.REQUEST).encode())
    sock.settimeout(5)
    data = sock.recv(2048)
    return "STUN success" if stun.decode(data).msg_class == stun.SUCCESS else repr(data)


@dataclass(frozen=True)
class Listener:
    name: str
    section: str
    key: str
    tls: bool
    client_cert: bool
    exchange: Callable[[socket.socket, int, int], str]
    answer: str  # how the honest client's answer starts

    def connect(self, node: Node, source: str = "127.0.0.1") -> socket.socket:
        raw = socket.create_connection(("127.0.0.1", node.files.port(self.section, self.key)), timeout=5,
                                       source_address=(source, 0))
        return tls_wrap(node, raw, self.client_cert) if self.tls else raw

    def served(self, node: Node, sock: socket.socket, index: int) -> str:
        return self.exchange(sock, node.files.port(self.section, self.key), index)


LISTENERS = [
    Listener("MRAS", "auth", "mras_tls_port", True, True, sip_exchange, "SIP/2.0 "),
    Listener("token HTTPS", "auth", "https_port", True, False, http_exchange, "HTTP/1.1 "),
    Listener("SIP TLS", "callrouter", "sip_tls_port", True, True, sip_exchange, "SIP/2.0 200"),
    Listener("SIP TCP", "callrouter", "sip_tcp_port", False, False, sip_exchange, "SIP/2.0 200"),
    Listener("TURN TCP", "edge", "turn_tcp_port", False, False, stun_exchange, "STUN success"),
    Listener("TURN TLS", "edge", "turn_tls_port", True, False, stun_exchange, "STUN success"),
    Listener("web HTTP", "web", "http_port", False, False, http_exchange, "HTTP/1.1 200"),
    Listener("web HTTPS", "web", "http_port", True, False, http_exchange, "HTTP/1.1 200"),
]
FLOODED = [listener for listener in LISTENERS if listener.name != "web HTTPS"]  # one flood per port


def closed_by_server(sock: socket.socket) -> bool:
    """True if the server closed (FIN or RST) this idle client socket; it never sent us anything."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def wait_for_fds(node: Node, baseline: int, timeout: float = 3.0) -> int:
    deadline = time.monotonic() + timeout
    while (count := node.fds()) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def abort(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0), as a crashing client or a fuzzer does."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# --- tests ----------------------------------------------------------------------------

@pytest.mark.parametrize("listener", FLOODED, ids=[listener.name for listener in FLOODED])
def test_a_flood_is_capped_and_timed_out_and_an_honest_client_is_served(node: Node, listener: Listener) -> None:
    port = node.files.port(listener.section, listener.key)
    baseline = node.fds()
    opened: list[socket.socket] = []
    try:
        started = time.monotonic()
        for _ in range(FLOOD):
            opened.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        flooded = time.monotonic() - started
        time.sleep(0.3)
        # above the cap: closed by the server at once
        still_open = sum(not closed_by_server(sock) for sock in opened)
        assert still_open == CAP, f"{still_open} of {FLOOD} connections open after {flooded + 0.3:.1f}s"
        # and at once: accepting and refusing keep up with the flood (a full accept queue drops SYNs)
        assert flooded + 0.3 < HANDSHAKE, f"opening {FLOOD} connections took {flooded:.1f}s"
        # the rest: silent (no TLS handshake, no first bytes), closed by the handshake timeout
        deadline = started + HANDSHAKE + 2.0
        while time.monotonic() < deadline and not all(closed_by_server(sock) for sock in opened):
            time.sleep(0.05)
        assert all(closed_by_server(sock) for sock in opened), "the connections under the cap were not timed out"
        assert time.monotonic() - started > HANDSHAKE - 0.2
    finally:
        for sock in opened:
            sock.close()
    assert wait_for_fds(node, baseline) <= baseline
    started = time.monotonic()
    with listener.connect(node) as client:  # the same address: its count was released
        assert listener.served(node, client, 1).startswith(listener.answer)
    assert time.monotonic() - started < 1.0


def test_slow_tls_handshakes_are_cut_by_the_handshake_timeout(node: Node) -> None:
    """A ClientHello dripping in a byte at a time does not keep a TLS connection beyond the handshake timeout."""
    hello = bytes.fromhex("16030100c8010000c40303") + os.urandom(32)
    tls_ports = {node.files.port(listener.section, listener.key) for listener in LISTENERS if listener.tls}
    socks = {port: socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.5", 0))
             for port in tls_ports}
    closed: dict[int, float] = {}
    started = time.monotonic()
    try:
        for byte in hello:
            for port, sock in socks.items():
                if port not in closed:
                    try:
                        sock.sendall(bytes([byte]))
                    except OSError:
                        pass
                    if closed_by_server(sock):
                        closed[port] = time.monotonic() - started
                    sock.setblocking(True)
            if len(closed) == len(socks) or time.monotonic() - started > HANDSHAKE + 2:
                break
            time.sleep(0.2)
    finally:
        for sock in socks.values():
            sock.close()
    assert sorted(closed) == sorted(tls_ports)
    assert all(HANDSHAKE - 0.3 < after < HANDSHAKE + 1.5 for after in closed.values()), closed


def test_a_dripped_http_request_is_cut_by_the_handshake_timeout(node: Node) -> None:
    """Slowloris on the web port: a request sent a byte at a time is closed once the handshake timeout ends."""
    port = node.files.port("web", "http_port")
    request = b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=("127.0.0.6", 0)) as sock:
        started = time.monotonic()
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            if closed_by_server(sock):
                break
            sock.setblocking(True)
            time.sleep(0.2)
        after = time.monotonic() - started
    assert HANDSHAKE - 0.3 < after < HANDSHAKE + 1.5


def test_working_clients_are_not_cut_by_the_handshake_timeout(node: Node) -> None:
    """Once a client has sent a whole message, only the idle timeout applies, on every listener."""
    clients = [(listener, listener.connect(node, "127.0.0.7")) for listener in LISTENERS]
    try:
        for index, (listener, sock) in enumerate(clients):
            assert listener.served(node, sock, 100 + index).startswith(listener.answer), listener.name
        time.sleep(HANDSHAKE + 0.5)
        for index, (listener, sock) in enumerate(clients):
            assert listener.served(node, sock, 200 + index).startswith(listener.answer), listener.name
    finally:
        for _, sock in clients:
            sock.close()


def test_every_close_path_releases_the_per_source_count(node: Node) -> None:
    """Resets, failed handshakes, garbage after a handshake, half-sent requests: none leaks a count."""
    source = "127.0.0.8"
    baseline = node.fds()
    for listener in LISTENERS:
        for round_ in range(CAP + 5):  # more than the cap: a single leaked count per round would show
            kind = round_ % 4
            if kind == 0:  # a TLS (or plain) client that resets mid-conversation
                sock = listener.connect(node, source)
                sock.sendall(b"GET / HTTP/1.1\r\nHost:")
                abort(sock)
            elif kind == 1:  # garbage instead of a handshake, then a reset
                raw = socket.create_connection(("127.0.0.1", node.files.port(listener.section, listener.key)),
                                               timeout=5, source_address=(source, 0))
                raw.sendall(b"\x16\x03\x01\x00\x05\xff\xff\xff\xff\xff" + os.urandom(200))
                abort(raw)
            elif kind == 2:  # a whole message and a mutated one, then close at once
                sock = listener.connect(node, source)
                index = 300 + round_
                listener.served(node, sock, index)
                sock.sendall(os.urandom(64) + b"\r\n\r\n")
                sock.close()
            else:  # a peer that closes with data still in flight both ways
                sock = listener.connect(node, source)
                sock.sendall(b"OPTIONS sip:x SIP/2.0\r\n" * 50)
                abort(sock)
    assert wait_for_fds(node, baseline) <= baseline
    # the counts of 127.0.0.8 are back at zero: it can hold CAP connections on each listener again
    for listener in FLOODED:
        port = node.files.port(listener.section, listener.key)
        held = [socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0))
                for _ in range(CAP)]
        try:
            time.sleep(0.3)
            assert not any(closed_by_server(sock) for sock in held), listener.name
        finally:
            for sock in held:
                sock.close()


# --- the guard's bookkeeping, in process ------------------------------------------------

class _Raising(Protocol):
    """An application protocol that fails where the fuzzer made the token API fail."""

    def __init__(self, where: str) -> None:
        self.where = where

    def makeConnection(self, transport: object) -> None:
        if self.where == "makeConnection":
            raise RuntimeError("boom")
        super().makeConnection(transport)  # type: ignore[arg-type]

    def connectionLost(self, reason: object = None) -> None:
        if self.where == "connectionLost":
            raise RuntimeError("boom")


def _guard(where: str, per_source: int = 2) -> ConnectionGuard:
    factory = Factory.forProtocol(lambda: _Raising(where))
    return ConnectionGuard(factory, ConnectionLimits(per_source, 100, 60.0, 600.0), "test", settle_on_data=False)


def _connect(guard: ConnectionGuard, host: str = "192.0.2.1") -> Any:
    address = IPv4Address("TCP", host, 5000)
    protocol = guard.buildProtocol(address)
    assert protocol is not None
    transport = StringTransport(peerAddress=IPv4Address("TCP", host, 5000))
    return protocol, transport


@pytest.mark.parametrize("where", ["makeConnection", "connectionLost", "nowhere"])
def test_every_close_releases_the_count_once(where: str) -> None:
    guard = _guard(where)
    first, transport = _connect(guard)
    second, other = _connect(guard)
    assert guard.buildProtocol(IPv4Address("TCP", "192.0.2.1", 5001)) is None  # at the cap
    for protocol, wire in ((first, transport), (second, other)):
        try:
            protocol.makeConnection(wire)
        except RuntimeError:
            pass
    with pytest.raises(RuntimeError) if where == "connectionLost" else contextlib.nullcontext():
        first.connectionLost(Failure(ConnectionDone()))
    assert guard.per_source["192.0.2.1"] == 1
    with contextlib.suppress(RuntimeError):
        first.connectionLost(Failure(ConnectionDone()))  # a second call: nothing released twice
    assert guard.per_source["192.0.2.1"] == 1
    with contextlib.suppress(RuntimeError):
        second.connectionLost(Failure(ConnectionDone()))
    assert "192.0.2.1" not in guard.per_source and not guard.protocols
    assert first._timer is None and second._timer is None  # no timer left behind


def test_a_refusing_inner_factory_is_refused_and_not_counted() -> None:
    class Refusing(Factory):
        def buildProtocol(self, addr: object) -> None:  # type: ignore[override]
            return None

    guard = ConnectionGuard(Refusing(), ConnectionLimits(2, 100, 60.0, 600.0), "test")
    assert guard.buildProtocol(IPv4Address("TCP", "192.0.2.1", 5000)) is None
    assert not guard.per_source
