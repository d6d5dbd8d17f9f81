"""The phone menu and greetings end to end on a real node (tone prompts, so timings stay short; tests/prompts
hears the spoken ones): a greeting uploaded over the UM web services (a 16 kHz WAV, converted; a corrupt one
refused with its reason, the old one kept; another mailbox's token refused) is what the next caller hears;
first-time setup from the mailbox's own phone chooses a PIN and records the greeting that the next caller
then hears; a caller whose offer has no telephone-event logs in with in-band DTMF and deletes, saves and
undoes, as `umedge voicemail list` shows; three keys with no action end the call."""

from __future__ import annotations

import asyncio
import io
import json
import math
import ssl
import struct
import subprocess
import time
import urllib.error
import urllib.request
import wave
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import NodeFiles, ServeProcess, umedge, write_config
from tests.worker.caller import Caller, sdp_offer, sine_payloads
from um.worker import g711, wav
from um.worker.goertzel import tone_payload
from um.worker.prompts import Prompts
from um.worker.store import VoicemailStore

API_KEY = "menu-test-api-key-0123456789"
ACCESS = "5001"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    files = write_config(tmp_path_factory.mktemp("menu"), {
        "worker": {"rtp_port_min": 44500, "rtp_port_max": 44999, "silence_timeout": 2},
        "auth": {"api_keys": [API_KEY]}})
    process = ServeProcess(files.path, "--roles", "callrouter,mailbox,worker,web")
    try:
        process.wait_ready()
        yield files, process
    finally:
        process.kill()


def state(files: NodeFiles) -> Any:
    return files.path.parent / "state"


def put_greeting(files: NodeFiles, mailbox: str, body: bytes, key: str = API_KEY) -> tuple[int, dict[str, Any]]:
    context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
    path, _, query = mailbox.partition("?")
    request = urllib.request.Request(f"https://127.0.0.1:{files.port('web', 'http_port')}/v1/mailboxes/{path}"
                                     f"/greeting{'?' + query if query else ''}", data=body, method="PUT",
                                     headers={"Content-Type": "audio/wav", "Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def wav_16k(seconds: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(16000)
        handle.writeframes(b"".join(struct.pack("<h", int(9000 * math.sin(2 * math.pi * (300 + n / 40) * n / 16000)))
                                    for n in range(int(seconds * 16000))))
    return out.getvalue()


def matroska() -> bytes:
    """Audio in a container the upload does not accept (FFmpeg could read it)."""
    import av

    out = io.BytesIO()
    with av.open(out, "w", format="matroska") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        frame = av.AudioFrame(format="s16", layout="mono", samples=800)
        frame.planes[0].update(bytes(1600))
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return out.getvalue()


async def greeting_heard(files: NodeFiles, mailbox: str, seconds: float) -> bytes:
    caller = Caller()
    _, port = await caller.redirect(files.port("callrouter", "sip_tcp_port"), "5000", mailbox)
    rtp = await caller.open_direct()
    assert (await caller.call(port, "5000", mailbox, sdp_offer("127.0.0.1", rtp, codecs=("PCMU",)))).status == 200
    await asyncio.sleep(seconds)
    await caller.bye()
    await caller.close()
    return caller.received_audio()


def test_uploaded_greeting_is_converted_and_played_corrupt_one_refused(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = node
    status, body = put_greeting(files, "1002", wav_16k(1.2))
    assert status == 200 and body["codec"] == "PCMU" and abs(body["seconds"] - 1.2) < 0.05, body
    path = state(files) / "greetings" / "1002.wav"
    stored = wav.read(path)
    assert stored.codec == "PCMU" and stored.rate == 8000
    before = path.read_bytes()
    status, body = put_greeting(files, "1002", b"RIFF\x10\x00\x00\x00WAVEjunk" + b"\x01" * 300)
    assert status == 400 and "old one is kept" in body["error"] and "decode" in body["error"], body
    assert path.read_bytes() == before
    token = json.loads(umedge("token", "issue", "--web", "--mailbox", "1003", "--scope", "voicemail", "--config",
                              str(files.path)).stdout)["token"]
    status, body = put_greeting(files, "1002", wav_16k(0.5), key=token)
    assert status == 403 and body["rule"] == "mailbox"
    assert path.read_bytes() == before
    heard = asyncio.run(greeting_heard(files, "1002", 2.0))
    assert heard.startswith(stored.data)  # the next caller hears it, as stored
    # MP3 (lame) as the away greeting: decoded by FFmpeg; a container outside the list is refused.
    source = state(files).parent / "away.wav"
    source.write_bytes(wav_16k(1.0))
    subprocess.run(["lame", "--quiet", str(source), str(source.with_suffix(".mp3"))], check=True, timeout=30)
    status, body = put_greeting(files, "1002?kind=away", source.with_suffix(".mp3").read_bytes())
    assert status == 200 and body["kind"] == "away" and 0.9 < body["seconds"] < 1.2, body
    away = wav.read(state(files) / "greetings" / "1002.away.wav")
    assert asyncio.run(greeting_heard(files, "1002", 1.5)).startswith(away.data)  # away wins while it exists
    status, body = put_greeting(files, "1002", matroska())
    assert status == 400 and "Matroska / WebM is not accepted; allowed: WAV, MP3" in body["error"], body
    assert path.read_bytes() == before


async def access(files: NodeFiles, user: str, script: list[tuple[float, str | list[bytes]]], wait: float,
                 telephone_event: bool = True) -> Caller:
    """Call the access number from `user`; after each delay send digits (RFC 4733, or in band) or audio."""
    caller = Caller(user=user)
    _, port = await caller.redirect(files.port("callrouter", "sip_tcp_port"), ACCESS, ACCESS)
    rtp = await caller.open_direct()
    offer = sdp_offer("127.0.0.1", rtp, codecs=("PCMU",))
    if not telephone_event:
        offer = offer.replace(" 0 101\r\n", " 0\r\n").replace("a=rtpmap:101 telephone-event/8000\r\n", "")
        offer = offer.replace("a=fmtp:101 0-16\r\n", "")
    answer = await caller.call(port, ACCESS, ACCESS, offer)
    assert answer.status == 200, answer.reason
    assert ("telephone-event" in answer.body.decode()) == telephone_event
    for delay, item in script:
        await asyncio.sleep(delay)
        if isinstance(item, list):
            await caller.send_audio(item)
        elif telephone_event:
            await caller.send_digits(item)
        else:  # in band: 80 ms of the digit's tone pair, 80 ms of silence
            frames = b"".join(tone_payload(d, 0.08) + g711.silence(640, "PCMU") for d in item)
            await caller.send_audio([frames[i:i + 160] for i in range(0, len(frames), 160)])
    await asyncio.wait_for(caller.bye_received.wait(), wait)
    await caller.close()
    return caller


def test_first_time_setup_from_own_phone_then_callers_hear_the_recorded_greeting(
        node: tuple[NodeFiles, ServeProcess]) -> None:
    files, process = node
    spoken = sine_payloads(2.0, seed=17)
    asyncio.run(access(files, "1003", [(0.3, "246813#246813#"), (3.0, spoken), (0.1, "#"), (1.5, "*")], wait=20))
    log = process.stderr()
    assert "1003 has no PIN: first-time setup" in log and "1003: PIN changed by phone" in log
    assert "1003: personal greeting recorded" in log
    recorded = wav.read(state(files) / "greetings" / "1003.wav")
    assert recorded.codec == "PCMU" and recorded.data in b"".join(spoken)  # what the phone sent, bit for bit
    assert len(recorded.data) >= 8000
    pin = json.loads((state(files) / "voicemail" / "1003" / "pin.json").read_text())
    assert pin["must_change"] is False and "246813" not in json.dumps(pin)
    heard = asyncio.run(greeting_heard(files, "1003", len(recorded.data) / 8000 + 0.5))
    assert heard.startswith(recorded.data)
    # Another phone cannot set up a mailbox without a PIN: it hears why, and the call ends.
    asyncio.run(access(files, "4711", [(0.3, "1006#")], wait=10))
    assert "PIN for 1006: no-pin" in process.stderr()


def test_in_band_dtmf_delete_save_undo_and_three_invalid_keys(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, process = node
    out = umedge("voicemail", "pin-reset", "1004", "--pin", "975318", "--config", str(files.path))
    assert out.returncode == 0, out.stderr
    store = VoicemailStore(state(files))
    ids = []
    for seed in (1, 2, 3):
        recording = store.start("1004", "PCMU", caller="sip:4711@127.0.0.1")
        recording.write(b"".join(sine_payloads(1.0, seed=seed)))
        ids.append(recording.commit("bye").id)
        time.sleep(1.1)  # ids and times in order
    # type-ahead: delete 1, undo (1 comes again after 2), save 2, next (1), delete 3; then 5, 6, 0 have no action
    caller = asyncio.run(access(files, "1004", [(0.5, "975318#"), (0.5, "78927" + "560")], wait=30,
                                telephone_event=False))
    listed = {m["id"]: m for m in json.loads(umedge("voicemail", "list", "--json", "--mailbox", "1004",
                                                        "--config", str(files.path)).stdout)}
    assert set(listed) == {ids[0], ids[1]}, listed  # 3 deleted at hang-up; 1's delete undone
    assert listed[ids[1]]["read"] is True and listed[ids[0]]["read"] is False  # saved; skipped by type-ahead
    log = process.stderr()
    assert "PIN for 1004: ok" in log and "1004: message " + ids[0] + " restored" in log
    assert log.count("menu: key '5' has no action") == 1 and "key '0' has no action" in log
    invalid = Prompts().say("menu.invalid", "en", "PCMU")
    goodbye = Prompts().say("goodbye", "en", "PCMU")
    heard = caller.received_audio()
    # three "not a valid choice", then goodbye (what follows it until the BYE depends on timing)
    assert heard.count(invalid) == 3 and goodbye.strip(b"\xff") in heard[heard.rfind(invalid):]
