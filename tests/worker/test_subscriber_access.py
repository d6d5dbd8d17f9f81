"""Subscriber access (Outlook Voice Access) on a real node: the PIN set over the UM web services
(HTTPS, API key), a login by RFC 4733 DTMF that hears its new message bit for bit, five wrong PINs
that lock the mailbox (even the right PIN is refused then), and a PIN reset that unlocks it."""

from __future__ import annotations

import asyncio
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import NodeFiles, ServeProcess, umedge, write_config
from tests.worker.caller import Caller, sdp_offer, sine_payloads, stored_message
from um.worker import g711, wav
from um.worker.store import VoicemailStore

API_KEY = "worker-test-api-key-0123456789"
GREETING = b"".join(sine_payloads(0.6, seed=21))  # mailbox 1005's recorded greeting
ACCESS = "5001"  # the default dial plan's subscriber access number


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    files = write_config(tmp_path_factory.mktemp("ova"), {
        "worker": {"rtp_port_min": 43000, "rtp_port_max": 43999, "silence_timeout": 1},
        "auth": {"api_keys": [API_KEY]}})
    greetings = files.path.parent / "state" / "greetings"
    greetings.mkdir(parents=True)
    (greetings / "1005.wav").write_bytes(wav.encode("L16", g711.g711_to_pcm16(GREETING, "PCMU")))  # 16-bit PCM
    process = ServeProcess(files.path, "--roles", "callrouter,mailbox,worker,web")
    try:
        process.wait_ready()
        yield files, process
    finally:
        process.kill()


def https(files: NodeFiles, path: str, body: dict[str, Any] | None = None, key: str | None = API_KEY,
          secure: bool = True) -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
    scheme = "https" if secure else "http"
    request = urllib.request.Request(f"{scheme}://127.0.0.1:{files.port('web', 'http_port')}{path}",
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(request, context=context if secure else None, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def leave_message(files: NodeFiles, mailbox: str, seconds: float) -> bytes:
    audio = sine_payloads(seconds + 2.0, seed=3)
    caller = Caller()
    host, port = await caller.redirect(files.port("callrouter", "sip_tcp_port"), "5000", mailbox)
    rtp = await caller.open_direct()
    assert (await caller.call(port, "5000", mailbox, sdp_offer("127.0.0.1", rtp))).status == 200
    await caller.send_audio(audio)
    await asyncio.wait_for(caller.bye_received.wait(), 8)  # a second of silence ends the message; the worker hangs up
    await caller.close()
    return caller.received_audio()


async def access_call(files: NodeFiles, user: str, digits: list[tuple[float, str]], wait: float) -> Caller:
    """Call the access number from `user`; send each digit string after its delay; wait for the worker's BYE."""
    caller = Caller(user=user)
    host, port = await caller.redirect(files.port("callrouter", "sip_tcp_port"), ACCESS, ACCESS)
    rtp = await caller.open_direct()
    answer = await caller.call(port, ACCESS, ACCESS, sdp_offer("127.0.0.1", rtp))
    assert answer.status == 200, answer.reason
    for delay, text in digits:
        await asyncio.sleep(delay)
        await caller.send_digits(text)
    await asyncio.wait_for(caller.bye_received.wait(), wait)  # the worker hangs up when it is done
    await caller.close()
    return caller


def test_pin_reset_needs_https_and_credentials(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = node
    assert https(files, "/v1/pin-reset", {"mailbox": "1005"}, secure=False)[0] == 403  # plain HTTP
    assert https(files, "/v1/pin-reset", {"mailbox": "1005"}, key=None)[0] == 401
    assert https(files, "/v1/pin-reset", {"mailbox": "1005"}, key="not-the-key-0123456789")[0] == 403
    assert https(files, "/v1/pin-reset", {"mailbox": "1005", "pin": "123456"}) == (
        400, {"error": "a PIN cannot be a run of consecutive digits", "field": "pin"})
    assert https(files, "/v1/pin-reset", {"mailbox": "7777"})[0] == 404
    status, body = https(files, "/v1/pin-reset", {"mailbox": "1005"})
    assert status == 200 and len(body["pin"]) == 6 and body["locked"] is False
    with urllib.request.urlopen(f"http://127.0.0.1:{files.port('web', 'http_port')}/healthz", timeout=5) as page:
        assert page.status == 200  # the status site still answers plain HTTP on the same port


def test_login_by_dtmf_plays_the_new_message_then_five_wrong_pins_lock(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, process = node
    store = VoicemailStore(files.path.parent / "state")
    heard = asyncio.run(leave_message(files, "1005", 1.5))
    assert heard.startswith(GREETING)  # the mailbox's own greeting (a PCM WAV, played as G.711), then the tone
    message = stored_message(store, "1005")
    # after the tone; a loaded CI host adds slack
    assert message.reason == "silence" and 1.0 <= message.duration <= 3.5, message
    assert https(files, "/v1/pin-reset", {"mailbox": "1005", "pin": "246813"}) == (200, {"mailbox": "1005",
                                                                                       "locked": False})
    # An unknown caller ID: the worker asks for the extension, then the PIN.
    # After the message: * leaves the message menu, * at the main menu says goodbye.
    caller = asyncio.run(access_call(files, "4711", [(0.3, "1005#"), (0.2, "246813#"), (6.0, "*"), (1.0, "*")],
                                     wait=30))
    heard = caller.received_audio()
    assert store.audio(message).data in heard  # the message played back bit for bit
    assert store.find(message.id).read and store.counts("1005") == (0, 1)
    assert "subscriber access: 1005 logged in, 1 new message(s)" in process.stderr()
    # Caller ID 1005: straight to the PIN; five wrong ones lock the mailbox, and the worker hangs up.
    asyncio.run(access_call(files, "1005", [(0.3, "111111#222222#333333#444444#555555#")], wait=30))
    pin_file = json.loads((files.path.parent / "state" / "voicemail" / "1005" / "pin.json").read_text())
    assert pin_file["locked"] is True and pin_file["failures"] == 5 and "246813" not in json.dumps(pin_file)
    assert "salt" in pin_file and pin_file["algorithm"] == "scrypt"
    # Locked: the right PIN is refused too.
    asyncio.run(access_call(files, "1005", [(0.3, "246813#")], wait=15))
    assert "PIN for 1005: locked" in process.stderr().split("PIN for 1005: wrong")[-1]
    # An administrator resets it (CLI this time): unlocked, and the new PIN works.
    out = umedge("voicemail", "pin-reset", "1005", "--pin", "975318", "--config", str(files.path))
    assert out.returncode == 0 and json.loads(out.stdout) == {"mailbox": "1005", "locked": False}
    asyncio.run(access_call(files, "1005", [(0.3, "975318#"), (1.0, "*")], wait=15))  # * at the menu: goodbye
    assert process.stderr().rstrip().count("PIN for 1005: ok") == 2
