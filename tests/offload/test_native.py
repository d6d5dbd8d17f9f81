"""The native forwarder (edge/offload/forwarder.c) on loopback sockets: its tables, what it relays, what it
leaves to the engine, and the one line "on" gives when it cannot build."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.offload import native
from edge.offload.loader import OffloadUnavailable
from edge.offload.mirror import ANY_FAMILY
from tests.conftest import REQUIRE_TOOLS, ROOT, write_config

CHANNEL = 0x4001
LAYOUT = ANY_FAMILY  # forwarder.c's entries: 16-byte addresses, IPv4 mapped


def _port(number: int) -> bytes:
    return struct.pack("!H", number)


def _udp(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    if host == "::":  # dual-stack, as a listener on listen_address = "::"
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind((host, 0))
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def forwarder(tmp_path: Path) -> Iterator[native.NativeForwarder]:
    if not any(shutil.which(name) for name in native.COMPILERS):
        if REQUIRE_TOOLS:
            pytest.fail("needs a C compiler (cc, gcc or clang)")
        pytest.skip("needs a C compiler (cc, gcc or clang)")
    fw = native.NativeForwarder("on", tmp_path)
    fw.start()
    assert fw.active and fw.reason.startswith("forwarder.c ")
    yield fw
    fw.stop()
    assert not fw.active


class Wiring:
    """A client, the listener, a relay socket and a peer, with one channel's entries written as the engine would."""

    def __init__(self, fw: native.NativeForwarder, host: str = "127.0.0.1", listener_host: str = "",
                 lifetime: float = 30.0) -> None:
        """Every socket on `host`; the listener on `listener_host` ("::": dual-stack) if given."""
        self.fw, self.host, self.ip = fw, host, LAYOUT.address(host)
        self.client, self.relay, self.peer = _udp(host), _udp(host), _udp(host)
        self.listener = _udp(listener_host or host)
        for sock in (self.listener, self.relay):
            sock.setblocking(False)
        self.ports = {name: sock.getsockname()[1] for name, sock in
                      (("client", self.client), ("listener", self.listener), ("relay", self.relay),
                       ("peer", self.peer))}
        key, relay_key = fw.bound(self.listener), fw.bound(self.relay)  # how edge.turn.io keys its sockets
        assert key is not None and relay_key is not None
        assert key.port == _port(self.ports["listener"]) and key.ipv6 == (self.listener.family == socket.AF_INET6)
        self.key, self.relay_key, ip = key, relay_key, self.ip
        self.client_key = LAYOUT.client_key.pack(ip, key.ip, _port(self.ports["client"]),
                                                 _port(self.ports["listener"]), _port(CHANNEL))
        self.peer_key = LAYOUT.peer_key.pack(ip, ip, _port(self.ports["peer"]), _port(self.ports["relay"]))
        self.write(lifetime)

    def at(self, name: str) -> tuple[str, int]:
        return self.host, self.ports[name]

    def client_as_seen(self) -> tuple[str, int]:
        """The client's address as the engine's own reads of the listener give it (an IPv4 client of a
        dual-stack listener: ::ffff:a.b.c.d)."""
        dual = self.listener.family == socket.AF_INET6 and ":" not in self.host
        return (f"::ffff:{self.host}" if dual else self.host), self.ports["client"]
    def write(self, lifetime: float, permitted: float | None = None) -> None:
        now = time.monotonic_ns()
        expires = now + int(lifetime * 1e9)
        allowed = now + int((lifetime if permitted is None else permitted) * 1e9)
        assert self.fw._clients is not None and self.fw._peers is not None
        ip = self.ip
        self.fw._clients.update(self.client_key, LAYOUT.client_value.pack(
            ip, ip, _port(self.ports["relay"]), _port(self.ports["peer"]), self.relay.fileno(), expires, 0, 0))
        self.fw._peers.update(self.peer_key, LAYOUT.peer_value.pack(
            ip, self.key.ip, _port(self.ports["client"]), _port(self.ports["listener"]), _port(CHANNEL),
            self.listener.fileno(), expires, allowed, 0, 0))

    def from_clients(self) -> list[tuple[bytes, tuple[str, int]]]:
        time.sleep(0.05)  # loopback delivery is immediate, but let the sender's datagrams all land
        passed, drained = self.fw.from_clients(self.listener.fileno(), self.key)
        return passed

    def from_peers(self) -> list[tuple[bytes, tuple[str, int]]]:
        time.sleep(0.05)
        passed, drained = self.fw.from_peers(self.relay.fileno(), self.relay_key)
        return passed

    def close(self) -> None:
        for sock in (self.client, self.listener, self.relay, self.peer):
            sock.close()


@pytest.fixture(params=["127.0.0.1", "::1", "dual-stack"])
def wiring(request: pytest.FixtureRequest, forwarder: native.NativeForwarder) -> Iterator[Wiring]:
    """IPv4, IPv6, and IPv4 through a dual-stack listener on "::" (an IPv6 socket answering mapped clients)."""
    dual = request.param == "dual-stack"
    wired = Wiring(forwarder, "127.0.0.1" if dual else str(request.param), "::" if dual else "")
    yield wired
    wired.close()


def _channel_data(payload: bytes, length: int | None = None, channel: int = CHANNEL) -> bytes:
    return struct.pack("!HH", channel, len(payload) if length is None else length) + payload


def test_bound_channel_data_goes_both_ways_in_c_and_is_counted(wiring: Wiring) -> None:
    listener = wiring.at("listener")
    for i in range(5):
        wiring.client.sendto(_channel_data(b"odd-%d" % i + b"x" * i), listener)
    assert wiring.from_clients() == []  # nothing for the engine
    got = sorted(wiring.peer.recvfrom(2048) for _ in range(5))
    assert [data for data, _ in got] == sorted(b"odd-%d" % i + b"x" * i for i in range(5))
    assert {source[:2] for _, source in got} == {wiring.at("relay")}  # from the relay socket

    wiring.peer.sendto(b"abc", wiring.at("relay"))  # 3 bytes: no padding over UDP
    assert wiring.from_peers() == []
    frame, source = wiring.client.recvfrom(2048)
    assert frame == _channel_data(b"abc") and source[:2] == listener

    assert wiring.fw._clients is not None and wiring.fw._peers is not None
    to_peer = LAYOUT.client_value.unpack(wiring.fw._clients.lookup(wiring.client_key) or b"")
    to_client = LAYOUT.peer_value.unpack(wiring.fw._peers.lookup(wiring.peer_key) or b"")
    assert to_peer[-2:] == (5, sum(len(b"odd-%d" % i) + i for i in range(5)))
    assert to_client[-2:] == (1, 3)
    counters = wiring.fw.counters()
    assert counters["native_to_peer"] == 5 and counters["native_to_client"] == 1
    assert counters["dropped_native_send_errors"] == 0


def test_everything_else_is_left_to_the_engine_unchanged(wiring: Wiring) -> None:
    listener = wiring.at("listener")
    stun = bytes.fromhex("000100002112a442") + os.urandom(12)
    sent = [stun, _channel_data(b"short", length=9), _channel_data(b"unbound", channel=0x4002), b"\x40", b""]
    for datagram in sent:
        wiring.client.sendto(datagram, listener)
    passed = wiring.from_clients()
    assert [data for data, _ in passed] == sent  # in order, byte for byte
    assert {source for _, source in passed} == {wiring.client_as_seen()}
    stranger = _udp(wiring.host)
    try:
        stranger.sendto(b"from a stranger", wiring.at("relay"))
        assert wiring.from_peers() == [(b"from a stranger", (wiring.host, stranger.getsockname()[1]))]
    finally:
        stranger.close()
    wiring.peer.settimeout(0.2)
    with pytest.raises(TimeoutError):
        wiring.peer.recvfrom(2048)  # none of it reached the peer


def test_padded_channel_data_is_relayed_without_its_padding(wiring: Wiring) -> None:
    wiring.client.sendto(_channel_data(b"abcde") + b"\0\0\0", wiring.at("listener"))
    assert wiring.from_clients() == []
    assert wiring.peer.recvfrom(2048)[0] == b"abcde"


def test_after_the_expiry_nothing_is_relayed_in_c(wiring: Wiring) -> None:
    """Expired entries hand every datagram to the engine (which drops it or sends a Data indication)."""
    wiring.write(lifetime=-1.0, permitted=30.0)
    wiring.client.sendto(_channel_data(b"late"), wiring.at("listener"))
    assert [data for data, _ in wiring.from_clients()] == [_channel_data(b"late")]
    wiring.peer.sendto(b"late too", wiring.at("relay"))
    assert [data for data, _ in wiring.from_peers()] == [b"late too"]
    wiring.peer.settimeout(0.2)
    with pytest.raises(TimeoutError):
        wiring.peer.recvfrom(2048)


def test_a_batch_is_bounded_and_says_when_the_socket_is_drained(wiring: Wiring) -> None:
    listener = wiring.at("listener")
    for i in range(native.BATCH + 6):
        wiring.client.sendto(b"stun-ish %d" % i, listener)
    time.sleep(0.05)
    first, drained = wiring.fw.from_clients(wiring.listener.fileno(), wiring.key)
    assert len(first) == native.BATCH and not drained
    second, drained = wiring.fw.from_clients(wiring.listener.fileno(), wiring.key)
    assert len(second) == 6 and drained
    assert [d for d, _ in first + second] == [b"stun-ish %d" % i for i in range(native.BATCH + 6)]


def test_the_tables_grow_reuse_deleted_slots_and_stop_at_their_bound(forwarder: native.NativeForwarder) -> None:
    table = forwarder._peers
    assert isinstance(table, native._Table)
    value = bytes(LAYOUT.peer_value.size)
    rest = bytes(LAYOUT.peer_key.size - 4)
    keys = [struct.pack("!I", i) + rest for i in range(3000)]  # past the first capacity (1024 slots)
    for key in keys:
        table.update(key, value)
    assert len(table) == 3000
    assert all(table.lookup(key) == value for key in keys)
    for key in keys[::2]:
        assert table.delete(key)
    assert not table.delete(keys[0]) and table.lookup(keys[0]) is None and len(table) == 1500
    for _ in range(5):  # delete and insert again: deleted slots are reused or swept, the others stay found
        for key in keys[::2]:
            table.update(key, value)
        for key in keys[::2]:
            table.delete(key)
    assert len(table) == 1500 and all(table.lookup(key) == value for key in keys[1::2])
    with pytest.raises(OSError, match="No space left"):
        for i in range(70_000):
            table.update(struct.pack("!I", 1 << 20 | i) + rest, value)
    assert len(table) == 65536


def test_modes_and_the_compiler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    off = native.NativeForwarder("off", tmp_path)
    off.start()
    assert not off.active and off.reason == '[edge] native_forwarder = "off"'
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    auto = native.NativeForwarder("auto", tmp_path / "auto")
    auto.start()
    assert not auto.active and auto.reason == "no C compiler (cc, gcc or clang; Debian: gcc)"
    with pytest.raises(OffloadUnavailable, match=r'native forwarder \(\[edge\] native_forwarder = "on"\): no C'):
        native.NativeForwarder("on", tmp_path / "on").start()


def test_a_library_others_could_change_is_rebuilt_not_loaded(forwarder: native.NativeForwarder,
                                                              tmp_path: Path) -> None:
    built = Path(forwarder.library)
    built.chmod(0o777)
    first = built.stat().st_ino
    again = native.build(tmp_path)
    assert again == built and built.stat().st_ino != first and not built.stat().st_mode & 0o022
    tmp_path.chmod(0o777)  # a directory others may write to: they could swap the library in
    try:
        with pytest.raises(OffloadUnavailable, match="writable by other users"):
            native.build(tmp_path)
    finally:
        tmp_path.chmod(0o700)


def test_on_fails_start_up_with_one_line_without_a_compiler(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"edge": {"native_forwarder": "on", "kernel_offload": "off"},
                                    "node": {"roles": ["edge"]}})
    done = subprocess.run([sys.executable, "-m", "edge.node.cli", "serve", "--config", str(files.path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**os.environ, "PATH": str(tmp_path / "empty")})
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.startswith("umedge:")]
    assert lines == ['umedge: cannot start: native forwarder ([edge] native_forwarder = "on"): no C compiler '
                     "(cc, gcc or clang; Debian: gcc)"], done.stderr
    assert "Traceback" not in done.stderr


def test_a_datagram_the_kernel_refuses_costs_only_itself(forwarder: native.NativeForwarder) -> None:
    """In one sendmmsg run, a datagram that cannot be sent (here an entry naming an IPv6 client behind the IPv4
    listener) is skipped and counted; the others of the run still go out and only those are counted; a peer
    datagram too large to become ChannelData for an IPv4 client is left to the engine."""
    wiring = Wiring(forwarder)
    other = _udp()
    try:
        now = time.monotonic_ns()
        bad_key = LAYOUT.peer_key.pack(wiring.ip, wiring.ip, _port(other.getsockname()[1]),
                                       _port(wiring.ports["relay"]))
        assert forwarder._peers is not None
        forwarder._peers.update(bad_key, LAYOUT.peer_value.pack(
            LAYOUT.address("2001:db8::1"), wiring.key.ip, _port(4000), _port(wiring.ports["listener"]), _port(CHANNEL),
            wiring.listener.fileno(), now + 30 * 10**9, now + 30 * 10**9, 0, 0))
        other.sendto(b"unsendable", wiring.at("relay"))
        wiring.peer.sendto(b"fine", wiring.at("relay"))
        wiring.peer.sendto(b"x" * 65507, wiring.at("relay"))  # the IPv4 maximum: 65511 as ChannelData
        passed = wiring.from_peers()
        assert [len(data) for data, _ in passed] == [65507]
        assert wiring.client.recvfrom(2048)[0] == _channel_data(b"fine")
        counters = forwarder.counters()
        assert counters["dropped_native_send_errors"] == 1 and counters["native_to_client"] == 1
        assert LAYOUT.peer_value.unpack(forwarder._peers.lookup(bad_key) or b"")[-2:] == (0, 0)  # not sent: not counted
        assert LAYOUT.peer_value.unpack(forwarder._peers.lookup(wiring.peer_key) or b"")[-2:] == (1, 4)
    finally:
        other.close()
        wiring.close()


LINK_LOCAL_SCRIPT = """
import json, socket, struct, sys, time
from pathlib import Path
from edge.offload import native
fw = native.NativeForwarder("on", Path(sys.argv[1]))
fw.start()
scope = socket.if_nametoindex("d0")
listener = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
listener.bind(("fe80::1", 0, 0, scope))
listener.setblocking(False)
client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
client.bind(("fe80::1", 0, 0, scope))
relay = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
relay.bind(("fe80::1", 0, 0, scope))
key, address = fw.bound(listener), native.ANY_FAMILY.address("fe80::1")
port = lambda sock: struct.pack("!H", sock.getsockname()[1])
far = time.monotonic_ns() + 30 * 10**9
# as if the engine had written the channel: a scoped source must still not match it
fw._clients.update(native.ANY_FAMILY.client_key.pack(address, key.ip, port(client), key.port, b"\\x40\\x01"),
                   native.ANY_FAMILY.client_value.pack(address, address, port(relay), port(relay), relay.fileno(),
                                                       far, 0, 0))
for datagram in (b"\\x00\\x01\\x00\\x00stun-ish", struct.pack("!HH", 0x4001, 3) + b"abc"):
    client.sendto(datagram, listener.getsockname())
time.sleep(0.1)
passed, _ = fw.from_clients(listener.fileno(), fw.bound(listener))
print(json.dumps({"passed": [[data.hex(), list(source)] for data, source in passed],
                  "client": list(client.getsockname()[:2])}))
fw.stop()
"""


def test_link_local_sources_always_go_to_the_engine(tmp_path: Path) -> None:
    """Entries cannot name an interface: a link-local (scoped) IPv6 source is always handed to the engine, even
    its ChannelData, with the host its own reads would give. In a namespace of the test's own, with a veth
    pair, one end holding fe80::1."""
    if os.geteuid() != 0 or not shutil.which("ip") or not any(shutil.which(n) for n in native.COMPILERS):
        why = "needs root, iproute2 and a C compiler"
        if REQUIRE_TOOLS:
            pytest.fail(why)
        pytest.skip(why)
    namespace = f"umnat-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", namespace], check=True, timeout=10)
    try:
        for command in (["link", "set", "lo", "up"], ["link", "add", "d0", "type", "veth", "peer", "name", "d1"],
                        ["link", "set", "d0", "up"], ["link", "set", "d1", "up"],
                        ["-6", "addr", "add", "fe80::1/64", "dev", "d0", "nodad"]):
            subprocess.run(["ip", "-n", namespace, *command], check=True, timeout=10)
        done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", LINK_LOCAL_SCRIPT,
                               str(tmp_path)], capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert done.returncode == 0, done.stderr
        result = json.loads(done.stdout.strip().splitlines()[-1])
        client = result["client"]
        assert client[0] == "fe80::1"
        assert [source for _, source in result["passed"]] == [client, client]  # both, ChannelData too
        assert [bytes.fromhex(data)[:2] for data, _ in result["passed"]] == [b"\x00\x01", b"\x40\x01"]
    finally:
        subprocess.run(["ip", "netns", "del", namespace], timeout=10)
