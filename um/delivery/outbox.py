"""The delivery outbox: files in the voicemail store, so a worker in any process can queue and a crash loses nothing.

    voicemail/.outbox/<id>.json        queued: {id, mailbox, queued, attempts, next, error, sending}
    voicemail/.outbox/dead/<id>.json   refused for good (5xx) or out of retry time; the voicemail stays playable
    voicemail/.outbox/sent/<id>.json   accepted by the server: {id, mailbox, email, delivered, message_id}

While `voicemail/.outbox/enabled` exists the worker creates a queue entry
when it commits a voicemail (um.worker.store); from then on only the delivery service (and `umedge
voicemail outbox retry`) rewrite it, always with a temp file and a rename, so
each entry is whole. `sending` is set before an attempt and cleared after it:
an entry found with `sending` set by a process that is gone was interrupted
(kill -9 mid-DATA) and is checked against the mail store before it is sent
again, so no mailbox gets it twice.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from um.worker.store import ID_PATTERN, OUTBOX_ON, VoicemailStore, atomic_write

MAX_ERROR = 300  # characters of a server's answer kept per entry


@dataclass
class Entry:
    id: str
    mailbox: str
    queued: float
    attempts: int = 0
    next: float = 0.0      # not before (epoch seconds)
    error: str = ""        # the last attempt's outcome
    sending: int = 0       # pid of the process sending it now; 0 when idle
    recorded: float = 0.0
    dead: float = 0.0      # when it went to dead letters

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _entry(path: Path) -> Entry | None:
    try:
        data = json.loads(path.read_bytes())
        if not isinstance(data, dict) or not ID_PATTERN.match(str(data.get("id"))):
            return None
        return Entry(str(data["id"]), str(data["mailbox"]), float(data.get("queued", 0)),
                     int(data.get("attempts", 0)), float(data.get("next", 0)), str(data.get("error", ""))[:MAX_ERROR],
                     int(data.get("sending", 0)), float(data.get("recorded", 0)), float(data.get("dead", 0)))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Outbox:
    """The queue, dead letters and sent records of one voicemail store."""

    def __init__(self, store: VoicemailStore) -> None:
        self.store = store
        self.root = store.outbox_dir
        self.dead_dir = self.root / "dead"
        self.sent_dir = self.root / "sent"

    @property
    def enabled(self) -> bool:
        return (self.root / OUTBOX_ON).exists()

    def enable(self) -> None:
        """Delivery is on: from now on every committed voicemail is queued (um.worker.store)."""
        for folder in (self.root, self.dead_dir, self.sent_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if not self.enabled:
            atomic_write(self.root / OUTBOX_ON, b"")

    def disable(self) -> None:
        """Delivery is off: new voicemails are not queued; what waits stays for when it is on again."""
        (self.root / OUTBOX_ON).unlink(missing_ok=True)

    # --- reading -----------------------------------------------------------------------------
    def _list(self, folder: Path) -> list[Entry]:
        if not folder.is_dir():
            return []
        found = [e for p in folder.glob("*.json") if ID_PATTERN.match(p.stem) and (e := _entry(p)) is not None]
        return sorted(found, key=lambda e: (e.queued, e.id))

    def queued(self) -> list[Entry]:
        return self._list(self.root)

    def dead(self) -> list[Entry]:
        return self._list(self.dead_dir)

    def sent(self) -> list[dict[str, Any]]:
        found = []
        if self.sent_dir.is_dir():
            for path in self.sent_dir.glob("*.json"):
                try:
                    record = json.loads(path.read_bytes())
                except (OSError, ValueError):
                    continue
                if isinstance(record, dict) and ID_PATTERN.match(str(record.get("id"))):
                    found.append(record)
        return found

    def stamp(self) -> int:
        """Changes when an entry is added or rewritten (the folder's mtime)."""
        try:
            return self.root.stat().st_mtime_ns
        except OSError:
            return 0

    # --- writing -----------------------------------------------------------------------------
    def _write(self, folder: Path, entry: Entry) -> None:
        atomic_write(folder / f"{entry.id}.json", json.dumps(entry.as_dict()).encode())

    def begin(self, entry: Entry) -> None:
        """Mark an attempt as under way (by this process) before the first byte goes out."""
        entry.sending = os.getpid()
        entry.attempts += 1
        self._write(self.root, entry)

    def retry_later(self, entry: Entry, error: str, initial: float, ceiling: float,
                    now: float | None = None) -> float:
        """A temporary failure: exponential backoff with full jitter (at least half the step). Returns the delay."""
        now = time.time() if now is None else now
        step = min(ceiling, initial * (2 ** max(0, entry.attempts - 1)))
        delay = random.uniform(step / 2, step)
        entry.next, entry.error, entry.sending = now + delay, error[:MAX_ERROR], 0
        self._write(self.root, entry)
        return delay

    def bury(self, entry: Entry, error: str) -> None:
        """A permanent failure: into dead letters (the voicemail itself stays in the store)."""
        entry.error, entry.sending, entry.dead = error[:MAX_ERROR], 0, time.time()
        self._write(self.dead_dir, entry)
        (self.root / f"{entry.id}.json").unlink(missing_ok=True)

    def delivered(self, entry: Entry, email: str, message_id: str) -> None:
        """The server took it: record it (the IMAP sync follows it), then drop the queue entry."""
        atomic_write(self.sent_dir / f"{entry.id}.json", json.dumps({
            "id": entry.id, "mailbox": entry.mailbox, "email": email, "delivered": time.time(),
            "message_id": message_id, "attempts": entry.attempts}).encode())
        (self.root / f"{entry.id}.json").unlink(missing_ok=True)

    def drop(self, entry: Entry) -> None:
        """Nothing to deliver (the voicemail was deleted first, or its mailbox has no email)."""
        (self.root / f"{entry.id}.json").unlink(missing_ok=True)

    def forget_sent(self, message_id: str) -> None:
        (self.sent_dir / f"{message_id}.json").unlink(missing_ok=True)

    def retry(self, message_id: str | None = None) -> list[str]:
        """Due now: one queued or dead message (by id), or every one (None). Returns the ids."""
        done = []
        for entry in self.queued():
            if message_id in (None, entry.id):
                entry.next = 0.0
                self._write(self.root, entry)
                done.append(entry.id)
        for entry in self.dead():
            if message_id in (None, entry.id):
                entry.next, entry.dead, entry.attempts = 0.0, 0.0, 0
                entry.queued = time.time()  # a fresh retry period
                self._write(self.root, entry)
                (self.dead_dir / f"{entry.id}.json").unlink(missing_ok=True)
                done.append(entry.id)
        return done

    def clean_temps(self, older_than: float = 60.0) -> None:
        """Temp files a crash left mid-write (whole entries are never temp files)."""
        now = time.time()
        for folder in (self.root, self.dead_dir, self.sent_dir):
            for path in folder.glob(".*.tmp") if folder.is_dir() else ():
                try:
                    if now - path.stat().st_mtime > older_than:
                        path.unlink()
                except OSError:
                    pass

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """What `umedge voicemail outbox --json` and the status page show."""
        now = time.time() if now is None else now
        queued, dead = self.queued(), self.dead()
        return {
            "queued": [{**e.as_dict(), "age": round(now - e.queued, 1)} for e in queued],
            "dead": [e.as_dict() for e in dead],
            "queue_size": len(queued),
            "oldest_age": round(now - min(e.queued for e in queued), 1) if queued else 0.0,
            "dead_count": len(dead),
            "enabled": self.enabled,
        }


__all__ = ["Entry", "Outbox", "pid_alive"]
