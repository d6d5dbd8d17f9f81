"""Prompts and greetings as G.711 audio, ready to packetize.

Spoken prompts (`[worker] prompts = "spoken"`) are the catalogue's clips
(um.worker.catalogue) rendered by espeak-ng into `<state_dir>/prompts/<lang>/`
(um.worker.speech; on first use if the start-up rendering has not made them
yet); an operator's recording `<prompt_dir>/<lang>/<name>.wav` or
`<prompt_dir>/<name>.wav` (8 kHz mono, 16-bit PCM or G.711) wins over a
rendered clip. With `prompts = "tones"` (or without espeak-ng) every sentence
is a short tone pattern, distinct per prompt.

A mailbox's greetings are `<greeting_dir>/<mailbox>.wav` (personal) and
`<mailbox>.away.wav` (away, played instead while it exists); without either
the spoken default greeting names the extension digit by digit.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from twisted.logger import Logger

from um.worker import g711, speech, wav
from um.worker.speech import Clip

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
    "menu": [((587.0,), 0.15), ((), 0.05), ((784.0,), 0.15)],
    "invalid": [((300.0,), 0.15), ((), 0.05), ((300.0,), 0.15)],
}
# catalogue sentence -> its tone pattern when prompts are tones
TONE_OF = {"greeting.default": "greeting", "goodbye": "goodbye", "message.stored": "saved",
           "pin.enter": "enter-pin", "extension.enter": "enter-extension", "attendant.extension": "enter-extension",
           "pin.wrong": "pin-wrong", "extension.unknown": "pin-wrong", "pin.locked": "locked", "pin.none": "locked",
           "message.first": "message", "message.next": "message", "count.new.none": "no-messages",
           "count.saved.none": "no-messages", "menu.invalid": "invalid", "record.after_tone": "beep"}
PAUSE = 0.25  # seconds between the sentences of one prompt


def _synthesize(name: str) -> list[int]:
    samples: list[int] = []
    for freqs, seconds in BUILTIN[name]:
        samples += g711.tone(freqs, seconds) if freqs else [0] * int(seconds * 8000)
    return samples


@lru_cache(maxsize=64)
def builtin(name: str, codec: str) -> bytes:
    return g711.encode(_synthesize(name), codec)


class Prompts:
    def __init__(self, prompt_dir: str | Path | None = None, greeting_dir: str | Path | None = None,
                 rendered_dir: str | Path | None = None, spoken: bool = False) -> None:
        self.prompt_dir = Path(prompt_dir) if prompt_dir else None
        self.greeting_dir = Path(greeting_dir) if greeting_dir else None
        self.renderer = speech.Renderer(rendered_dir) if rendered_dir else None
        self.spoken = spoken and self.renderer is not None
        self._files: dict[tuple[Path, str], tuple[float, bytes]] = {}
        self._failed: set[str] = set()  # clips that could not be rendered (said once in the log)

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
        if len(self._files) > 2000:
            self._files.clear()
        self._files[(path, codec)] = (mtime, audio)
        return audio

    def get(self, name: str, codec: str) -> bytes:
        """A tone prompt by its old name (or the operator's recording of that name)."""
        if self.prompt_dir is not None:
            audio = self._file(self.prompt_dir / f"{name}.wav", codec)
            if audio is not None:
                return audio
        return builtin(name, codec)

    # --- spoken prompts ------------------------------------------------------------------------
    def clip(self, name: str, lang: str, codec: str) -> bytes:
        """One clip: the operator's recording, else the rendered one (rendered now if missing)."""
        if self.prompt_dir is not None:
            for path in (self.prompt_dir / lang / f"{name}.wav", self.prompt_dir / f"{name}.wav"):
                audio = self._file(path, codec)
                if audio is not None:
                    return audio
        if self.renderer is None or f"{lang}/{name}" in self._failed:
            return b""
        try:
            rendered = self.renderer.ensure(lang, name)
        except (speech.SpeechError, OSError) as error:
            self._failed.add(f"{lang}/{name}")
            log.warn("prompt {lang}/{name} not rendered: {error}", lang=lang, name=name, error=error)
            return b""
        return (self._file(rendered, codec) or b"") if rendered is not None else b""

    def speak(self, clips: list[Clip], lang: str, codec: str) -> bytes:
        out = []
        for item in clips:
            if item.kind == "clip":
                out.append(self.clip(item.value, lang, codec))
            elif item.kind == "silence":
                out.append(g711.silence(int(item.value) * 8, codec))
            elif item.kind == "text" and self.renderer is not None and item.value.strip():
                try:
                    out.append(self._file(self.renderer.custom(lang, item.value[:200]), codec) or b"")
                except (speech.SpeechError, OSError) as error:
                    log.warn("text not rendered: {error}", error=error)
        return b"".join(out)

    def say(self, name: str, lang: str, codec: str, **slots: object) -> bytes:
        """Catalogue sentence `name` with its slots filled, then a short pause; tones unless spoken.

        A sentence with slots is rendered whole (and kept) unless the operator recorded its parts:
        espeak-ng reads "extension one, oh, oh, one" far better than clips joined end to end. Blocking
        (may run espeak-ng): callers on the event loop use a thread.
        """
        if not self.spoken:
            return self.get(TONE_OF.get(name, "menu"), codec)
        clips = speech.phrase(name, lang, **slots)
        recorded = self.prompt_dir is not None and any(
            (self.prompt_dir / d / f"{c.value}.wav").exists() for c in clips if c.kind == "clip" for d in (lang, "."))
        return self._spoken(clips, lang, codec, whole=len(clips) > 1 and not recorded)

    def sentences(self, clips: list[Clip], lang: str, codec: str, tone: str = "menu") -> bytes:
        """Clips composed by um.worker.speech (counts, envelopes); one tone unless spoken."""
        if not self.spoken:
            return self.get(tone, codec)
        return self._spoken(clips, lang, codec, whole=len(clips) > 1)

    def _spoken(self, clips: list[Clip], lang: str, codec: str, whole: bool) -> bytes:
        pause = g711.silence(int(PAUSE * 8000), codec)
        if whole and self.renderer is not None:
            try:
                audio = self._file(self.renderer.custom(lang, speech.text_of(clips, lang)), codec)
                if audio is not None:
                    return audio + pause
            except (speech.SpeechError, OSError) as error:
                log.warn("sentence not rendered whole ({error}): joining its clips", error=error)
        return self.speak(clips, lang, codec) + pause

    # --- greetings -----------------------------------------------------------------------------
    def greeting_path(self, mailbox: str, away: bool = False) -> Path | None:
        if self.greeting_dir is None or not mailbox:
            return None
        return self.greeting_dir / f"{mailbox}{'.away' if away else ''}.wav"

    def own_greeting(self, mailbox: str, codec: str) -> bytes | None:
        """The away greeting while there is one, else the personal greeting, else None."""
        for away in (True, False):
            path = self.greeting_path(mailbox, away)
            if path is not None:
                audio = self._file(path, codec)
                if audio is not None:
                    return audio
        return None

    def greeting(self, mailbox: str, codec: str, lang: str = "en") -> bytes:
        own = self.own_greeting(mailbox, codec)
        if own is not None:
            return own
        return self.say("greeting.default", lang, codec, extension=mailbox)

    def count(self, number: int, codec: str) -> bytes:
        """One pip per new message (at most 9), or the no-messages prompt."""
        if number <= 0:
            return self.get("no-messages", codec)
        return self.get("count-pip", codec) * min(number, 9)
