"""A mutation fuzzer against the live listeners of one node (issue 21, item 11).

Valid messages of every protocol (SIP over TCP and MTLS to the call router and
a worker, STUN/TURN over UDP, TCP and TLS, ChannelData on a live allocation,
MRAS over MTLS, the HTTPS token API, the web port) are mutated: bytes flipped,
cut, repeated, deleted, control bytes and bare line feeds inserted. Afterwards
the node must have logged nothing critical, answered no 500 (SIP) or 5xx
(HTTP), be back to its fd count, stay within an RSS bound, and still answer
a legitimate request on every listener promptly.

Short in CI (UMEDGE_FUZZ_ROUNDS, default 40 rounds of every seed); set it to
thousands for a long run.
"""

from __future__ import annotations

import os
import random
import re
import socket
import ssl
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from certs import pki
from edge import stun
from edge.stun import Attr
from edge.tokens import mint
from tests.conftest import NodeFiles, ServeProcess, write_config
from tests.worker.webauth import web_request

ROUNDS = int(os.environ.get("UMEDGE_FUZZ_ROUNDS", "40"))
SECRET = "fuzz-secret-0123456789abcdef"
API_KEY = "api-key-for-fuzz-0123456789abcdef"
RSS_GROWTH_MB = 60  # what a long run may add (buffers, caches), not a leak per message
ALARMS = re.compile(r"critical|unhandled|traceback", re.I)
JUNK = (b"\x00", b"\x7f", b"\n", b"\r", b"\xff", b"\xc3(", b"%", b"\"", b";", b"<", b">", b"\t", b"\x1b[31m")


def mutate(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        where = rng.randrange(len(data) + 1)
        operation = rng.randrange(6)
        if operation == 0 and data:
            data[min(where, len(data) - 1)] = rng.randrange(256)
        elif operation == 1:
            del data[where:]
        elif operation == 2:
            data[where:where] = rng.choice(JUNK) * rng.randint(1, 8)
        elif operation == 3 and data:
            end = min(len(data), where + rng.randint(1, 64))
            data[where:where] = data[where:end] * rng.randint(1, 20)
        elif operation == 4:
            data[where:where] = b"\nX-Fuzz: " + bytes(rng.randrange(32, 127) for _ in range(rng.randint(1, 40)))
        elif data:
            del data[where:where + rng.randint(1, 16)]
    return bytes(data)


@dataclass
class Node:
    files: NodeFiles
    process: ServeProcess
    client_tls: ssl.SSLContext   # with the pool certificate (MRAS, SIP MTLS)
    server_only_tls: ssl.SSLContext

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.proc.pid}/fd"))

    def rss_mb(self) -> float:
        with open(f"/proc/{self.process.proc.pid}/status") as status:
            return int(next(line for line in status if line.startswith("VmRSS:")).split()[1]) / 1024


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    files = write_config(tmp_path_factory.mktemp("fuzz"), {
        "node": {"roles": ["all"]}, "edge": {"auth_secrets": [SECRET], "allowed_peer_networks": ["127.0.0.0/8"]},
        "auth": {"api_keys": [API_KEY]},
        "callrouter": {"gateways": [{"address": "127.0.0.1"}], "hunt_groups": [{"pilot": "5000", "dial_plan": "dp"}],
                       "dial_plans": [{"name": "dp", "extension_length": 4}],
                       "mailboxes": [{"extension": "1000-1009", "server": "local"}]},
        "limits": {"sip_requests_per_second": 100000, "sip_burst": 100000, "stun_requests_per_second": 100000,
                   "stun_burst": 100000, "handshake_timeout": 2}})
    process = ServeProcess(files.path)
    try:
        process.wait_ready()
        pki.issue(files.certs_dir, "fuzzer", [])
        client = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
        client.check_hostname = False
        client.load_cert_chain(str(files.certs_dir / "fuzzer.crt"), str(files.certs_dir / "fuzzer.key"))
        server_only = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
        server_only.check_hostname = False
        yield Node(files, process, client, server_only)
    finally:
        process.kill()


def sip(method: str, uri: str, transport: str = "TCP", body: bytes = b"", content_type: str = "") -> bytes:
    branch = f"z9hG4bK-{random.getrandbits(32)}"
    lines = [f"{method} {uri} SIP/2.0", f"Via: SIP/2.0/{transport} 127.0.0.1:5999;branch={branch}",
             "Max-Forwards: 70", "From: <sip:gw@127.0.0.1>;tag=f1", "To: <sip:1001@127.0.0.1>",
             f"Call-ID: fuzz-{random.getrandbits(32)}@test", f"CSeq: 1 {method}", "Contact: <sip:gw@127.0.0.1:5999>"]
    if content_type:
        lines.append(f"Content-Type: {content_type}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=rtcp-mux\r\n")
MRAS = (b'<?xml version="1.0" encoding="utf-8"?><request xmlns="http://schemas.microsoft.com/2006/09/sip/mrasp" '
        b'requestID="1" version="2.0" to="sip:mrasloc.example.test@example.test" from="sip:w@example.test" '
        b'route="sip:mrasloc.example.test@example.test"><credentialsRequest credentialsRequestID="1">'
        b"<identity>sip:w@example.test</identity><location>internet</location><duration>480</duration>"
        b"</credentialsRequest></request>")


def http(method: str, path: str, body: bytes = b"", key: bool = True) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: node1\r\nContent-Type: application/json\r\n"
    if key:
        head += f"Authorization: Bearer {API_KEY}\r\n"
    return (head + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


def stream_exchange(port: int, data: bytes, context: ssl.SSLContext | None, wait: float = 0.3) -> bytes:
    """Send `data` on a fresh connection (TLS if `context`) and read what comes back within `wait` s."""
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=2)
    except OSError:
        return b""
    sock: socket.socket = raw
    try:
        if context is not None:
            sock = context.wrap_socket(raw, server_hostname="node1")
        sock.sendall(data)
        sock.settimeout(wait)
    except (OSError, ssl.SSLError):
        sock.close()
        return b""
    answer = b""
    try:
        while len(answer) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    except (OSError, ssl.SSLError):  # the wait is over, or the node closed on us: what came is the answer
        pass
    finally:
        sock.close()
    return answer


def allocate(port: int) -> socket.socket:
    """A UDP client with an allocation and a channel to a loopback peer, for ChannelData."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(5)
    token = mint(SECRET, "sip:fuzz@example.test", 600, time.time())
    key = stun.long_term_key(token.username, "example.test", token.password)
    transport = (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17))
    sock.sendto(stun.Message(stun.ALLOCATE, stun.REQUEST, None, [transport]).encode(), ("127.0.0.1", port))
    nonce = stun.decode(sock.recv(2048)).get(Attr.NONCE)
    creds = [(Attr.USERNAME, token.username.encode()), (Attr.REALM, b"example.test"), (Attr.NONCE, nonce)]
    for message in (stun.Message(stun.ALLOCATE, stun.REQUEST, None, [transport, *creds]),
                    stun.Message(stun.CHANNEL_BIND, stun.REQUEST, None, [
                        (Attr.CHANNEL_NUMBER, stun.encode_channel_number(0x4000)), *creds])):
        if message.method == stun.CHANNEL_BIND:
            message.attributes.insert(1, (Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(
                "127.0.0.1", 9, message.transaction_id)))
        sock.sendto(message.encode(key, fingerprint=True), ("127.0.0.1", port))
        assert stun.decode(sock.recv(2048)).msg_class == stun.SUCCESS
    return sock


def test_mutated_messages_on_every_listener(node: Node) -> None:
    files, port = node.files, node.files.port
    rng = random.Random(int(os.environ.get("UMEDGE_FUZZ_SEED", "21")))
    worker = int(files.values["worker"]["sip_ports"][0])  # type: ignore[index]
    router_tls = port("callrouter", "sip_tls_port")
    binding = stun.Message(stun.BINDING, stun.REQUEST).encode(fingerprint=True)
    allocate_request = stun.Message(stun.ALLOCATE, stun.REQUEST, None, [
        (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17))]).encode()
    framed = allocate_request  # STUN over TCP frames itself by its length field
    channel_data = stun.encode_channel_data(0x4000, b"\x80\x00" + bytes(170))
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setblocking(False)
    relay_client = allocate(port("edge", "turn_udp_port"))
    relay_client.setblocking(False)
    fds_before, rss_before = node.fds(), node.rss_mb()
    sip_answers: list[bytes] = []
    http_answers: list[bytes] = []
    stream_seeds: list[tuple[str, int, bytes, ssl.SSLContext | None, list[bytes] | None]] = [
        ("SIP/TCP router", port("callrouter", "sip_tcp_port"),
         sip("INVITE", "sip:5000@127.0.0.1", body=SDP, content_type="application/sdp"), None, sip_answers),
        ("SIP/MTLS router", router_tls, sip("OPTIONS", "sips:127.0.0.1", "TLS"), node.client_tls, sip_answers),
        ("SIP/TCP worker", worker,
         sip("INVITE", "sip:5000@127.0.0.1", body=SDP, content_type="application/sdp"), None, sip_answers),
        ("MRAS", port("auth", "mras_tls_port"),
         sip("SERVICE", "sip:mrasloc.example.test@example.test", "TLS", MRAS,
             "application/msrtc-media-relay-auth+xml"), node.client_tls, sip_answers),
        ("token HTTPS", port("auth", "https_port"),
         http("POST", "/v1/credentials", b'{"identity": "sip:fuzz@example.test", "ttl": 60}'),
         node.server_only_tls, http_answers),
        ("web HTTPS", port("web", "http_port"), http("POST", "/v1/pin-reset", b'{"mailbox": "1001"}'),
         node.server_only_tls, http_answers),
        ("web HTTP", port("web", "http_port"), http("GET", "/v1/status", key=False), None, http_answers),
        ("TURN/TCP", port("edge", "turn_tcp_port"), framed, None, None),
        ("TURN/TLS", port("edge", "turn_tls_port"), framed, node.server_only_tls, None),
    ]
    for _ in range(ROUNDS):
        for _name, target, seed, context, answers in stream_seeds:
            answer = stream_exchange(target, mutate(rng, seed), context, wait=0.05)
            if answers is not None:
                answers.append(answer)
        for seed in (binding, allocate_request):
            udp.sendto(mutate(rng, seed), ("127.0.0.1", port("edge", "turn_udp_port")))
        for _ in range(5):
            relay_client.sendto(mutate(rng, channel_data), ("127.0.0.1", port("edge", "turn_udp_port")))
    udp.close()
    relay_client.close()

    sip_500 = [a[:80] for a in sip_answers if re.match(rb"SIP/2\.0 500 ", a)]
    http_5xx = [a[:80] for a in http_answers if re.match(rb"HTTP/1\.[01] 5\d\d ", a)]
    assert sip_500 == [] and http_5xx == []
    log = node.process.stderr()
    assert not ALARMS.search(log), ALARMS.search(log)
    longest = max((len(line) for line in log.splitlines()), default=0)
    assert longest < 4500  # wire bytes in the log are capped

    def active_calls() -> int:
        """Worker calls a mutated INVITE set up (valid ones are answered; they wait for their ACK)."""
        status, _, body = web_request(files, "GET", "/v1/worker", token=API_KEY)  # admin, over HTTPS
        assert status == 200, body
        return int(body["active_calls"])

    # Every connection closed: the node comes back to its fds (handshake timeouts close the slow ones),
    # but for the RTP sockets of calls still waiting for their ACK.
    deadline = time.monotonic() + 10
    while node.fds() > fds_before + 3 + 2 * active_calls() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert node.fds() <= fds_before + 3 + 2 * active_calls()
    assert node.rss_mb() - rss_before < RSS_GROWTH_MB

    # And a legitimate request is still answered promptly on every listener.
    checks: list[tuple[str, Callable[[], bool]]] = [
        ("SIP/TCP", lambda: stream_exchange(port("callrouter", "sip_tcp_port"),
                                            sip("OPTIONS", "sip:127.0.0.1"), None).startswith(b"SIP/2.0 200")),
        ("SIP/MTLS", lambda: stream_exchange(router_tls, sip("OPTIONS", "sips:127.0.0.1", "TLS"),
                                             node.client_tls).startswith(b"SIP/2.0 200")),
        ("MRAS", lambda: b"SIP/2.0 200" in stream_exchange(
            port("auth", "mras_tls_port"), sip("SERVICE", "sip:mrasloc.example.test@example.test", "TLS", MRAS,
                                               "application/msrtc-media-relay-auth+xml"), node.client_tls, 1.0)),
        ("token HTTPS", lambda: stream_exchange(port("auth", "https_port"), http(
            "POST", "/v1/credentials", b'{"identity": "sip:fuzz@example.test"}'), node.server_only_tls,
            1.0).startswith(b"HTTP/1.1 200")),
        ("web", lambda: urllib.request.urlopen(f"http://127.0.0.1:{port('web', 'http_port')}/v1/status",
                                               timeout=2).status == 200),
    ]
    for name, check in checks:
        started = time.monotonic()
        assert check(), name
        assert time.monotonic() - started < 1.5, name  # prompt (a loaded CI host gets slack over 100 ms)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(2)
        probe.sendto(binding, ("127.0.0.1", port("edge", "turn_udp_port")))
        assert stun.decode(probe.recv(2048)).msg_class == stun.SUCCESS
