"""The console's sessions on a two-node Redis pool: list from either node, kill by id and by user (437 on the
client's next Refresh, the user refused until the given time), and no admin request without credentials."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aioice import turn

from edge import stun as edge_stun
from edge.stun import Attr
from edge.tokens import mint
from tests.conftest import NodeFiles, ServeProcess, umedge, write_config
from tests.pool.redis_server import RedisServer
from tests.turn.test_turn_aioice import Collector

SECRET = "console-secret-0123456789"
ADMIN_KEY = "console-admin-key-0123456789"
ALICE, BOB = "sip:alice@example.test", "sip:bob@example.test"


def code(message: edge_stun.Message) -> int | None:
    error = message.error_code()
    return error[0] if error is not None else None


class RawClient:
    """One UDP TURN client with edge's own codec, so the test sees every answer (the 437 on Refresh)."""

    def __init__(self, port: int, identity: str) -> None:
        self.port, self.sock = port, socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3)
        token = mint(SECRET, identity, 600, time.time())
        self.username, self.key = token.username, edge_stun.long_term_key(token.username, "example.test",
                                                                          token.password)
        self.nonce = b""

    def _ask(self, method: int, attrs: list[tuple[int, bytes]]) -> edge_stun.Message:
        for _ in range(2):  # once more with a fresh nonce after a 438 or the first 401
            request = edge_stun.Message(method, edge_stun.REQUEST, None, [
                *attrs, (Attr.USERNAME, self.username.encode()), (Attr.REALM, b"example.test"),
                (Attr.NONCE, self.nonce)])
            self.sock.sendto(request.encode(self.key, fingerprint=True), ("127.0.0.1", self.port))
            answer = edge_stun.decode(self.sock.recv(2048))
            if answer.msg_class == edge_stun.ERROR and code(answer) in (401, 438):
                self.nonce = answer.get(Attr.NONCE) or b""
                continue
            return answer
        return answer

    def allocate(self) -> edge_stun.Message:
        return self._ask(edge_stun.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, edge_stun.encode_requested_transport(17))])

    def refresh(self) -> edge_stun.Message:
        return self._ask(edge_stun.REFRESH, [(Attr.LIFETIME, edge_stun.encode_lifetime(600))])

    def close(self) -> None:
        self.sock.close()


class TwoNodes:
    def __init__(self, directory: Path) -> None:
        self.redis = RedisServer(directory)
        self.redis.start()
        self.nodes: dict[str, tuple[NodeFiles, ServeProcess]] = {}
        for name in ("edge1", "edge2"):
            (directory / name).mkdir()
            files = write_config(directory / name, {
                "node": {"name": name},
                "edge": {"auth_secrets": [SECRET], "max_allocations_per_user": 20},
                "web": {"admin_keys": [ADMIN_KEY]},
                "pool": {"store": self.redis.url, "heartbeat_interval": 0.3, "member_ttl": 1.5}})
            self.nodes[name] = (files, ServeProcess(files.path, "--roles", "edge,web"))
        for _, process in self.nodes.values():
            process.wait_ready()

    def files(self, name: str) -> NodeFiles:
        return self.nodes[name][0]

    def turn_port(self, name: str) -> int:
        return self.files(name).port("edge", "turn_udp_port")

    def cli(self, name: str, *args: str) -> dict[str, Any]:
        done = umedge(*args, "--json", "--config", str(self.files(name).path))
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def close(self) -> None:
        for _, process in self.nodes.values():
            process.kill()
        self.redis.stop()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    nodes = TwoNodes(tmp_path_factory.mktemp("console"))
    try:
        yield nodes
    finally:
        nodes.close()


def wait_listed(pool: TwoNodes, name: str, count: int, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        listed = pool.cli(name, "sessions", "list")
        if (len(listed["sessions"]) == count and not listed["missing"]) or time.monotonic() > deadline:
            return listed
        time.sleep(0.3)


def test_twenty_allocations_listed_from_either_node_and_a_user_killed_pool_wide(pool: TwoNodes) -> None:
    loop = asyncio.new_event_loop()

    async def allocate(port: int, identity: str) -> object:
        token = mint(SECRET, identity, 600, time.time())
        transport, _ = await turn.create_turn_endpoint(Collector, ("127.0.0.1", port), token.username,
                                                      token.password)
        return transport

    held = []
    try:
        # 9 + 9 through aioice, and one raw client per identity (to see its Refresh answered 437): 20 in all
        for index in range(18):
            identity = ALICE if index % 2 else BOB
            held.append(loop.run_until_complete(allocate(pool.turn_port("edge1" if index < 9 else "edge2"),
                                                         identity)))
        alice_raw = RawClient(pool.turn_port("edge2"), ALICE)
        bob_raw = RawClient(pool.turn_port("edge1"), BOB)
        assert alice_raw.allocate().msg_class == edge_stun.SUCCESS
        assert bob_raw.allocate().msg_class == edge_stun.SUCCESS

        for name in ("edge1", "edge2"):
            listed = wait_listed(pool, name, 20)
            sessions = listed["sessions"]
            assert len(sessions) == 20 and listed["nodes"] == ["edge1", "edge2"] and listed["missing"] == []
            assert {s["node"] for s in sessions} == {"edge1", "edge2"}
            assert sum(s["user"] == ALICE for s in sessions) == 10
            assert len({s["id"] for s in sessions}) == 20
            one = sessions[0]
            assert one["transport"] == "udp" and one["dialect"] == "rfc8656" and one["relay"]
            assert one["lifetime_left"] > 500 and one["age"] >= 0 and one["client"].startswith("127.0.0.1:")
        table = umedge("sessions", "list", "--config", str(pool.files("edge2").path)).stdout
        assert "20 allocation(s) on edge1, edge2" in table and table.count("rfc8656") == 20
        only_bob = pool.cli("edge2", "sessions", "list", "--user", BOB)["sessions"]
        assert len(only_bob) == 10 and {s["user"] for s in only_bob} == {BOB}

        # one allocation by id, from the node that does not hold it
        victim = next(s for s in pool.cli("edge1", "sessions", "list", "--user", BOB)["sessions"]
                      if s["node"] == "edge2")
        killed = pool.cli("edge1", "sessions", "kill", victim["id"])
        assert killed["killed"] == [victim["id"]]
        assert wait_listed(pool, "edge2", 19)["sessions"].__len__() == 19

        # every allocation of alice, on both nodes, within 2 s; refused for two minutes
        started = time.time()
        result = pool.cli("edge1", "sessions", "kill", "--user", ALICE, "--until", "2m")
        assert len(result["killed"]) == 10 and result["nodes"] == ["edge1", "edge2"]
        ended = [dt.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
                 for name in ("edge1", "edge2") for line in pool.nodes[name][1].stderr().splitlines()
                 if "ended allocation" in line and f"of {ALICE}" in line]
        assert len(ended) == 10 and max(ended) - started < 2.0  # both nodes, within 2 s of the command
        left = pool.cli("edge2", "sessions", "list")["sessions"]
        assert not [s for s in left if s["user"] == ALICE] and len(left) == 9
        assert code(alice_raw.refresh()) == 437  # the client learns on its next Refresh
        assert bob_raw.refresh().msg_class == edge_stun.SUCCESS  # bob untouched

        for name in ("edge1", "edge2"):  # new ones refused on both nodes (486), bob still welcome
            again = RawClient(pool.turn_port(name), ALICE)
            assert code(again.allocate()) == 486
            again.close()
        fine = RawClient(pool.turn_port("edge2"), "sip:carol@example.test")
        assert fine.allocate().msg_class == edge_stun.SUCCESS
        fine.close()

        # the kill is logged with who did it (the node's own pool-CA certificate, the operator's login)
        log = pool.nodes["edge1"][1].stderr() + pool.nodes["edge2"][1].stderr()
        assert "admin: cert:edge1@admin (operator " in log and "ended allocation" in log
        assert "refused new allocations for sip:alice@example.test until" in log

        # lifting the refusal (--until 0) lets alice back in
        pool.cli("edge2", "sessions", "kill", "--user", ALICE, "--until", "0")
        back = RawClient(pool.turn_port("edge1"), ALICE)
        assert back.allocate().msg_class == edge_stun.SUCCESS
        back.close()
        alice_raw.close()
        bob_raw.close()
    finally:
        async def release() -> None:
            for transport in held:
                transport.close()  # type: ignore[attr-defined]
            await asyncio.sleep(0.1)

        loop.run_until_complete(release())
        loop.close()


def _request(url: str, headers: dict[str, str] | None = None, cafile: Path | None = None) -> tuple[int, Any]:
    context = None
    if cafile is not None:
        context = ssl.create_default_context(cafile=str(cafile))
        context.check_hostname = False
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), context=context,
                                    timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_admin_endpoint_refuses_without_credentials(pool: TwoNodes) -> None:
    files = pool.files("edge1")
    port, ca = files.port("web", "http_port"), files.certs_dir / "ca.crt"
    status, body = _request(f"https://127.0.0.1:{port}/v1/admin/sessions", cafile=ca)
    assert status == 401 and "authentication required" in body["error"]
    status, body = _request(f"https://127.0.0.1:{port}/v1/admin/sessions",
                            {"Authorization": "Bearer not-the-admin-key-at-all"}, ca)
    assert status == 403
    status, body = _request(f"http://127.0.0.1:{port}/v1/admin/sessions", {"Authorization": f"Bearer {ADMIN_KEY}"})
    assert status == 403 and "HTTPS" in body["error"]
    status, body = _request(f"https://127.0.0.1:{port}/v1/admin/whoami", {"Authorization": f"Bearer {ADMIN_KEY}"},
                            ca)
    assert status == 200 and body["requester"].startswith("apikey:key-")
    # an admin key from elsewhere: the CLI with --key-file and only the CA, no node certificate
    key_file = files.path.parent / "admin.key"
    key_file.write_text(ADMIN_KEY)
    done = umedge("sessions", "list", "--json", "--config", str(files.path), "--key-file", str(key_file))
    assert done.returncode == 0, done.stderr
    wrong = files.path.parent / "wrong.key"
    wrong.write_text("wrong-admin-key-0123456789")
    done = umedge("sessions", "list", "--config", str(files.path), "--key-file", str(wrong))
    assert done.returncode == 1 and "403" in done.stderr


def test_with_the_pool_redis_down_a_node_still_answers_for_itself(pool: TwoNodes) -> None:
    held = RawClient(pool.turn_port("edge1"), "sip:dora@example.test")
    assert held.allocate().msg_class == edge_stun.SUCCESS
    pool.redis.stop()
    try:
        listed = pool.cli("edge1", "sessions", "list", "--user", "sip:dora@example.test")
        assert listed["nodes"] == ["edge1"] and "pool not reachable" in listed["degraded"]  # and says so
        assert [s["user"] for s in listed["sessions"]] == ["sip:dora@example.test"]
        assert pool.cli("edge1", "sessions", "kill", listed["sessions"][0]["id"])["killed"] == \
            [listed["sessions"][0]["id"]]
        assert code(held.refresh()) == 437
    finally:
        held.close()
        pool.redis.start()


@pytest.mark.parametrize("store", ["redis", "memory"])
def test_relay_processes_of_edge_workers_answer_the_console_and_refuse_a_killed_user(tmp_path: Path,
                                                                                     store: str) -> None:
    """[edge] workers = 2: the kernel spreads clients over two processes by source port; both list their
    allocations, end a killed user's, and refuse the user's new ones (each a process of its own). On a
    Redis pool the relay process answers over the pool's channel; without one, through its pipes."""
    redis = RedisServer(tmp_path)
    if store == "redis":
        redis.start()
    (tmp_path / "solo").mkdir()
    files = write_config(tmp_path / "solo", {
        "node": {"name": "solo"}, "edge": {"auth_secrets": [SECRET], "workers": 2, "max_allocations_per_user": 50},
        "web": {"admin_keys": [ADMIN_KEY]},
        "pool": {"store": redis.url if store == "redis" else "memory", "heartbeat_interval": 0.3}})
    process = ServeProcess(files.path, "--roles", "edge,web")
    clients: list[RawClient] = []

    def sessions() -> dict[str, Any]:
        done = umedge("sessions", "list", "--json", "--config", str(files.path))
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)  # type: ignore[no-any-return]

    try:
        process.wait_ready()
        port = files.port("edge", "turn_udp_port")
        listed: dict[str, Any] = {}
        for _ in range(40):  # until both processes hold some (each new source port is hashed anew)
            client = RawClient(port, ALICE)
            clients.append(client)
            assert client.allocate().msg_class == edge_stun.SUCCESS
            if len(clients) >= 6:
                listed = sessions()
                if {s["node"] for s in listed["sessions"]} == {"solo", "solo/relay1"}:
                    break
        assert listed["nodes"] == ["solo", "solo/relay1"] and len(listed["sessions"]) == len(clients), listed
        result = umedge("sessions", "kill", "--user", ALICE, "--until", "2m", "--json", "--config", str(files.path))
        assert result.returncode == 0, result.stderr
        assert len(json.loads(result.stdout)["killed"]) == len(clients)
        assert all(code(client.refresh()) == 437 for client in clients)
        for _ in range(10):  # from new source ports: both processes refuse
            again = RawClient(port, ALICE)
            assert code(again.allocate()) == 486
            again.close()
        assert sessions()["sessions"] == []
    finally:
        for client in clients:
            client.close()
        process.kill()
        if store == "redis":
            redis.stop()
