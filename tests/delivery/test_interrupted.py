"""A kill -9 between the server's 250 and the outbox's bookkeeping does not send the voicemail twice: the entry
still marked `sending` by a dead process is looked up in the mailbox over IMAP (Dovecot, master user) and, being
there, recorded as delivered instead of sent again. The window is microseconds wide, so the test puts the store
in that state itself (the message in the INBOX, the entry back in the queue marked by a dead pid)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import serving
from tests.delivery.mailstack import Dovecot
from tests.delivery.support import ROLES, lmtp_into, node_config, outbox
from um.delivery.outbox import Outbox
from um.worker.store import VoicemailStore
from um.worker.wav import RATE


def _dead_pid() -> int:
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_interrupted_after_acceptance_is_not_sent_again(tmp_path: Path, dovecot: Dovecot) -> None:
    files = node_config(tmp_path, lmtp_into(dovecot, 60))
    store = VoicemailStore(tmp_path / "state")
    box = Outbox(store)
    box.enable()
    recording = store.start("1001", "PCMU", caller="sip:+4930555123@gw", caller_name="")
    recording.write(b"\x7f" * RATE)
    message = recording.commit("bye")
    with serving(files, *ROLES):
        assert len(dovecot.wait_messages("1001", 1, timeout=5)) == 1
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not box.sent():
            time.sleep(0.1)
    [mail] = [m for _, _, m in dovecot.messages("1001")]
    assert mail["Subject"] == "Voice mail from +4930555123 (0:01)"

    # As if killed -9 after the 250: the sent record not written, the entry still marked by the dead sender.
    box.forget_sent(message.id)
    entry = {"id": message.id, "mailbox": "1001", "queued": time.time(), "attempts": 1, "next": 0,
             "error": "", "sending": _dead_pid(), "recorded": message.timestamp, "dead": 0}
    (box.root / f"{message.id}.json").write_text(json.dumps(entry))
    with serving(files, *ROLES) as process:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and outbox(files)["queue_size"]:
            time.sleep(0.1)
        assert outbox(files)["queue_size"] == 0
        assert [r["id"] for r in box.sent()] == [message.id]
        assert "found in the mailbox after an interrupted attempt" in process.stderr()
    assert len(dovecot.messages("1001")) == 1  # not twice

    # The same state with the message NOT in the mailbox (killed before the server took it): sent, once.
    [(uid, _, _)] = dovecot.messages("1001")
    dovecot.expunge("1001", uid)
    box.forget_sent(message.id)
    entry["sending"] = _dead_pid()
    (box.root / f"{message.id}.json").write_text(json.dumps(entry))
    with serving(files, *ROLES):
        found = dovecot.wait_messages("1001", 1, timeout=5)
        assert len(found) == 1 and found[0][2]["X-Umedge-Voicemail-Id"] == message.id
