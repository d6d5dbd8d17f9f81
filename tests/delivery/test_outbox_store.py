"""The outbox's commit rules in the voicemail store: a voicemail is queued in the commit that stores it (before its
JSON, so every listed message is queued), a crash between the two is finished by recover() and queued, nothing is
queued while delivery is off, and the entry's retry state survives rewrites whole."""

from __future__ import annotations

import json
from pathlib import Path

from um.delivery.outbox import Outbox
from um.worker.store import VoicemailStore


def _record(store: VoicemailStore, mailbox: str = "1001") -> str:
    recording = store.start(mailbox, "PCMU", caller="sip:5550100@gw", caller_name="Gateway")
    recording.write(b"\xff" * 1600)
    return recording.commit("bye").id


def test_queued_in_the_commit_and_only_while_delivery_is_on(tmp_path: Path) -> None:
    store = VoicemailStore(tmp_path)
    outbox = Outbox(store)
    off = _record(store)
    assert outbox.queued() == [] and not outbox.root.exists()
    outbox.enable()
    on = _record(store)
    [entry] = outbox.queued()
    assert entry.id == on and entry.mailbox == "1001" and entry.attempts == 0
    assert {m.id for m in store.messages()} == {off, on}
    outbox.disable()  # [delivery] mode = "off" again: what waits stays, nothing new is queued
    _record(store)
    assert [e.id for e in outbox.queued()] == [on] and not outbox.snapshot()["enabled"]


def test_a_crash_between_wav_and_json_is_recovered_and_queued(tmp_path: Path) -> None:
    store = VoicemailStore(tmp_path)
    outbox = Outbox(store)
    outbox.enable()
    message_id = _record(store)
    (store.mailbox_dir("1001") / f"{message_id}.json").unlink()  # as if killed after the WAV's rename...
    (outbox.root / f"{message_id}.json").unlink()                  # ...and before the queue entry
    assert store.messages() == []
    done = store.recover()
    assert any("recovered" in line for line in done)
    assert [e.id for e in outbox.queued()] == [message_id]
    assert [m.id for m in store.messages()] == [message_id]


def test_recording_interrupted_is_queued_and_delivered_ones_are_not_queued_again(tmp_path: Path) -> None:
    store = VoicemailStore(tmp_path)
    outbox = Outbox(store)
    outbox.enable()
    recording = store.start("1002", "PCMA")
    recording.write(b"\xd5" * 800)  # the worker dies here: no commit
    store.recover()
    [entry] = outbox.queued()
    assert entry.mailbox == "1002"
    outbox.begin(entry)
    outbox.delivered(entry, "1002@example.test", "<x>")
    assert outbox.queued() == [] and [r["id"] for r in outbox.sent()] == [entry.id]
    store._queue(entry.id, "1002", 0.0)  # a second publish of the same message (recovery again): not re-queued
    assert outbox.queued() == []


def test_retry_state_and_dead_letters(tmp_path: Path) -> None:
    store = VoicemailStore(tmp_path)
    outbox = Outbox(store)
    outbox.enable()
    first, second = _record(store), _record(store, "1003")
    entries = {e.id: e for e in outbox.queued()}
    outbox.begin(entries[first])
    delay = outbox.retry_later(entries[first], "451 try later", initial=2.0, ceiling=60.0)
    assert 1.0 <= delay <= 2.0
    outbox.begin(entries[first])
    assert 2.0 <= outbox.retry_later(entries[first], "451 again", initial=2.0, ceiling=60.0) <= 4.0
    saved = json.loads((outbox.root / f"{first}.json").read_text())
    assert saved["attempts"] == 2 and saved["error"] == "451 again" and saved["sending"] == 0
    outbox.bury(entries[second], "550 no such user")
    assert [e.id for e in outbox.dead()] == [second] and [e.id for e in outbox.queued()] == [first]
    assert outbox.retry(second) == [second]
    assert outbox.dead() == [] and {e.id for e in outbox.queued()} == {first, second}
    snapshot = outbox.snapshot()
    assert snapshot["queue_size"] == 2 and snapshot["dead_count"] == 0 and snapshot["oldest_age"] >= 0
