"""UM web services per mailbox (issue 14 item 3): a web token (JWT from `umedge token issue --web`) acts on
its own mailbox and scopes only; play-on-phone for a token goes through the configured outbound gateway
only, to numbers its dial plan allows, at most [worker] play_on_phone_per_hour times an hour; the live
calls (GET /v1/worker) are for admins over HTTPS. All against a real `umedge serve`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import NodeFiles, ServeProcess, umedge, write_config
from tests.support import free_port
from tests.worker.caller import sine_payloads
from tests.worker.test_secured_hold_web import Gateway
from tests.worker.webauth import admin_token, state_dir, web_request
from um import webtokens
from um.sip.message import Request
from um.worker.store import Message, VoicemailStore

API_KEY = "web-tokens-api-key-0123456789abcdef"
PLANS = {
    "hunt_groups": [{"pilot": "5000", "dial_plan": "default"}],
    "dial_plans": [{"name": "default", "extension_length": 4, "access_numbers": ["5001"],
                    "allowed_numbers": ["1[0-9]{3}", "[+]1555[0-9]{7}"]}],
    "mailboxes": [{"extension": "1000-1009", "server": "local", "dial_plan": "default"}],
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeFiles, ServeProcess, int]]:
    gateway = free_port()
    files = write_config(tmp_path_factory.mktemp("webtokens"), {
        "callrouter": PLANS, "auth": {"api_keys": [API_KEY]},
        "worker": {"rtp_port_min": 47000, "rtp_port_max": 47999, "outbound_gateway": f"127.0.0.1:{gateway}"}})
    process = ServeProcess(files.path, "--roles", "callrouter,mailbox,worker,web")
    try:
        process.wait_ready()
        yield files, process, gateway
    finally:
        process.kill()


def message_of(files: NodeFiles, mailbox: str) -> Message:
    recording = VoicemailStore(state_dir(files)).start(mailbox, "PCMU", caller="sip:5550199@gw")
    recording.write(b"".join(sine_payloads(0.6, seed=3)))
    return recording.commit("bye")


def cli_token(files: NodeFiles, mailbox: str, scope: str, *extra: str) -> str:
    out = umedge("token", "issue", "--web", "--mailbox", mailbox, "--scope", scope, *extra,
                 "--config", str(files.path))
    assert out.returncode == 0, out.stderr
    issued = json.loads(out.stdout)
    assert issued["mailbox"] == mailbox and issued["scope"] == scope.replace(",", " ")
    return str(issued["token"])


def test_cli_issues_a_signed_token_with_a_0600_secret(node: tuple[NodeFiles, ServeProcess, int]) -> None:
    files, _, _ = node
    token = cli_token(files, "1001", "play,pin-reset", "--ttl", "120")
    secret = webtokens.secret_path(state_dir(files))
    assert secret.stat().st_mode & 0o777 == 0o600
    grant = webtokens.WebTokens(state_dir(files)).verify(token, "test")
    assert grant.mailbox == "1001" and grant.scopes == {"play", "pin-reset"} and not grant.admin
    bad = umedge("token", "issue", "--web", "--scope", "play", "--config", str(files.path))
    assert bad.returncode == 2 and "mailbox" in bad.stderr
    bad = umedge("token", "issue", "--web", "--mailbox", "1001", "--scope", "everything", "--config",
                 str(files.path))
    assert bad.returncode == 2 and "unknown scope" in bad.stderr


def test_a_mailbox_token_acts_on_its_own_mailbox_only(node: tuple[NodeFiles, ServeProcess, int]) -> None:
    files, process, _ = node
    token = cli_token(files, "1001", "play,pin-reset,voicemail")
    own, other = message_of(files, "1001"), message_of(files, "1002")

    assert web_request(files, "POST", "/v1/pin-reset", {"mailbox": "1001", "pin": "246813"}, token)[0] == 200
    status, _, body = web_request(files, "POST", "/v1/pin-reset", {"mailbox": "1002"}, token)
    assert status == 403 and body["rule"] == "mailbox", body
    status, _, body = web_request(files, "GET", "/v1/voicemail?mailbox=1002", token=token)
    assert status == 403 and body["rule"] == "mailbox"
    status, _, body = web_request(files, "GET", "/v1/voicemail", token=token)  # its own list
    assert status == 200 and [m["id"] for m in body] == [own.id]
    status, _, body = web_request(files, "POST", "/v1/play-on-phone", {"number": "1005", "message": other.id},
                                  token)
    assert status == 403 and body["rule"] == "mailbox"

    # Scopes: a voicemail-only token cannot reset the PIN or read the live calls.
    reader = webtokens.issue(state_dir(files), "1001", "voicemail")[0]
    status, _, body = web_request(files, "POST", "/v1/pin-reset", {"mailbox": "1001"}, reader)
    assert status == 403 and body["rule"] == "scope"
    # Tokens the node did not sign, or that expired, are refused.
    expired = webtokens.issue(state_dir(files), "1001", "play", ttl=60, now=time.time() - 3600)[0]
    assert web_request(files, "POST", "/v1/pin-reset", {"mailbox": "1001"}, expired)[0] == 401
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert web_request(files, "POST", "/v1/pin-reset", {"mailbox": "1001"}, forged)[0] == 403
    # An API key of [auth] api_keys stays admin: any mailbox.
    assert web_request(files, "POST", "/v1/pin-reset", {"mailbox": "1002", "pin": "975318"}, API_KEY)[0] == 200
    log = process.stderr()
    assert "Traceback" not in log and "reset by jwt:1001@" in log


def test_play_on_phone_toll_fraud_rules(node: tuple[NodeFiles, ServeProcess, int]) -> None:
    files, process, gateway_port = node
    token = cli_token(files, "1004", "play")
    message = message_of(files, "1004")

    def play(body: dict[str, Any]) -> tuple[int, Any]:
        status, _, answer = web_request(files, "POST", "/v1/play-on-phone", {"message": message.id, **body}, token)
        return status, answer

    status, body = play({"number": "+15550142", "gateway": "127.0.0.1:5060"})  # no gateway of its own
    assert status == 403 and body["rule"] == "gateway"
    for number in ("+442071234567", "900", "10011", "+1555014299"):  # outside the dial plan's rules
        status, body = play({"number": number})
        assert status == 403 and body["rule"] == "allowed_numbers" and "default" in body["error"], (number, body)

    async def through_the_outbound_gateway() -> tuple[int, Any, list[Request]]:
        loop = asyncio.get_running_loop()
        rtp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        invites: list[Request] = []
        server = await loop.create_server(lambda: Gateway(rtp.get_extra_info("sockname")[1], invites),
                                          "127.0.0.1", gateway_port)
        try:
            status, body = await loop.run_in_executor(None, play, {"number": "+15551230142", "wait": True})
        finally:
            server.close()
            rtp.close()
        return status, body, invites

    status, body, invites = asyncio.run(through_the_outbound_gateway())
    assert status == 200 and body["played"] is True and body["gateway"] == f"127.0.0.1:{gateway_port}", body
    assert invites[0].uri.startswith(f"sip:+15551230142@127.0.0.1:{gateway_port}")
    assert "play-on-phone: jwt:1004@" in process.stderr()


def test_the_eleventh_play_on_phone_in_an_hour_is_429(node: tuple[NodeFiles, ServeProcess, int]) -> None:
    files, process, _ = node
    token = webtokens.issue(state_dir(files), "1006", "play")[0]
    message = message_of(files, "1006")
    # Refusals do not count; ten calls do (nobody answers at the outbound gateway: they fail in the log).
    assert web_request(files, "POST", "/v1/play-on-phone", {"number": "+4420", "message": message.id},
                       token)[0] == 403
    for _ in range(10):
        status, _, body = web_request(files, "POST", "/v1/play-on-phone", {"number": "1000", "message": message.id},
                                      token)
        assert status == 202 and body["status"] == "calling", body
    status, headers, body = web_request(files, "POST", "/v1/play-on-phone",
                                        {"number": "1000", "message": message.id}, token)
    assert status == 429 and body["rule"] == "play_on_phone_per_hour", body
    assert 3500 <= int(headers["Retry-After"]) <= 3600 and body["retry_after"] == int(headers["Retry-After"])
    # Per mailbox: an admin asking for this mailbox is held to the same count, another mailbox is not.
    assert web_request(files, "POST", "/v1/play-on-phone", {"number": "1000", "message": message.id},
                       API_KEY)[0] == 429
    other = message_of(files, "1007")
    assert web_request(files, "POST", "/v1/play-on-phone", {"number": "1000", "message": other.id},
                       API_KEY)[0] == 202
    assert "Traceback" not in process.stderr()


def test_live_calls_need_the_admin_scope_over_https(node: tuple[NodeFiles, ServeProcess, int]) -> None:
    files, _, _ = node
    admin = admin_token(files)
    status, headers, body = web_request(files, "GET", "/v1/worker")
    assert status == 401 and "Bearer" in headers["WWW-Authenticate"], body
    mailbox = webtokens.issue(state_dir(files), "1001", "play,pin-reset,voicemail")[0]
    status, _, body = web_request(files, "GET", "/v1/worker", token=mailbox)
    assert status == 403 and body["rule"] == "scope"
    for token in (None, admin, API_KEY):  # plain HTTP: refused whoever asks
        status, _, body = web_request(files, "GET", "/v1/worker", token=token, secure=False)
        assert status == 403 and body["rule"] == "https"
    for token in (admin, API_KEY):
        status, _, body = web_request(files, "GET", "/v1/worker", token=token)
        assert status == 200 and "active_calls" in body and "calls" in body
    # The status page stays open on plain HTTP (counts, no callers).
    assert web_request(files, "GET", "/v1/status", secure=False)[0] == 200
