"""In-band DTMF detection (um.worker.goertzel): every key at realistic levels and twist, one report per key
press, and nothing from speech, the tone prompts or noise."""

from __future__ import annotations

import random
import shutil

import pytest

from tests.conftest import REQUIRE_TOOLS
from um.worker import g711, speech
from um.worker.goertzel import COLS, KEYPAD, ROWS, InbandDetector, tone_payload
from um.worker.prompts import BUILTIN, builtin


def detect(audio: bytes, codec: str = "PCMU") -> list[str]:
    detector = InbandDetector(codec)
    found: list[str] = []
    for index in range(0, len(audio), 160):
        found += detector.feed(audio[index:index + 160])
    return found


def test_every_key_once_per_press_at_levels_and_twist() -> None:
    gap = g711.silence(400, "PCMU")
    assert detect(b"".join(tone_payload(k, 0.06) + gap for k in "0123456789*#ABCD")) == list("0123456789*#ABCD")
    for amplitude in (0.05, 0.8):
        assert detect(tone_payload("5", 0.1, amplitude=amplitude)) == ["5"]
    assert detect(tone_payload("7", 0.5)) == ["7"]  # a long press is one key
    assert detect(tone_payload("7", 0.1) + gap + tone_payload("7", 0.1)) == ["7", "7"]
    row, col = ROWS[1], COLS[2]  # "6" with the column 6 dB above the row (twist within 8 dB)
    samples = [int(a + b) for a, b in zip(g711.tone((row,), 0.1, 0.2), g711.tone((col,), 0.1, 0.4), strict=True)]
    assert detect(g711.encode(samples, "PCMA"), "PCMA") == [KEYPAD[1][2]]


def test_no_keys_in_prompts_or_noise() -> None:
    for name, parts in BUILTIN.items():
        if any(len(freqs) == 2 for freqs, _ in parts):  # enter-extension is the "1" key's own tone pair
            assert detect(builtin(name, "PCMU")) == ["1", "1"]
            continue
        assert detect(builtin(name, "PCMU")) == [], name
    rng = random.Random(7)
    noise = g711.encode([rng.randint(-8000, 8000) for _ in range(16000)], "PCMU")
    assert detect(noise) == []


@pytest.mark.skipif(not shutil.which("espeak-ng") and not REQUIRE_TOOLS, reason="espeak-ng missing")
def test_no_keys_in_speech() -> None:
    for lang, text in (("en", "Please enter your pin, then press one, two, three, or the pound key."),
                       ("de", "Bitte geben Sie Ihre PIN ein, drücken Sie die Eins oder die Raute-Taste.")):
        assert detect(g711.pcm16_to_g711(speech.render_text(text, lang), "PCMU")) == []
