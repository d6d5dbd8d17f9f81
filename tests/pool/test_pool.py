"""Three edge nodes on loopback sharing a real redis-server: membership, pool-wide quota, degrade."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import ssl
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from aioice import stun, turn

from edge import stun as edge_stun
from edge.stun import Attr
from edge.tokens import mint
from tests.conftest import NodeFiles, ServeProcess, write_config
from tests.pool.redis_server import RedisServer
from tests.turn.test_turn_aioice import Collector

SECRET = "pool-secret-0123456789"
API_KEY = "pool-api-key-0123456789"
HEARTBEAT, TTL = 0.3, 1.5


class Pool:
    def __init__(self, directory: Path) -> None:
        self.redis = RedisServer(directory)
        self.redis.start()
        self.nodes: dict[str, tuple[NodeFiles, ServeProcess]] = {}
        for index, extra in ((1, {}), (2, {}), (3, {"max_allocations": 1})):
            name = f"edge{index}"
            files = write_config(directory / name if (directory / name).mkdir() is None else directory, {
                "node": {"name": name},
                "edge": {"auth_secrets": [SECRET], "max_allocations_per_user": 10, **extra},
                "auth": {"api_keys": [API_KEY]},
                "pool": {"store": self.redis.url, "heartbeat_interval": HEARTBEAT, "member_ttl": TTL}})
            self.nodes[name] = (files, ServeProcess(files.path, "--roles", "edge"))
        for _, process in self.nodes.values():
            process.wait_ready()

    def port(self, name: str) -> int:
        return self.nodes[name][0].port("edge", "turn_udp_port")

    def members(self) -> set[str]:
        client = redis.Redis.from_url(self.redis.url)
        try:
            return {key.decode().rsplit(":", 1)[1] for key in client.keys("umedge:member:*")}
        finally:
            client.close()

    def wait_members(self, expected: set[str], timeout: float = 5) -> set[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.members() != expected:
            time.sleep(0.1)
        return self.members()

    def token_relays(self, name: str) -> list[int]:
        """The UDP relay ports a token from `name`'s HTTPS API names, in the order given."""
        files, _ = self.nodes[name]
        context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
        context.check_hostname = False
        request = urllib.request.Request(
            f"https://127.0.0.1:{files.port('auth', 'https_port')}/v1/credentials",
            data=json.dumps({"identity": "sip:alice@example.test", "ttl": 60}).encode(),
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, context=context, timeout=5).read())
        return [int(uri.split(":")[2].split("?")[0]) for uri in answer["uris"] if uri.endswith("transport=udp")]

    def close(self) -> None:
        for _, process in self.nodes.values():
            process.kill()
        self.redis.stop()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    instance = Pool(tmp_path_factory.mktemp("pool"))
    try:
        yield instance
    finally:
        instance.close()


async def try_allocate(port: int, identity: str) -> tuple[object | None, int | None, object]:
    token = mint(SECRET, identity, 600, time.time())
    try:
        transport, _ = await turn.create_turn_endpoint(Collector, ("127.0.0.1", port), token.username,
                                                      token.password)
        return transport, None, None
    except stun.TransactionFailed as error:
        return None, error.response.attributes["ERROR-CODE"][0], error.response.attributes.get("ALTERNATE-SERVER")


def test_every_node_is_a_member(pool: Pool) -> None:
    assert pool.wait_members({"edge1", "edge2", "edge3"}) == {"edge1", "edge2", "edge3"}


def test_every_token_response_lists_every_live_relay(pool: Pool) -> None:
    everyone = {pool.port(name) for name in ("edge1", "edge2", "edge3")}
    for name in ("edge1", "edge2", "edge3"):
        deadline = time.monotonic() + 5
        while set(pool.token_relays(name)) != everyone and time.monotonic() < deadline:
            time.sleep(0.1)
        assert set(pool.token_relays(name)) == everyone


def test_per_user_quota_holds_across_the_pool(pool: Pool) -> None:
    async def scenario() -> list[int | None]:
        held, codes = [], []
        for attempt in range(20):  # alternate between two nodes: each alone would allow 10
            transport, code, _ = await try_allocate(pool.port("edge1" if attempt % 2 else "edge2"),
                                                    "sip:roamer@example.test")
            codes.append(code)
            if transport is not None:
                held.append(transport)
        for transport in held:
            transport.close()  # type: ignore[attr-defined]
        await asyncio.sleep(0.3)
        return codes

    codes = asyncio.run(scenario())
    assert codes.count(None) == 10 and codes.count(486) == 10
    assert codes[:10] == [None] * 10


def raw_allocate(port: int, identity: str) -> edge_stun.Message:
    """An Allocate with edge's own codec, so the test sees every attribute of the answer."""
    token = mint(SECRET, identity, 600, time.time())
    transport_attr = (Attr.REQUESTED_TRANSPORT, edge_stun.encode_requested_transport(17))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(edge_stun.Message(edge_stun.ALLOCATE, edge_stun.REQUEST, None, [transport_attr]).encode(),
                    ("127.0.0.1", port))
        challenge = edge_stun.decode(sock.recv(2048))
        request = edge_stun.Message(edge_stun.ALLOCATE, edge_stun.REQUEST, None, [
            transport_attr, (Attr.USERNAME, token.username.encode()), (Attr.REALM, b"example.test"),
            (Attr.NONCE, challenge.get(Attr.NONCE))])
        key = edge_stun.long_term_key(token.username, "example.test", token.password)
        sock.sendto(request.encode(key, fingerprint=True), ("127.0.0.1", port))
        return edge_stun.decode(sock.recv(2048))


def test_full_node_redirects_to_the_least_loaded_live_peer(pool: Pool) -> None:
    first = raw_allocate(pool.port("edge3"), "sip:first@example.test")
    assert first.msg_class == edge_stun.SUCCESS
    second = raw_allocate(pool.port("edge3"), "sip:second@example.test")
    assert second.error_code()[0] == 300
    alternate = edge_stun.decode_address(second.get(Attr.ALTERNATE_SERVER))
    assert alternate in {("127.0.0.1", pool.port("edge1")), ("127.0.0.1", pool.port("edge2"))}


def test_redis_outage_degrades_and_recovers_without_a_crash(pool: Pool) -> None:
    pool.redis.stop()
    time.sleep(HEARTBEAT * 4)
    response = raw_allocate(pool.port("edge1"), "sip:outage@example.test")
    assert response.msg_class == edge_stun.SUCCESS  # served from local state
    files, process = pool.nodes["edge1"]
    assert "pool store unreachable" in process.stderr() and "degraded" in process.stderr()
    pool.redis.start()
    assert pool.wait_members({"edge1", "edge2", "edge3"}) == {"edge1", "edge2", "edge3"}
    deadline = time.monotonic() + 5
    while "rejoined the pool" not in process.stderr() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "rejoined the pool" in process.stderr()
    assert all(p.proc.poll() is None for _, p in pool.nodes.values())


def test_a_killed_node_leaves_within_the_ttl(pool: Pool) -> None:
    _, process = pool.nodes["edge2"]
    process.proc.send_signal(signal.SIGKILL)
    process.proc.wait()
    started = time.monotonic()
    assert pool.wait_members({"edge1", "edge3"}, timeout=TTL + 2) == {"edge1", "edge3"}
    assert time.monotonic() - started <= TTL + 1
    time.sleep(HEARTBEAT * 2)  # the survivors' next heartbeats read the new member list
    assert set(pool.token_relays("edge1")) == {pool.port("edge1"), pool.port("edge3")}
