"""Prompts and greetings as G.711 audio, ready to packetize.

umedge ships no recorded speech: the built-in prompts are short tone
patterns (distinct per prompt), synthesized once per codec. A recorded
prompt `<prompt_dir>/<name>.wav` (8 kHz mono, 16-bit PCM or G.711) replaces
the built-in one. A mailbox's greeting is `<greeting_dir>/<mailbox>.wav`,
else the default greeting prompt.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from twisted.logger import Logger

from um.worker import g711, wav

log = Logger(namespace="umedge.worker.prompts")
GAP = 0.12

# name -> [(frequencies, seconds)], frequencies () = silence
BUILTIN: dict[str, list[tuple[tuple[float, ...], float]]] = {
    "greeting": [((440.0,), 0.3), ((), 0.1), ((554.0,), 0.3), ((), 0.1), ((659.0,), 0.4)],
    "beep": [((), 0.15), ((1000.0,), 0.3)],
    "saved": [((659.0,), 0.2), ((523.0,), 0.3)],
    "goodbye": [((523.0,), 0.2), ((392.0,), 0.35)],
    "enter-extension": [((697.0, 1209.0), 0.15), ((), 0.1), ((697.0, 1209.0), 0.15)],
    "enter-pin": [((880.0,), 0.15), ((), 0.1), ((880.0,), 0.15)],
    "pin-wrong": [((300.0,), 0.5)],
    "locked": [((300.0,), 0.2), ((), 0.1), ((300.0,), 0.2), ((), 0.1), ((300.0,), 0.2)],
    "count-pip": [((1200.0,), 0.1), ((), 0.15)],
    "message": [((1500.0,), 0.12), ((), 0.2)],
    "no-messages": [((440.0,), 0.6)],
}


def _synthesize(name: str) -> list[int]:
    samples: list[int] = []
    for freqs, seconds in BUILTIN[name]:
        samples += g711.tone(freqs, seconds) if freqs else [0] * int(seconds * 8000)
    return samples


@lru_cache(maxsize=64)
def builtin(name: str, codec: str) -> bytes:
    return g711.encode(_synthesize(name), codec)


class Prompts:
    def __init__(self, prompt_dir: str | Path | None = None, greeting_dir: str | Path | None = None) -> None:
        self.prompt_dir = Path(prompt_dir) if prompt_dir else None
        self.greeting_dir = Path(greeting_dir) if greeting_dir else None
        self._files: dict[tuple[Path, str], tuple[float, bytes]] = {}

    def _file(self, path: Path, codec: str) -> bytes | None:
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return None
        cached = self._files.get((path, codec))
        if cached is not None and cached[0] == mtime:
            return cached[1]
        try:
            audio = wav.read(path).as_g711(codec)
        except (OSError, wav.WavError) as error:
            log.warn("cannot use {path}: {error}", path=str(path), error=error)
            return None
        self._files[(path, codec)] = (mtime, audio)
        return audio

    def get(self, name: str, codec: str) -> bytes:
        if self.prompt_dir is not None:
            audio = self._file(self.prompt_dir / f"{name}.wav", codec)
            if audio is not None:
                return audio
        return builtin(name, codec)

    def greeting(self, mailbox: str, codec: str) -> bytes:
        if self.greeting_dir is not None and mailbox:
            audio = self._file(self.greeting_dir / f"{mailbox}.wav", codec)
            if audio is not None:
                return audio
        return self.get("greeting", codec)

    def count(self, number: int, codec: str) -> bytes:
        """One pip per new message (at most 9), or the no-messages prompt."""
        if number <= 0:
            return self.get("no-messages", codec)
        return self.get("count-pip", codec) * min(number, 9)
