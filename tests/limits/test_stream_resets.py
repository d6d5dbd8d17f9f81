"""TCP and TLS TURN clients that reset their connection (RST) release everything at once.

A client that sends data and then closes with SO_LINGER 0 (an RST, what
Chromium's WebRTC stack does in normal use) must reach the stream
protocol's connectionLost: its allocation, relay port, file descriptor and
per-source connection slot are released within seconds, not at the idle
timeout. The event loop decides this (edge.node.runtime.install_reactor):
libuv stops watching a socket that reports an error, and uvloop calls the
reader once and closes its poll handle (MagicStack/uvloop#552). When that
one read finds data that came with the RST, Twisted's asyncio reactor never
reads again and never sees the reset. asyncio's selector loop keeps calling
the reader, Twisted reads to the ECONNRESET and loses the connection.
These tests fail on uvloop (the in-flight cases and the run of resets).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import struct
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge import stun
from edge.stun import Attr
from edge.tokens import mint
from tests.conftest import NodeFiles, ServeProcess, write_config

SECRET = "reset-secret-0123456789"
REALM = "example.test"
SLOTS = 8  # [limits] connections_per_source: a few leaked slots would refuse the next client
RELAY_PORTS = 32  # a narrow relay range: leaked relay ports soon exhaust it (508)
RESETS = 1000
FD_SLACK = 3  # fds that come and go on their own (a log file reopened, a web request)
ALARMS = re.compile(r"critical|unhandled|traceback", re.I)


@dataclass
class Edge:
    files: NodeFiles
    process: ServeProcess
    tls: ssl.SSLContext

    @property
    def pid(self) -> int:
        return self.process.proc.pid

    def port(self, transport: str) -> int:
        return self.files.port("edge", "turn_tls_port" if transport == "tls" else "turn_tcp_port")

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def settled_fds(self) -> int:
        """The fd count without the web connection a /metrics read just closed (the node closes its side
        a moment later): the lowest of a few readings."""
        readings = []
        for _ in range(4):
            readings.append(self.fds())
            time.sleep(0.05)
        return min(readings)

    def metric(self, name: str) -> dict[str, float]:
        """One TURN metric of the web role's /metrics, by transport."""
        url = f"http://127.0.0.1:{self.files.port('web', 'http_port')}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode()
        return {m.group(1): float(m.group(2)) for m in re.finditer(
            rf'^{name}\{{transport="(\w+)"\}} (\S+)$', text, re.M)}

    def allocations(self) -> dict[str, float]:
        return self.metric("umedge_turn_allocations_active")

    def created(self) -> int:
        return int(sum(self.metric("umedge_turn_allocations_created_total").values()))

    def active(self) -> int:
        return int(sum(self.allocations().values()))


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Edge]:
    relay_min = 50000 + (os.getpid() % 300) * RELAY_PORTS  # apart from other tests' relay ranges
    files = write_config(tmp_path, {
        "edge": {"auth_secrets": [SECRET], "relay_port_min": relay_min,
                 "relay_port_max": relay_min + RELAY_PORTS - 1},
        "limits": {"connections_per_source": SLOTS, "idle_timeout": 600}})
    process = ServeProcess(files.path, "--roles", "edge,web")
    try:
        process.wait_ready()
        context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
        context.check_hostname = False
        yield Edge(files, process, context)
    finally:
        process.kill()


def connect(edge: Edge, transport: str, source: str = "127.0.0.1") -> socket.socket:
    raw = socket.create_connection(("127.0.0.1", edge.port(transport)), timeout=5, source_address=(source, 0))
    if transport == "tls":
        return edge.tls.wrap_socket(raw)
    return raw


def exchange(sock: socket.socket, message: bytes) -> stun.Message:
    sock.sendall(message)
    head = b""
    while len(head) < 20:
        chunk = sock.recv(20 - len(head))
        assert chunk, "the server closed the connection"
        head += chunk
    length = struct.unpack("!H", head[2:4])[0]
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        assert chunk, "the server closed the connection"
        body += chunk
    return stun.decode(head + body)


def allocate(sock: socket.socket, identity: str = "sip:reset@example.test") -> tuple[str, int]:
    """An authenticated Allocate over the stream; the relayed address."""
    token = mint(SECRET, identity, 600, time.time())
    transport_attr = (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17))
    challenge = exchange(sock, stun.Message(stun.ALLOCATE, stun.REQUEST, None, [transport_attr]).encode())
    assert challenge.error_code()[0] == 401  # type: ignore[index]
    request = stun.Message(stun.ALLOCATE, stun.REQUEST, None, [
        transport_attr, (Attr.USERNAME, token.username.encode()), (Attr.REALM, REALM.encode()),
        (Attr.NONCE, challenge.get(Attr.NONCE))])
    reply = exchange(sock, request.encode(stun.long_term_key(token.username, REALM, token.password),
                                          fingerprint=True))
    assert reply.msg_class == stun.SUCCESS, reply.error_code()
    relayed = reply.xor_address(Attr.XOR_RELAYED_ADDRESS)
    assert relayed is not None
    return relayed[0], relayed[1]


def reset(sock: socket.socket, in_flight: bool = False) -> None:
    """Close with an RST (SO_LINGER on, linger 0), as Chromium does; `in_flight`: right after more data.

    Without `in_flight` the RST reaches a connection the server has read dry
    (the client had its answer): the socket reports only the error. With it,
    a Binding indication (a keepalive: no answer) goes just before the RST,
    so the server finds data and the error together when it next polls.
    """
    if in_flight:
        sock.sendall(stun.Message(stun.BINDING, stun.INDICATION).encode())
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(sock, ssl.SSLSocket):  # no close_notify: straight to the RST
        sock = socket.socket(fileno=sock.detach())
    sock.close()


@contextlib.contextmanager
def paused(pid: int) -> Iterator[None]:
    """The server stopped (SIGSTOP) for the block: what a busy loop does, made certain."""
    os.kill(pid, signal.SIGSTOP)
    try:
        assert wait_for(lambda: stopped(pid), 5)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((host, port))
            return True
        except OSError:
            return False


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def slots_free(edge: Edge, transport: str) -> bool:
    """All SLOTS connections from 127.0.0.1 are served (a leaked slot refuses the last ones)."""
    opened = []
    try:
        for _ in range(SLOTS):
            sock = connect(edge, transport)
            opened.append(sock)
            if exchange(sock, stun.Message(stun.BINDING, stun.REQUEST).encode()).msg_class != stun.SUCCESS:
                return False
        return True
    except (OSError, AssertionError):
        return False
    finally:
        for sock in opened:
            sock.close()


def alarms(edge: Edge) -> list[str]:
    return [line for line in edge.process.stderr().splitlines() if ALARMS.search(line)]


@pytest.mark.parametrize("in_flight", [False, True], ids=["idle", "in-flight"])
@pytest.mark.parametrize("transport", ["tcp", "tls"])
def test_a_reset_client_releases_its_allocation_port_fd_and_slot(edge: Edge, transport: str,
                                                                 in_flight: bool) -> None:
    assert wait_for(lambda: edge.active() == 0, 5)
    baseline = edge.settled_fds()
    sock = connect(edge, transport)
    host, port = allocate(sock)
    assert edge.allocations()[transport] == 1
    assert not port_free(host, port)
    assert edge.fds() >= baseline + 2  # the client's socket and the relay socket
    if in_flight:  # the data and the RST reach the server in one poll
        with paused(edge.pid):
            reset(sock, in_flight)
    else:
        reset(sock)
    started = time.monotonic()
    assert wait_for(lambda: edge.active() == 0, 5), f"allocation still active: {edge.allocations()}"
    assert wait_for(lambda: port_free(host, port), 5 - (time.monotonic() - started)), f"relay port {port} held"
    assert wait_for(lambda: edge.fds() <= baseline, 5 - (time.monotonic() - started)), \
        f"{edge.fds()} fds open, {baseline} before"
    assert slots_free(edge, transport)
    assert alarms(edge) == []


def test_a_thousand_resets_leave_the_node_where_it_started(edge: Edge) -> None:
    """RESETS clients in a row, TCP and TLS, each Allocating and then resetting (idle or with data in flight)."""
    assert wait_for(lambda: edge.active() == 0, 5)
    baseline, created = edge.settled_fds(), edge.created()
    started = time.monotonic()
    for n in range(RESETS):
        transport = "tls" if n % 2 else "tcp"
        try:
            sock = connect(edge, transport)
            allocate(sock, identity=f"sip:reset{n % 10}@example.test")
        except (OSError, AssertionError) as error:
            pytest.fail(f"client {n} ({transport}) not served after {n} resets: {error!r}; "
                        f"allocations {edge.allocations()}, fds {edge.fds()} (baseline {baseline})")
        reset(sock, in_flight=n % 4 >= 2)
    elapsed = time.monotonic() - started
    assert wait_for(lambda: edge.active() == 0 and edge.fds() <= baseline + FD_SLACK, 5), \
        f"after {RESETS} resets: allocations {edge.allocations()}, fds {edge.fds()} (baseline {baseline})"
    assert edge.created() - created == RESETS
    assert slots_free(edge, "tcp") and slots_free(edge, "tls")
    assert alarms(edge) == []
    assert elapsed < 50, f"{RESETS} resets took {elapsed:.1f}s"
