"""The edge and its mediation servers: Kamailio as registrar, SRV discovery from a test DNS server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, ServeProcess, free_port, umedge, write_config
from tests.mediation.kamailio import Kamailio
from tests.pool.redis_server import RedisServer

KEEPALIVE = 0.5


def wait_for(condition: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def mediation(extra: dict[str, object]) -> dict[str, object]:
    return {"keepalive_interval": KEEPALIVE, "timeout": 1, "expires": 120, **extra}


@pytest.fixture
def kamailio(tmp_path: Path) -> Iterator[Kamailio]:
    server = Kamailio(tmp_path / "kamailio").start()
    try:
        yield server
    finally:
        server.stop()


def test_register_on_start_and_deregister_on_clean_stop(tmp_path: Path, kamailio: Kamailio) -> None:
    store = RedisServer(tmp_path)
    store.start()
    server_uri = f"sip:127.0.0.1:{kamailio.port};transport=tcp"
    files = write_config(tmp_path, {"mediation": mediation({"servers": [server_uri]}),
                                    "pool": {"store": store.url, "heartbeat_interval": 0.5}})
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        wait_for(kamailio.contacts, 10, "the edge's contact in Kamailio's location table")
        [contact] = kamailio.contacts()
        assert f"sips:127.0.0.1:{files.port('auth', 'mras_tls_port')};transport=tls" in contact
        status = json.loads(umedge("mediation", "status", "--json", "--config", str(files.path)).stdout)
        [server] = status["servers"]
        assert server["registration"] == "registered" and server["active"] and server["keepalive_ok"]
        text = umedge("mediation", "status", "--config", str(files.path)).stdout
        assert "registration=registered" in text and "keepalive=ok" in text
        client = redis.Redis.from_url(store.url)
        wait_for(lambda: client.keys("umedge:mediation:*"), 5, "the registration state in the pool store")
        shared = json.loads(client.get(client.keys("umedge:mediation:*")[0]))
        assert shared["registration"] == "registered" and shared["address"] == server["address"]
        client.close()
        assert process.stop() == 0
        assert kamailio.contacts() == []  # de-registered on the clean stop
    finally:
        process.kill()
        store.stop()


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_digest_challenge_is_answered(tmp_path: Path, algorithm: str) -> None:
    server = Kamailio(tmp_path / "kamailio", username="avedge", password="s3cret-pass", algorithm=algorithm).start()
    files = write_config(tmp_path, {"mediation": mediation({
        "servers": [f"sip:127.0.0.1:{server.port};transport=tcp"], "username": "avedge",
        "password": "s3cret-pass"})})
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        wait_for(server.contacts, 10, "an authenticated registration")
        assert "s3cret-pass" not in process.stderr()
    finally:
        process.kill()
        server.stop()


def test_wrong_password_is_reported_not_registered(tmp_path: Path) -> None:
    server = Kamailio(tmp_path / "kamailio", username="avedge", password="right-password").start()
    files = write_config(tmp_path, {"mediation": mediation({
        "servers": [f"sip:127.0.0.1:{server.port};transport=tcp"], "username": "avedge",
        "password": "wrong-password"})})
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        wait_for(lambda: "registration at" in process.stderr(), 10, "the failed registration log line")
        assert server.contacts() == []
        assert "REGISTER answered 401" in process.stderr()
    finally:
        process.kill()
        server.stop()


def test_static_mode_sends_options_only(tmp_path: Path, kamailio: Kamailio) -> None:
    files = write_config(tmp_path, {"mediation": mediation({
        "servers": [f"sip:127.0.0.1:{kamailio.port};transport=tcp"], "mode": "static"})})
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        status_file = tmp_path / "state" / "mediation.json"
        wait_for(status_file.exists, 10, "the mediation status file")
        wait_for(lambda: json.loads(status_file.read_text())["servers"][0]["keepalive_ok"], 10, "a keepalive")
        assert kamailio.contacts() == []
    finally:
        process.kill()


class DnsServer:
    def __init__(self, directory: Path, zone: dict[str, list[list[object]]]) -> None:
        self.port = free_port()
        self.zone_path = directory / "zone.json"
        self.zone_path.write_text(json.dumps(zone))
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.mediation.dns_server", str(self.port),
                                      str(self.zone_path)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def test_srv_discovery_fails_over_and_back(tmp_path: Path) -> None:
    first = Kamailio(tmp_path / "k1").start()
    second = Kamailio(tmp_path / "k2").start()
    dns = DnsServer(tmp_path, {
        "_sipinternal._tcp.example.test": [["SRV", 10, 0, first.port, "k1.example.test", 5],
                                           ["SRV", 20, 0, second.port, "k2.example.test", 5]],
        "k1.example.test": [["A", "127.0.0.1", 5]],
        "k2.example.test": [["A", "127.0.0.1", 5]],
    })
    files = write_config(tmp_path, {"mediation": mediation({
        "domain": "example.test", "dns_servers": [f"127.0.0.1:{dns.port}"]})})
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        wait_for(first.contacts, 10, "registration at the priority-10 server")
        assert second.contacts() == []
        first.stop()
        stopped = time.monotonic()
        wait_for(second.contacts, 2 * KEEPALIVE + 2 * 1 + 1, "failover to the priority-20 server")
        assert time.monotonic() - stopped < 2 * KEEPALIVE + 2 * 1 + 1
        first.start()  # same port: the server recovers
        wait_for(first.contacts, 10, "the return to the priority-10 server")
        wait_for(lambda: second.contacts() == [], 10, "the fallback registration removed")
        assert "mediation moves from" in process.stderr()
    finally:
        process.kill()
        first.stop()
        second.stop()
        dns.stop()
