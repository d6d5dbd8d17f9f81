"""aioice's TURN client against `umedge serve --roles edge` over UDP, TCP and TLS."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aioice import stun, turn

from edge.tokens import mint
from tests.conftest import NodeFiles, ServeProcess, write_config

SECRET = "turn-test-secret-0123456789"
OLD_SECRET = "rotated-out-secret-9876543210"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFiles]:
    files = write_config(tmp_path_factory.mktemp("edge"), {"edge": {
        "auth_secrets": [SECRET, OLD_SECRET], "allowed_peer_networks": ["127.0.0.0/8"],
        "max_allocations_per_user": 10}})
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        yield files
    finally:
        assert process.stop() == 0
        process.kill()


class Collector(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data, addr)  # type: ignore[attr-defined]


def tls_context(files: NodeFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
    context.check_hostname = False  # aioice connects by IP; the pool CA check still applies
    return context


async def relay_round_trip(files: NodeFiles, transport: str, username: str, password: str,
                           count: int = 20) -> tuple[tuple[str, int], list[bytes]]:
    loop = asyncio.get_running_loop()
    echo_transport, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    peer = echo_transport.get_extra_info("sockname")
    port = files.port("edge", "turn_tls_port" if transport == "tls" else "turn_udp_port")
    turn_transport, collector = await turn.create_turn_endpoint(
        Collector, ("127.0.0.1", port), username, password,
        ssl=tls_context(files) if transport == "tls" else False,
        transport="tcp" if transport in ("tcp", "tls") else "udp")
    try:
        relayed = turn_transport.get_extra_info("sockname")
        for index in range(count):
            turn_transport.sendto(f"packet {index}".encode(), peer)
        replies = [await asyncio.wait_for(collector.received.get(), 5) for _ in range(count)]
        assert all(addr == peer for _, addr in replies)
        return relayed, sorted(data for data, _ in replies)
    finally:
        turn_transport.close()
        echo_transport.close()
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("transport", ["udp", "tcp", "tls"])
def test_aioice_allocates_and_relays(edge: NodeFiles, transport: str) -> None:
    token = mint(SECRET, f"sip:alice-{transport}@example.test", 600, time.time())
    relayed, replies = asyncio.run(relay_round_trip(edge, transport, token.username, token.password))
    assert relayed[0] == "127.0.0.1" and 50000 <= relayed[1] <= 59999
    assert replies == sorted(f"echo:packet {i}".encode() for i in range(20))


def test_rotated_secret_still_validates(edge: NodeFiles) -> None:
    token = mint(OLD_SECRET, "sip:bob@example.test", 600, time.time())
    _, replies = asyncio.run(relay_round_trip(edge, "udp", token.username, token.password, count=3))
    assert len(replies) == 3


@pytest.mark.parametrize("case", ["wrong secret", "expired", "altered username"])
def test_bad_tokens_get_401(edge: NodeFiles, case: str) -> None:
    now = time.time()
    token = mint(SECRET, "sip:carol@example.test", 600, now)
    username, password = token.username, token.password
    if case == "wrong secret":
        password = mint("not-the-secret-0123456789", "sip:carol@example.test", 600, now).password
    elif case == "expired":
        expired = mint(SECRET, "sip:carol@example.test", 600, now - 3600)
        username, password = expired.username, expired.password
    else:
        username = username.replace("carol", "mallory")
    with pytest.raises(stun.TransactionFailed) as failed:
        asyncio.run(relay_round_trip(edge, "udp", username, password, count=1))
    assert failed.value.response.attributes["ERROR-CODE"][0] == 401


def test_user_quota_gives_486_from_the_11th(edge: NodeFiles) -> None:
    async def scenario() -> list[int | None]:
        token = mint(SECRET, "sip:quota@example.test", 600, time.time())
        outcomes: list[int | None] = []
        held = []
        port = edge.port("edge", "turn_udp_port")
        for _ in range(20):
            try:
                transport, _ = await turn.create_turn_endpoint(
                    Collector, ("127.0.0.1", port), token.username, token.password)
                held.append(transport)
                outcomes.append(None)
            except stun.TransactionFailed as error:
                outcomes.append(error.response.attributes["ERROR-CODE"][0])
        for transport in held:
            transport.close()
        await asyncio.sleep(0.2)
        return outcomes

    outcomes = asyncio.run(scenario())
    assert outcomes[:10] == [None] * 10
    assert outcomes[10:] == [486] * 10


def test_peer_on_loopback_is_refused_without_the_allow_entry(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"edge": {"auth_secrets": [SECRET]}})
    process = ServeProcess(files.path, "--roles", "edge")

    async def bind_to_loopback_peer() -> int:
        token = mint(SECRET, "sip:dave@example.test", 600, time.time())
        transport, _ = await turn.create_turn_endpoint(
            Collector, ("127.0.0.1", files.port("edge", "turn_udp_port")), token.username, token.password)
        inner = transport._TurnTransport__inner_protocol  # aioice keeps channel_bind on its protocol
        try:
            await inner.channel_bind(0x4000, ("127.0.0.1", 9))
        except stun.TransactionFailed as error:
            return error.response.attributes["ERROR-CODE"][0]
        finally:
            transport.close()
            await asyncio.sleep(0.1)
        return 0

    try:
        process.wait_ready()
        assert asyncio.run(bind_to_loopback_peer()) == 403
        assert process.stop() == 0
    finally:
        process.kill()
