"""The voicemail store under `[node] state_dir`/voicemail: one WAV and one JSON per message.

    voicemail/.tmp/<id>.wav.part    a recording in progress (header completed at commit)
    voicemail/.tmp/<id>.meta        who it is for and from, written when the recording starts
    voicemail/<mailbox>/<id>.wav    G.711 audio as received (WAVE_FORMAT_MULAW/ALAW)
    voicemail/<mailbox>/<id>.json   caller, called mailbox, time, duration, codec, size, SHA-256, read
    voicemail/.outbox/<id>.json     queued for delivery to the mailbox's email (while .outbox/enabled exists)

Crash safety: audio is written to a temp file in .tmp (same file system);
commit completes the header, fsyncs and renames it to <id>.wav, then writes
the JSON the same way (temp, fsync, rename) and fsyncs the directory; the
worker answers the caller's BYE only after that. A message is listed only
once its JSON exists, and the JSON only exists for a complete WAV, so
nothing torn is ever listed. `recover()`, when a worker starts, finishes
what a crash interrupted instead of throwing it away: a WAV renamed into
place whose JSON never came gets its JSON, and a recording in progress
becomes a message of the length it had (reason "interrupted"). Only what
cannot be read or attributed to a mailbox is removed.

The outbox (um.delivery): while `voicemail/.outbox/enabled` exists (the
delivery service creates it when `[delivery] mode` is on), publishing a message also
queues it there, after its WAV and before its JSON; so every listed message
was queued, a crash between the two is finished by `recover()` (which
publishes again and queues again if need be), and a worker in another process
needs no callback: the parent watches the directory. The entry names only the
message; the delivery service owns its retry state. Read state and deletion
go through `mark_read` / `set_read` / `delete` here, whoever calls them (the
phone menu in the worker, the IMAP sync in the parent); every change renames
or unlinks a file in the mailbox's folder, so the folder's mtime (`stamp`)
tells a watcher something changed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

from um.worker import wav

ID_PATTERN = re.compile(r"^[0-9]{8}T[0-9]{6}Z-[0-9a-f]{8}$")
MAILBOX_PATTERN = re.compile(r"^[0-9A-Za-z+][0-9A-Za-z+._-]{0,63}$")


class StoreError(Exception):
    pass


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, tmp_dir: Path | None = None, mode: int = 0o640) -> None:
    """Write `data` to a temp file, fsync it, rename it over `path`, fsync the directory."""
    tmp_dir = tmp_dir or path.parent
    tmp_dir.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_dir / f".{path.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
    fsync_dir(path.parent)


def check_mailbox(mailbox: str) -> str:
    if not isinstance(mailbox, str) or not MAILBOX_PATTERN.match(mailbox):
        raise StoreError(f"mailbox {mailbox!r}: allowed digits, letters, '+', '.', '_', '-' (1-64)")
    return mailbox


def check_id(message_id: str) -> str:
    if not isinstance(message_id, str) or not ID_PATTERN.match(message_id):
        raise StoreError(f"message id {message_id!r}: allowed YYYYMMDDTHHMMSSZ-xxxxxxxx")
    return message_id


@dataclass
class Message:
    id: str
    mailbox: str
    caller: str
    caller_name: str
    time: str          # ISO 8601, UTC
    timestamp: float
    duration: float    # seconds
    codec: str         # PCMU or PCMA
    bytes: int         # audio bytes (one per sample)
    sha256: str        # of the WAV file
    call_id: str = ""
    read: bool = False
    reason: str = ""   # what ended the recording: bye, hash, silence, max-length
    urgent: bool = False  # the call asked for it (SIP Priority: urgent or emergency)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Recording:
    """One message being recorded: audio appended to a temp file; commit() makes it a message."""

    def __init__(self, store: VoicemailStore, mailbox: str, codec: str, caller: str = "", caller_name: str = "",
                 call_id: str = "", urgent: bool = False) -> None:
        self.store, self.mailbox, self.codec = store, check_mailbox(mailbox), codec
        self.caller, self.caller_name, self.call_id, self.urgent = caller, caller_name, call_id, urgent
        self.started = time.time()
        self.id = dt.datetime.fromtimestamp(self.started, dt.UTC).strftime("%Y%m%dT%H%M%SZ") + \
            "-" + secrets.token_hex(4)
        store.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_path = store.tmp_dir / f"{self.id}.wav.part"
        self.meta_path = store.tmp_dir / f"{self.id}.meta"
        meta = {"mailbox": self.mailbox, "codec": codec, "caller": caller, "caller_name": caller_name,
                "call_id": call_id, "started": self.started, "urgent": urgent}
        atomic_write(self.meta_path, json.dumps(meta).encode())  # before any audio: recover() can attribute it
        self._file: BinaryIO | None = open(self.tmp_path, "wb")
        self._file.write(wav.header(codec, 0))  # completed at commit
        self.samples = 0
        self.closed = False

    @property
    def duration(self) -> float:
        return self.samples / wav.RATE

    def write(self, audio: bytes) -> None:
        if self._file is not None:
            self._file.write(audio)
            self._file.flush()  # in the kernel at once: a crashed worker's recording keeps what it had
            self.samples += len(audio)

    def abort(self) -> None:
        """Drop the recording (too short, or the worker is stopping)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self.closed = True
        self.tmp_path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)

    def commit(self, reason: str = "", keep: int | None = None) -> Message:
        """Complete the WAV (first `keep` samples), fsync, rename; then the JSON the same way. Blocking."""
        handle = self._file
        if handle is None:
            raise StoreError("recording already closed")
        self._file = None
        self.closed = True
        try:
            if keep is not None and 0 <= keep < self.samples:
                handle.flush()
                handle.truncate(wav.HEADER_BYTES + keep)
                handle.seek(0, 2)
                self.samples = keep
            _complete_header(handle, self.codec, self.samples)
            handle.close()
            message = self.store._publish(self.tmp_path, self.id, self.mailbox, self.codec, self.samples, reason,
                                          self.caller, self.caller_name, self.call_id, self.started,
                                          urgent=self.urgent)
            self.meta_path.unlink(missing_ok=True)
            return message
        except BaseException:
            handle.close()
            self.tmp_path.unlink(missing_ok=True)
            self.meta_path.unlink(missing_ok=True)
            raise


def _complete_header(handle: BinaryIO, codec: str, samples: int) -> None:
    """Pad the data to a word (RIFF chunks are word aligned), write the real header, fsync."""
    if samples & 1:
        handle.seek(0, 2)
        handle.write(b"\x00")
    handle.seek(0)
    handle.write(wav.header(codec, samples))
    handle.flush()
    os.fsync(handle.fileno())


OUTBOX = ".outbox"
OUTBOX_ON = "enabled"  # in OUTBOX: delivery is on, commits queue


class VoicemailStore:
    def __init__(self, state_dir: str | Path) -> None:
        self.root = Path(state_dir) / "voicemail"
        self.tmp_dir = self.root / ".tmp"
        self.outbox_dir = self.root / OUTBOX

    def _queue(self, message_id: str, mailbox: str, started: float) -> None:
        """Queue a message for delivery (before its JSON exists), unless delivery is off or it is queued."""
        outbox = self.outbox_dir
        if not (outbox / OUTBOX_ON).exists():
            return
        entry = outbox / f"{message_id}.json"
        if entry.exists() or (outbox / "dead" / entry.name).exists() or (outbox / "sent" / entry.name).exists():
            return
        atomic_write(entry, json.dumps({"id": message_id, "mailbox": mailbox, "queued": time.time(),
                                        "recorded": started}).encode())

    def mailbox_dir(self, mailbox: str) -> Path:
        return self.root / check_mailbox(mailbox)

    def _publish(self, audio: Path, message_id: str, mailbox: str, codec: str, samples: int, reason: str,
                 caller: str, caller_name: str, call_id: str, started: float, *, urgent: bool = False) -> Message:
        """Rename a completed WAV into its mailbox (unless it is there already), then write its JSON."""
        folder = self.mailbox_dir(mailbox)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{message_id}.wav"
        if audio != target:
            os.replace(audio, target)
            fsync_dir(folder)
        self._queue(message_id, mailbox, started)
        digest = hashlib.sha256(target.read_bytes()).hexdigest()
        message = Message(message_id, mailbox, caller, caller_name,
                          dt.datetime.fromtimestamp(started, dt.UTC).isoformat(timespec="seconds"),
                          started, round(samples / wav.RATE, 3), codec, samples, digest, call_id, False, reason,
                          urgent)
        atomic_write(folder / f"{message_id}.json", json.dumps(message.as_dict(), indent=1).encode(), self.tmp_dir)
        return message

    def _meta(self, message_id: str, any_slot: bool = False) -> dict[str, Any] | None:
        """A recording's sidecar from this store's .tmp (`any_slot`: or any worker slot's .tmp-slotN)."""
        path = self.tmp_dir / f"{message_id}.meta"
        if any_slot and not path.exists():
            path = next(self.root.glob(f".tmp*/{message_id}.meta"), path)
        try:
            meta = json.loads(path.read_text())
            check_mailbox(meta["mailbox"])
            return meta if isinstance(meta, dict) else None
        except (OSError, ValueError, TypeError, KeyError, StoreError):
            return None

    def recover(self, folders: bool = True) -> list[str]:
        """Finish what a crash interrupted (see the module's docstring). Returns one line per file handled.

        `folders`: also finish every message published without its JSON. Only the node's main process does
        that, before its worker processes start: a worker process starting next to a running one would
        take the other's message between its WAV and its JSON for a crash's leftover. Without it, only the
        messages this store's own .tmp still holds the sidecar of (its slot's: a worker process replacing
        one killed between the WAV and the JSON) are finished."""
        done: list[str] = []
        if not folders and self.tmp_dir.is_dir():
            for meta_path in sorted(self.tmp_dir.glob("*.meta")):
                meta = self._meta(meta_path.stem) if ID_PATTERN.match(meta_path.stem) else None
                published = self.root / meta["mailbox"] / f"{meta_path.stem}.wav" if meta else None
                if meta and published is not None and published.exists() \
                        and not published.with_suffix(".json").exists():
                    done.append(self._recover_published(meta["mailbox"], published))
        if folders and self.root.is_dir():
            for folder in self.root.iterdir():
                if not folder.is_dir() or folder.name.startswith("."):
                    continue
                for path in folder.glob("*.wav"):  # renamed into place, its JSON never written
                    if ID_PATTERN.match(path.stem) and not path.with_suffix(".json").exists():
                        done.append(self._recover_published(folder.name, path))
                for path in folder.glob(".*.tmp"):
                    path.unlink(missing_ok=True)
                    done.append(f"removed {path}")
        if self.tmp_dir.is_dir():
            for path in sorted(self.tmp_dir.glob("*.wav.part")):
                done.append(self._recover_recording(path))
            for path in self.tmp_dir.iterdir():  # sidecars of finished messages, temp files of atomic writes
                path.unlink(missing_ok=True)
                done.append(f"removed {path}")
        return done

    def _recover_published(self, mailbox: str, path: Path) -> str:
        message_id = path.stem
        try:
            audio = wav.read(path)
        except (OSError, wav.WavError):
            path.unlink(missing_ok=True)
            return f"removed {path} (unreadable)"
        meta = self._meta(message_id, any_slot=True) or {}  # a worker process's own, if it wrote it
        started = float(meta.get("started") or dt.datetime.strptime(message_id[:16], "%Y%m%dT%H%M%SZ").replace(
            tzinfo=dt.UTC).timestamp())
        self._publish(path, message_id, mailbox, audio.codec, len(audio.data), "recovered", str(meta.get("caller", "")),
                      str(meta.get("caller_name", "")), str(meta.get("call_id", "")), started,
                      urgent=bool(meta.get("urgent")))
        return f"recovered {path}"

    def _recover_recording(self, path: Path) -> str:
        message_id = path.name.removesuffix(".wav.part")
        meta = self._meta(message_id) if ID_PATTERN.match(message_id) else None
        try:
            samples = path.stat().st_size - wav.HEADER_BYTES
        except OSError:
            samples = 0
        if meta is None or samples <= 0 or meta.get("codec") not in wav.TAG_OF:
            path.unlink(missing_ok=True)
            return f"removed {path} (no audio, or no record of whom it was for)"
        with open(path, "r+b") as handle:
            handle.truncate(wav.HEADER_BYTES + samples)
            _complete_header(handle, meta["codec"], samples)
        self._publish(path, message_id, meta["mailbox"], meta["codec"], samples, "interrupted",
                      str(meta.get("caller", "")), str(meta.get("caller_name", "")), str(meta.get("call_id", "")),
                      float(meta.get("started", time.time())), urgent=bool(meta.get("urgent")))
        return f"recovered {path} ({samples / wav.RATE:.2f}s, interrupted)"

    def start(self, mailbox: str, codec: str, caller: str = "", caller_name: str = "",
              call_id: str = "", urgent: bool = False) -> Recording:
        return Recording(self, mailbox, codec, caller, caller_name, call_id, urgent)

    def _load(self, path: Path) -> Message | None:
        try:
            data = json.loads(path.read_text())
            message = Message(**{k: data[k] for k in Message.__dataclass_fields__ if k in data})
        except (OSError, ValueError, TypeError, KeyError):
            return None
        return message if path.with_suffix(".wav").exists() else None

    def messages(self, mailbox: str | None = None) -> list[Message]:
        """Every whole message (of one mailbox), oldest first."""
        if not self.root.is_dir():
            return []
        folders = [self.mailbox_dir(mailbox)] if mailbox else [
            f for f in self.root.iterdir() if f.is_dir() and not f.name.startswith(".")]
        found = []
        for folder in folders:
            if not folder.is_dir():
                continue
            for path in folder.glob("*.json"):
                if ID_PATTERN.match(path.stem):
                    message = self._load(path)
                    if message is not None:
                        found.append(message)
        return sorted(found, key=lambda m: (m.timestamp, m.id))

    def counts(self, mailbox: str) -> tuple[int, int]:
        """(new, total) messages of a mailbox."""
        messages = self.messages(mailbox)
        return sum(1 for m in messages if not m.read), len(messages)

    def find(self, message_id: str) -> Message:
        check_id(message_id)
        if self.root.is_dir():
            for path in self.root.glob(f"*/{message_id}.json"):
                message = self._load(path)
                if message is not None:
                    return message
        raise StoreError(f"no message {message_id}")

    def wav_path(self, message: Message) -> Path:
        return self.mailbox_dir(message.mailbox) / f"{message.id}.wav"

    def audio(self, message: Message) -> wav.Wav:
        return wav.read(self.wav_path(message))

    def verify(self, message: Message) -> bool:
        """The WAV is whole: its SHA-256 matches and its data chunk holds `bytes` samples."""
        blob = self.wav_path(message).read_bytes()
        if hashlib.sha256(blob).hexdigest() != message.sha256:
            return False
        return len(wav.decode(blob).data) == message.bytes

    def mark_read(self, message: Message, read: bool = True) -> None:
        """Heard (or not): rewrites the message's JSON (the MWI and the IMAP sync see the folder change)."""
        message.read = read
        atomic_write(self.mailbox_dir(message.mailbox) / f"{message.id}.json",
                     json.dumps(message.as_dict(), indent=1).encode(), self.tmp_dir)

    def set_read(self, mailbox: str, message_id: str, read: bool) -> bool:
        """Set one message's read state from outside the worker (the IMAP sync); False if it is gone."""
        message = self._load(self.mailbox_dir(mailbox) / f"{check_id(message_id)}.json")
        if message is None:
            return False
        if message.read != read:
            self.mark_read(message, read)
        return True

    def stamp(self, mailbox: str) -> int:
        """Changes whenever a message of the mailbox is stored, read or deleted (the folder's mtime)."""
        try:
            return self.mailbox_dir(mailbox).stat().st_mtime_ns
        except OSError:
            return 0

    def summary(self, mailbox: str) -> tuple[int, int, int, int]:
        """(new, old, urgent new, urgent old) messages of a mailbox: what message-waiting indication reports."""
        messages = self.messages(mailbox)
        new = sum(1 for m in messages if not m.read)
        urgent_new = sum(1 for m in messages if m.urgent and not m.read)
        urgent_old = sum(1 for m in messages if m.urgent and m.read)
        return new, len(messages) - new, urgent_new, urgent_old

    def delete(self, message: Message) -> None:
        folder = self.mailbox_dir(message.mailbox)
        (folder / f"{message.id}.json").unlink(missing_ok=True)
        (folder / f"{message.id}.wav").unlink(missing_ok=True)
        fsync_dir(folder)

    def export(self, message_id: str, target: Path, pcm16: bool = False) -> Message:
        """Copy a message's WAV to `target` (as stored, or decoded to 16-bit PCM), atomically."""
        message = self.find(message_id)
        audio = self.audio(message)
        blob = wav.encode("L16", audio.as_pcm16()) if pcm16 else wav.encode(audio.codec, audio.data)
        atomic_write(target.resolve(), blob)
        return message

    def __iter__(self) -> Iterator[Message]:
        return iter(self.messages())
