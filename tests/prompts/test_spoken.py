"""Spoken prompts on a real node: the caller's RTP carries the rendered catalogue sentence (found by
cross-correlation, bit for bit), it is speech and not a tone pattern, and pocketsphinx recognizes the default
greeting as the catalogue's sentence with the extension's digits, and a menu key with no action as "that's
not a valid choice". A German dial plan's callers hear the German voice's rendering, which differs from the
English one."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Iterator

import pytest

from tests.conftest import REQUIRE_TOOLS, NodeFiles, ServeProcess, serving, umedge, write_config
from tests.prompts import listen
from tests.worker.caller import Caller, sdp_offer
from um.worker.prompts import Prompts

pytestmark = pytest.mark.skipif(not shutil.which("espeak-ng") and not REQUIRE_TOOLS, reason="espeak-ng missing")
PLANS = {
    "hunt_groups": [{"pilot": "5000", "dial_plan": "default"}, {"pilot": "5001", "dial_plan": "default"},
                    {"pilot": "6000", "dial_plan": "deutsch"}],
    "dial_plans": [{"name": "default", "access_numbers": ["5001"]}, {"name": "deutsch", "language": "de"}],
    "mailboxes": [{"extension": "1000-1009", "dial_plan": "default"},
                  {"extension": "2000-2009", "dial_plan": "deutsch"}],
}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    files = write_config(tmp_path_factory.mktemp("spoken"), {
        "worker": {"prompts": "spoken", "rtp_port_min": 44000, "rtp_port_max": 44499},
        "callrouter": PLANS})
    with serving(files, "--roles", "callrouter,mailbox,worker") as process:
        yield files, process


async def listen_to_greeting(files: NodeFiles, pilot: str, mailbox: str, seconds: float) -> bytes:
    caller = Caller()
    _, port = await caller.redirect(files.port("callrouter", "sip_tcp_port"), pilot, mailbox)
    rtp = await caller.open_direct()
    assert (await caller.call(port, pilot, mailbox, sdp_offer("127.0.0.1", rtp, codecs=("PCMU",)))).status == 200
    await asyncio.sleep(seconds)
    await caller.bye()
    await caller.close()
    return caller.received_audio()


def rendered(files: NodeFiles) -> Prompts:
    return Prompts(rendered_dir=files.path.parent / "state" / "prompts", spoken=True)


def test_default_greeting_is_the_spoken_sentence_with_the_extension(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = node
    heard = listen.samples(asyncio.run(listen_to_greeting(files, "5000", "1001", 12.5)))
    prompts = rendered(files)
    greeting = listen.samples(prompts.say("greeting.default", "en", "PCMU", extension="1001"))
    beep = listen.samples(prompts.get("beep", "PCMU"))
    at, score = listen.find(greeting, heard)
    assert at < 8000 and score > 0.99, (at, score)  # the rendered sentence, first thing the caller hears
    after, beep_score = listen.find(beep, heard, at + len(greeting) - 400)
    assert beep_score > 0.99 and after - (at + len(greeting)) < 800  # then the tone, right after it
    segment = heard[at:at + len(greeting)]
    assert listen.tonal_share(segment) < 0.6 and listen.pitch_spread(segment) >= 10  # speech ...
    tones = listen.samples(Prompts().get("greeting", "PCMU"))
    assert listen.tonal_share(tones) > 0.9 and listen.pitch_spread(tones) <= 4  # ... unlike the old tone prompt
    words = listen.recognize(segment)
    assert words == "the person at extension one oh oh one is not available please leave a message after the tone"
    assert listen.spoken_digits(words) == "1001"


def test_first_start_renders_the_dial_plans_languages(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, process = node
    root = files.path.parent / "state" / "prompts"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all((root / lang / "index.json").exists() for lang in ("en", "de")):
        time.sleep(0.2)
    for lang, voice in (("en", "en-us"), ("de", "de")):
        index = json.loads((root / lang / "index.json").read_text())
        assert index["voice"] == voice and all((root / lang / f"{name}.wav").exists() for name in index["clips"])
    assert "clip(s) rendered for de" in process.stderr()


async def menu_call(files: NodeFiles, user: str, digits: list[tuple[float, str]], wait: float) -> bytes:
    caller = Caller(user=user)
    _, port = await caller.redirect(files.port("callrouter", "sip_tcp_port"), "5001", "5001")
    rtp = await caller.open_direct()
    assert (await caller.call(port, "5001", "5001", sdp_offer("127.0.0.1", rtp, codecs=("PCMU",)))).status == 200
    for delay, keys in digits:
        await asyncio.sleep(delay)
        await caller.send_digits(keys)
    await asyncio.wait_for(caller.bye_received.wait(), wait)
    await caller.close()
    return caller.received_audio()


def test_a_key_with_no_action_is_told_so_in_words(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = node
    assert umedge("voicemail", "pin-reset", "1002", "--pin", "246813", "--config", str(files.path)).returncode == 0
    # Typed ahead: the PIN, then 5 (no action in the main menu); later * (goodbye).
    heard = listen.samples(asyncio.run(menu_call(files, "1002", [(0.3, "246813#5"), (6.0, "*")], wait=25)))
    prompts = rendered(files)
    invalid = listen.samples(prompts.say("menu.invalid", "en", "PCMU"))
    goodbye = listen.samples(prompts.say("goodbye", "en", "PCMU"))
    at, score = listen.find(invalid, heard)
    assert score > 0.99, score
    assert listen.recognize(heard[at:at + len(invalid)]) == "that's not a valid choice"
    after, score = listen.find(goodbye, heard, at + len(invalid))
    assert score > 0.99 and listen.recognize(heard[after:after + len(goodbye)]) == "goodbye"


def test_german_dial_plan_hears_the_german_voice(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = node
    out = umedge("prompts", "render", "--lang", "de", "--config", str(files.path))
    assert out.returncode == 0 and out.stdout.startswith("de: ") and "voice de" in out.stdout, out.stderr
    root = files.path.parent / "state" / "prompts"
    index = json.loads((root / "de" / "index.json").read_text())
    assert index["voice"] == "de" and index["clips"]["goodbye"] == "Auf Wiederhören."
    assert index["clips"]["count.new.one"] == "Sie haben eine neue Nachricht."
    assert index["clips"]["count.new.many.0"] == "Sie haben" and index["clips"]["count.new.many.1"] == \
        "neue Nachrichten."
    assert (root / "de" / "goodbye.wav").read_bytes() != (root / "en" / "goodbye.wav").read_bytes()
    heard = listen.samples(asyncio.run(listen_to_greeting(files, "6000", "2001", 8.0)))
    prompts = rendered(files)
    german = listen.samples(prompts.say("greeting.default", "de", "PCMU", extension="2001"))
    english = listen.samples(prompts.say("greeting.default", "en", "PCMU", extension="2001"))
    _, score_de = listen.find(german[:40000], heard)
    _, score_en = listen.find(english[:40000], heard)
    assert score_de > 0.99 and score_en < 0.5, (score_de, score_en)
    assert listen.tonal_share(heard[:40000]) < 0.6


def test_number_grammar_in_both_languages() -> None:
    from um.worker import catalogue, speech

    def words(clips: list[speech.Clip], lang: str) -> str:
        return speech.text_of(clips, lang)

    assert words(speech.count("new", 1, "de"), "de") == "Sie haben eine neue Nachricht."
    assert words(speech.count("new", 2, "de"), "de") == "Sie haben zwei neue Nachrichten."
    assert words(speech.count("new", 0, "de"), "de") == "Sie haben keine neuen Nachrichten."
    assert words(speech.count("saved", 21, "en"), "en") == "You have twenty-one saved messages."
    assert words(speech.count("new", 1, "en"), "en") == "You have one new message."
    assert catalogue.number_text(21, "de") == "einundzwanzig" and catalogue.number_text(1, "de") == "eins"
    assert words(speech.duration(61, "de"), "de") == "eine Minute eine Sekunde"
    assert words(speech.duration(125, "en"), "en") == "two minutes five seconds"
    assert catalogue.ordinal_text(29, "de") == "neunundzwanzigsten" and catalogue.ordinal_text(22, "en") == \
        "twenty-second"
    assert words(speech.digits("+4930"), "de") == "plus, vier, neun, drei, null,"
    assert words(speech.digits("1001"), "en") == "one, oh, oh, one,"
    import datetime as dt

    when = dt.datetime(2026, 11, 30, 14, 5)
    assert words(speech.phrase("message.received", "de", date=when, time=when), "de") == \
        "Empfangen am Montag dreißigsten November, um vierzehn Uhr fünf."
    assert words(speech.date(when, "en"), "en") == "Monday November thirtieth"
    assert words(speech.clock(when, "en"), "en") == "two oh five p m"
    assert words(speech.clock(when, "de"), "de") == "vierzehn Uhr fünf"
