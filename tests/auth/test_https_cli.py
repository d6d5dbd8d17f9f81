"""The HTTPS token API and `umedge token issue` against the real TURN server; expiry, rotation, audit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from aioice import stun

from tests.auth.conftest import (
    API_KEY,
    OLD_SECRET,
    SECRET,
    EdgeNode,
    allocate,
    allocate_at,
    https_connection,
    https_post,
)
from tests.conftest import ServeProcess, umedge, write_config


def assert_401(edge: EdgeNode, username: str, password: str) -> None:
    with pytest.raises(stun.TransactionFailed) as failed:
        allocate(edge, username, password)
    assert failed.value.response.attributes["ERROR-CODE"][0] == 401


def expected_uris(edge: EdgeNode) -> list[str]:
    udp, tls = edge.port("edge", "turn_udp_port"), edge.port("edge", "turn_tls_port")
    return [f"turn:127.0.0.1:{udp}?transport=udp", f"turn:127.0.0.1:{udp}?transport=tcp",
            f"turns:127.0.0.1:{tls}?transport=tcp"]


def test_https_with_api_key_allocates(edge: EdgeNode) -> None:
    status, headers, body = https_post(edge, {"identity": "sip:bob@example.test", "ttl": 600})
    assert status == 200 and headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-store"
    assert set(body) == {"username", "password", "ttl", "uris"}
    assert body["ttl"] == 600 and body["username"].endswith(":sip:bob@example.test")
    assert body["uris"] == expected_uris(edge)
    assert allocate(edge, body["username"], body["password"])[0] == "127.0.0.1"
    log = edge.process.stderr()
    assert body["password"] not in log and API_KEY not in log
    assert "token issued identity=sip:bob@example.test requester=apikey:key-" in log and "path=https" in log


def test_https_with_client_certificate_and_keep_alive(edge: EdgeNode) -> None:
    connection = https_connection(edge, client="client1")
    tokens = []
    try:
        for ttl in (None, 10**9, 30):  # absent and over the cap both get max_token_lifetime (60 min)
            body = {"identity": "sip:carol@example.org"} | ({} if ttl is None else {"ttl": ttl})
            connection.request("POST", "/v1/credentials", json.dumps(body), {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200
            tokens.append(json.loads(response.read()))
    finally:
        connection.close()
    assert [t["ttl"] for t in tokens] == [3600, 3600, 30]
    assert allocate(edge, tokens[2]["username"], tokens[2]["password"], transport="tcp")[0] == "127.0.0.1"
    assert "requester=cert:client1@127.0.0.1:" in edge.process.stderr()


@pytest.mark.parametrize("kwargs, status, field", [
    ({"key": None}, 401, None),
    ({"key": "not-a-configured-key-000000000"}, 403, None),
    ({"key": None, "headers": {"Authorization": "Basic dXNlcjpwYXNz"}}, 401, None),
    ({"raw": b"{not json"}, 400, "body"),
    ({"raw": b"[1, 2]"}, 400, "body"),
    ({"body": {"identity": "sip:a@example.test", "ttl": "3600"}}, 400, "ttl"),
    ({"body": {"identity": "sip:a@example.test", "ttl": -5}}, 400, "ttl"),
    ({"body": {"identity": "sip:a@example.test", "ttl": True}}, 400, "ttl"),
    ({"body": {"ttl": 60}}, 400, "identity"),
    ({"body": {"identity": "alice"}}, 400, "identity"),
    ({"body": {"identity": "sip:a@example.test", "tll": 60}}, 400, "tll"),
    ({"body": {"identity": "sip:a@elsewhere.test"}}, 403, "identity"),
    ({"raw": b"x" * 9000}, 413, "body"),
    ({"raw": b"identity=sip:a@example.test", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
     415, "body"),
])
def test_https_errors_are_json(edge: EdgeNode, kwargs: dict, status: int, field: str | None) -> None:
    kwargs = {"body": {"identity": "sip:a@example.test"}} | kwargs
    got, headers, body = https_post(edge, **kwargs)
    assert got == status and headers["content-type"] == "application/json"
    assert isinstance(body["error"], str) and body["error"]
    assert body.get("field") == field
    if status == 401:
        assert headers["www-authenticate"].startswith("Bearer")


def test_https_health_and_wrong_method(edge: EdgeNode) -> None:
    connection = https_connection(edge)
    try:
        connection.request("GET", "/healthz")
        assert json.loads(connection.getresponse().read()) == {"status": "ok", "node": "node1"}
        connection.request("GET", "/v1/credentials")
        response = connection.getresponse()
        assert response.status == 405 and "error" in json.loads(response.read())
    finally:
        connection.close()


def test_expired_token_gets_401(edge: EdgeNode) -> None:
    status, _, body = https_post(edge, {"identity": "sip:dave@example.test", "ttl": 1})
    assert status == 200
    expiry = int(body["username"].split(":", 1)[0])
    time.sleep(max(0.0, expiry + 1.05 - time.time()))
    assert_401(edge, body["username"], body["password"])


def test_cli_token_allocates_and_is_audited(edge: EdgeNode) -> None:
    result = umedge("token", "issue", "--identity", "sip:erin@example.test", "--ttl", "120",
                    "--config", str(edge.files.path))
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["ttl"] == 120 and body["uris"] == expected_uris(edge)
    assert allocate(edge, body["username"], body["password"])[0] == "127.0.0.1"
    assert "token issued identity=sip:erin@example.test requester=cli:" in result.stderr
    assert "path=cli" in result.stderr and body["password"] not in result.stderr
    altered = body["username"].replace("erin", "mallory")
    assert_401(edge, altered, body["password"])


@pytest.mark.parametrize("args, message", [
    (["--identity", "sip:erin@elsewhere.test"], "not served by this node"),
    (["--identity", "erin"], "SIP URI"),
    (["--identity", "sip:erin@example.test", "--ttl", "0"], "positive"),
])
def test_cli_refusals(edge: EdgeNode, args: list[str], message: str) -> None:
    result = umedge("token", "issue", *args, "--config", str(edge.files.path))
    assert result.returncode == 2 and message in result.stderr and result.stdout == ""


def test_rotated_out_secret_works_while_listed_then_stops(edge: EdgeNode, tmp_path: Path) -> None:
    # Before the rotation the pool signed with OLD_SECRET; tokens from then are still around.
    (tmp_path / "before").mkdir()
    before = write_config(tmp_path / "before", {"edge": {"auth_secrets": [OLD_SECRET]}})
    result = umedge("token", "issue", "--identity", "sip:frank@example.test", "--config", str(before.path))
    old = json.loads(result.stdout)
    # The running edge lists [SECRET, OLD_SECRET]: SECRET signs, the old token still allocates.
    assert allocate(edge, old["username"], old["password"])[0] == "127.0.0.1"
    # Once OLD_SECRET is removed from the list, the same token gets 401.
    (tmp_path / "after").mkdir()
    after = write_config(tmp_path / "after", {"edge": {"auth_secrets": [SECRET]}})
    process = ServeProcess(after.path, "--roles", "edge")
    try:
        process.wait_ready()
        with pytest.raises(stun.TransactionFailed) as failed:
            allocate_at(after.port("edge", "turn_udp_port"), old["username"], old["password"])
        assert failed.value.response.attributes["ERROR-CODE"][0] == 401
    finally:
        assert process.stop() == 0
        process.kill()


def test_api_keys_are_never_shown_in_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[auth]\napi_keys = ["short-key"]\nmax_token_lifetime = 0\n')
    result = umedge("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "[auth].api_keys: <secret not shown>" in result.stderr and "short-key" not in result.stderr
    assert "[auth].max_token_lifetime: 0" in result.stderr
