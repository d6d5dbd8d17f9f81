"""Spoken prompts: espeak-ng renders the catalogue's clips; phrases fill a sentence's slots with clips.

Rendering runs espeak-ng as a program (text on stdin, never on the command
line) and converts its 22.05 kHz output with PyAV (FFmpeg's resampler) to
what the worker plays: 8 kHz mono 16-bit PCM WAVs under
`<state_dir>/prompts/<lang>/<name>.wav`, with `index.json` naming the voice
and the text of each clip. The same decoder turns uploaded greetings of any
format FFmpeg reads into 8 kHz audio.

`phrase()` is sans-I/O: it turns a catalogue sentence and its slot values
into a list of clips (`Clip`): a rendered name, free text (a name from the
directory, an auto attendant's label) or silence.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from um.worker import catalogue, wav
from um.worker.store import atomic_write

ESPEAK = "espeak-ng"
SPEED = 125  # words per minute: slower than espeak's default (175), for 8 kHz telephone audio
MAX_DECODED_SECONDS = 600
# Containers FFmpeg may open for an upload (a smaller attack surface than every demuxer it has).
FORMATS = {"wav": "WAV", "mp3": "MP3", "ogg": "Ogg (Vorbis, Opus)", "flac": "FLAC", "aiff": "AIFF", "au": "AU",
           "mov,mp4,m4a,3gp,3g2,mj2": "M4A (AAC)"}
MAX_TEXT_CLIPS = 4000  # whole sentences rendered on demand (greetings naming an extension, envelopes)


class SpeechError(Exception):
    """Rendering or decoding failed (the message says why)."""


@dataclass(frozen=True)
class Clip:
    kind: str   # "clip" (a catalogue name), "text" (rendered on demand) or "silence" (value: milliseconds)
    value: str


def _clip(name: str) -> Clip:
    return Clip("clip", name)


# --- decoding (greeting uploads and espeak-ng output) ---------------------------------------------
def to_pcm8k(source: bytes | str | Path, max_seconds: float = MAX_DECODED_SECONDS) -> bytes:
    """Any audio FFmpeg can read (WAV, MP3, Ogg/Opus, FLAC, ...) as 8 kHz mono 16-bit little-endian PCM."""
    import av  # PyAV: FFmpeg's demuxers, decoders and resampler

    handle: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    limit = int(max_seconds * 8000) * 2
    out = bytearray()
    try:
        with av.open(handle, mode="r") as container:
            if container.format.name not in FORMATS:
                raise SpeechError(f"{container.format.long_name or container.format.name} is not accepted; "
                                  "allowed: " + ", ".join(FORMATS.values()))
            if not container.streams.audio:
                raise SpeechError("no audio stream in the file")
            resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
            for frame in container.decode(audio=0):
                for converted in resampler.resample(frame):
                    out += bytes(converted.planes[0])[: converted.samples * 2]
                if len(out) > limit:
                    raise SpeechError(f"longer than {max_seconds:.0f} seconds")
            for converted in resampler.resample(None):
                out += bytes(converted.planes[0])[: converted.samples * 2]
    except SpeechError:
        raise
    except (av.FFmpegError, ValueError, OSError, EOFError) as error:  # FFmpeg's reason, e.g. "Invalid data found"
        raise SpeechError(f"not audio FFmpeg can decode ({error})") from None
    if not out:
        raise SpeechError("no audio in the file")
    return bytes(out)


# --- rendering ----------------------------------------------------------------------------------
def available() -> bool:
    return shutil.which(ESPEAK) is not None


def render_text(text: str, lang: str) -> bytes:
    """`text` spoken by the language's espeak-ng voice, as 8 kHz 16-bit PCM."""
    voice = catalogue.VOICES.get(lang)
    if voice is None:
        raise SpeechError(f"no voice for language {lang!r}")
    if not available():
        raise SpeechError(f"{ESPEAK} is not installed")
    with tempfile.TemporaryDirectory(prefix="umedge-tts-") as tmp:
        out = Path(tmp) / "clip.wav"
        try:
            done = subprocess.run([ESPEAK, "-v", voice, "-s", str(SPEED), "-w", str(out)], input=text.encode(),
                                  capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired) as error:
            raise SpeechError(f"{ESPEAK}: {error}") from None
        if done.returncode != 0 or not out.exists():
            raise SpeechError(f"{ESPEAK} failed: {done.stderr.decode(errors='replace').strip()[:200]}")
        return trim(to_pcm8k(out))


def trim(pcm: bytes, threshold: int = 200, margin: float = 0.06) -> bytes:
    """Without espeak-ng's leading and trailing silence (clips are joined into sentences), `margin` kept."""
    import array

    samples = array.array("h", pcm[: len(pcm) - len(pcm) % 2])
    loud = [i for i in range(len(samples)) if abs(samples[i]) > threshold]
    if not loud:
        return pcm
    keep = int(margin * 8000)
    start, end = max(0, loud[0] - keep), min(len(samples), loud[-1] + 1 + keep)
    return samples[start:end].tobytes()


class Renderer:
    """The rendered clips of `<state_dir>/prompts`: render what is missing (or everything), find one."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, lang: str, name: str) -> Path:
        return self.root / lang / f"{name}.wav"

    def _write(self, lang: str, name: str, pcm: bytes) -> None:
        atomic_write(self.path(lang, name), wav.encode("L16", pcm), self.root / ".tmp", mode=0o644)

    def render(self, lang: str, force: bool = False) -> tuple[int, int]:
        """Render the language's catalogue; (rendered, kept). Writes index.json (voice, texts)."""
        texts = catalogue.clips(lang)
        index_path = self.root / lang / "index.json"
        try:
            old = json.loads(index_path.read_text()).get("clips", {})
        except (OSError, ValueError, AttributeError):
            old = {}
        rendered = kept = 0
        for name, text in texts.items():
            if not force and old.get(name) == text and self.path(lang, name).exists():
                kept += 1
                continue
            self._write(lang, name, render_text(text, lang))
            rendered += 1
        index = {"engine": ESPEAK, "voice": catalogue.VOICES[lang], "language": lang, "rate": 8000,
                 "rendered": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "clips": texts}
        atomic_write(index_path, json.dumps(index, indent=1, ensure_ascii=False).encode(), self.root / ".tmp",
                     mode=0o644)
        return rendered, kept

    def ensure(self, lang: str, name: str) -> Path | None:
        """The clip's file, rendered now if it is missing; None if it cannot be."""
        path = self.path(lang, name)
        if path.exists():
            return path
        text = catalogue.clips(lang).get(name)
        if text is None:
            return None
        self._write(lang, name, render_text(text, lang))
        return path

    def custom(self, lang: str, text: str) -> Path:
        """Free text (a directory name, an attendant's label), rendered once and kept by its hash."""
        import hashlib

        digest = hashlib.sha256(f"{lang}\0{text}".encode()).hexdigest()[:24]
        path = self.root / lang / "text" / f"{digest}.wav"
        if not path.exists():
            pcm = render_text(text, lang)
            atomic_write(path, wav.encode("L16", pcm), self.root / ".tmp", mode=0o644)
            self._prune(path.parent)
        return path

    @staticmethod
    def _prune(folder: Path, keep: int = MAX_TEXT_CLIPS) -> None:
        """Bounded: beyond `keep` rendered texts the least recently written quarter goes."""
        files = list(folder.glob("*.wav"))
        if len(files) <= keep:
            return
        files.sort(key=lambda p: p.stat().st_mtime)
        for old in files[: len(files) - keep * 3 // 4]:
            old.unlink(missing_ok=True)


def render_command(state_dir: str, languages: tuple[str, ...], force: bool = False) -> list[str]:
    """`umedge prompts render`: one line per language."""
    renderer = Renderer(Path(state_dir) / "prompts")
    lines = []
    for lang in languages:
        rendered, kept = renderer.render(lang, force)
        lines.append(f"{lang}: {rendered} clip(s) rendered, {kept} kept, voice {catalogue.VOICES[lang]} "
                     f"-> {renderer.root / lang}")
    return lines


# --- phrases (sans-I/O) ---------------------------------------------------------------------------
def digits(text: str) -> list[Clip]:
    """A number read digit by digit (caller id, extensions): 1 0 0 1."""
    out = [Clip("silence", "150")]
    for char in text:
        if char.isascii() and char.isdigit():
            out += [_clip(f"digit.{char}"), Clip("silence", "150")]
        elif char == "+":
            out += [_clip("plus"), Clip("silence", "150")]
    return out if len(out) > 1 else []


def number(n: int, lang: str, feminine: bool = False) -> list[Clip]:
    """A whole number 0-999999 in words ("zwei", "eine" before a feminine noun, "three hundred twelve")."""
    n = max(0, min(int(n), 999_999))
    if n < 100:
        return [_clip("number.1.f" if (lang == "de" and feminine and n == 1) else f"number.{n}")]
    out: list[Clip] = []
    thousands, rest = divmod(n, 1000)
    if thousands:
        out += number(thousands, lang) + [_clip("unit.thousand")]
    hundreds, rest = divmod(rest, 100)
    if hundreds:
        out += [_clip(f"number.{hundreds}"), _clip("unit.hundred")]
    if rest:
        out += number(rest, lang, feminine)
    return out


def key(char: str) -> list[Clip]:
    if char == "*":
        return [_clip("key.star")]
    if char == "#":
        return [_clip("key.pound")]
    return [_clip(f"number.{char}")] if char.isascii() and char.isdigit() else []


def date(when: dt.datetime, lang: str) -> list[Clip]:
    weekday, month, day = _clip(f"weekday.{when.weekday()}"), _clip(f"month.{when.month}"), \
        _clip(f"ordinal.{when.day}")
    return [weekday, day, month] if lang == "de" else [weekday, month, day]


def clock(when: dt.datetime, lang: str) -> list[Clip]:
    if lang == "de":
        out = number(when.hour, lang) + [_clip("unit.oclock")]
        return out + (number(when.minute, lang) if when.minute else [])
    hour = when.hour % 12 or 12
    out = number(hour, lang)
    if when.minute == 0:
        out.append(_clip("unit.oclock"))
    elif when.minute < 10:
        out += [_clip("oh"), *number(when.minute, lang)]
    else:
        out += number(when.minute, lang)
    return out + [_clip("time.pm" if when.hour >= 12 else "time.am")]


def duration(seconds: float, lang: str) -> list[Clip]:
    """"one minute five seconds", "eine Minute fünf Sekunden"; under a second is "zero seconds"."""
    total = int(round(seconds))
    minutes, secs = divmod(total, 60)
    out: list[Clip] = []
    if minutes:
        out += number(minutes, lang, feminine=True) + [_clip(f"unit.minute.{'one' if minutes == 1 else 'many'}")]
    if secs or not minutes:
        out += number(secs, lang, feminine=True) + [_clip(f"unit.second.{'one' if secs == 1 else 'many'}")]
    return out


def phrase(name: str, lang: str, **slots: Any) -> list[Clip]:
    """The clips of catalogue sentence `name` with its slots filled (see the slot kinds below)."""
    text = catalogue.SENTENCES[name][lang]
    pieces = catalogue.parts(text)
    if len(pieces) == 1:
        return [_clip(name)]
    out: list[Clip] = []
    for index, piece in enumerate(pieces):
        if index % 2 == 0:
            if piece.strip(" ,"):
                out.append(_clip(f"{name}.{index // 2}"))
            continue
        value = slots.get(piece)
        if value is None:
            raise KeyError(f"{name}: slot {piece!r} needs a value")
        out += fill(piece, value, lang)
    return out


def text_of(clips: list[Clip], lang: str) -> str:
    """The words of a clip list, for espeak-ng to speak as one sentence (better prosody than joined clips)."""
    texts = catalogue.clips(lang)
    words = []
    for item in clips:
        if item.kind == "clip":
            words.append(texts.get(item.value, ""))
        elif item.kind == "text":
            words.append(item.value)
        elif words and not words[-1].endswith((",", ".")):
            words[-1] += ","  # a pause: digits are read "one, oh, oh, one"
    return " ".join(w for w in words if w).replace(" ,", ",").replace(" .", ".").replace(",,", ",").replace(",.", ".")


def fill(slot: str, value: Any, lang: str) -> list[Clip]:
    if slot in ("extension", "caller"):
        return digits(str(value))
    if slot == "count":
        return number(int(value), lang)
    if slot == "key":
        return key(str(value))
    if slot in ("label", "name"):
        return [Clip("text", str(value))]
    if slot == "date":
        return date(value, lang)
    if slot == "time":
        return clock(value, lang)
    if slot == "duration":
        return duration(float(value), lang)
    raise KeyError(f"unknown slot kind {slot!r}")


def count(kind: str, n: int, lang: str) -> list[Clip]:
    """"You have no / one / N new (saved) messages", with each language's grammar."""
    if n <= 0:
        return phrase(f"count.{kind}.none", lang)
    if n == 1:
        return phrase(f"count.{kind}.one", lang)
    return phrase(f"count.{kind}.many", lang, count=n)


def envelope(caller: str, received: float, seconds: float, lang: str, zone: Any = None) -> list[Clip]:
    """Who called (digit by digit), when (date and time in `zone`), how long."""
    sender = phrase("message.from", lang, caller=caller) if digits(caller) else phrase("message.from_unknown", lang)
    when = dt.datetime.fromtimestamp(received, zone or dt.UTC)
    return sender + phrase("message.received", lang, date=when, time=when) + \
        phrase("message.length", lang, duration=seconds)


def environment_voice_check() -> dict[str, bool]:
    """Which catalogue voices espeak-ng has (for `umedge prompts render` to explain a failure)."""
    if not available():
        return {lang: False for lang in catalogue.LANGUAGES}
    listed = subprocess.run([ESPEAK, "--voices"], capture_output=True, text=True, timeout=10,
                            env={**os.environ, "LC_ALL": "C.UTF-8"}).stdout
    names = {line.split()[1] for line in listed.splitlines()[1:] if len(line.split()) > 1}
    return {lang: voice in names for lang, voice in catalogue.VOICES.items()}


__all__ = ["Clip", "Renderer", "SpeechError", "count", "envelope", "phrase", "render_text", "to_pcm8k"]


def render_in_background(prompts: Any, languages: tuple[str, ...]) -> None:
    """First start: render the languages' missing clips in a thread (calls meanwhile render what they need)."""
    import threading

    from twisted.logger import Logger

    log = Logger(namespace="umedge.worker.prompts")
    renderer = prompts.renderer
    if renderer is None:
        return
    if not available():
        log.warn("{espeak} is not installed: callers hear tone prompts (install it, or set [worker] "
                 "prompts = \"tones\")", espeak=ESPEAK)
        prompts.spoken = False
        return

    def run() -> None:
        for lang in languages:
            try:
                rendered, _ = renderer.render(lang)
            except (SpeechError, OSError) as error:
                log.warn("prompts for {lang} not rendered: {error}", lang=lang, error=error)
                continue
            if rendered:
                log.info("prompts: {n} clip(s) rendered for {lang}", n=rendered, lang=lang)

    threading.Thread(target=run, name="umedge-prompts", daemon=True).start()
