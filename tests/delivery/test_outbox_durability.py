"""The outbox loses nothing and sends nothing twice: 20 SIPp voicemails while the MTA (Postfix, STARTTLS + AUTH,
relaying to Dovecot) is stopped, umedge killed -9 once while it is down and once while the queue drains; after
both are back exactly 20 messages are in 1001's INBOX with 20 distinct Message-IDs, `umedge voicemail outbox
--json` shows the queue draining, and the one voicemail for a recipient the MTA refuses (550) is exactly the one
in dead letters (still playable on the phone). Backoff is shortened ([delivery] retry_initial_seconds 0.5,
retry_max_seconds 2) and the MTA is down for ~15 s instead of 2 minutes: the property (attempts fail, the
queue holds, a kill -9 loses nothing) is the same, many retries happen during the outage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_TOOLS, umedge
from tests.delivery.mailstack import RELAY_PASSWORD, RELAY_USER, Dovecot, Postfix, skip_reason
from tests.delivery.support import Calls, imap_keys, node_config, outbox, started, together, voicemails
from tests.sip.sipp_tools import sipp_available

needs_sipp = pytest.mark.skipif(not sipp_available() and not REQUIRE_TOOLS, reason="sipp (Debian sip-tester) missing")


@pytest.fixture
def stack() -> Iterator[tuple[Dovecot, Postfix]]:
    reason = skip_reason("dovecot", "postfix")
    if reason:
        pytest.skip(reason)
    dovecot = Dovecot(users=("1001", "1002")).start()
    mta = Postfix(dovecot).setup()
    try:
        yield dovecot, mta
    finally:
        mta.cleanup()
        dovecot.stop()


@needs_sipp
def test_mta_down_and_two_kills_lose_nothing_and_send_nothing_twice(tmp_path: Path,
                                                                    stack: tuple[Dovecot, Postfix]) -> None:
    dovecot, mta = stack
    (tmp_path / "smtp-password").write_text(RELAY_PASSWORD + "\n")
    files = node_config(tmp_path, {
        "mode": "smtp", "host": "127.0.0.1", "port": mta.port, "starttls": "required", "username": RELAY_USER,
        "password_file": str(tmp_path / "smtp-password"), "ca_file": str(mta.ca_file),
        "retry_initial_seconds": 0.5, "retry_max_seconds": 2, "timeout": 5, **imap_keys(dovecot, 2)})
    to_1001 = Calls(tmp_path, files, seconds=0.8, called="1001", wait_ms=1500)
    to_unknown = Calls(tmp_path, files, seconds=0.8, called="1009", wait_ms=1500)  # the MTA says 550
    queue_dir = tmp_path / "state" / "voicemail" / ".outbox"
    process = started(files)
    try:
        together(lambda: to_1001.run(calls=10, rate=10), to_unknown.run)
        waiting = outbox(files)
        assert waiting["queue_size"] == 11 and waiting["dead_count"] == 0
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not all(e["attempts"] for e in outbox(files)["queued"]):
            time.sleep(0.2)
        tried = outbox(files)["queued"]
        assert all(e["attempts"] >= 1 and "cannot deliver" in e["error"] for e in tried), tried

        process.kill()  # kill -9 while the MTA is down
        process = started(files)
        to_1001.run(calls=10, rate=10)
        assert outbox(files)["queue_size"] == 21
        assert len(voicemails(files)) == 21

        sizes = []
        mta.start()  # the MTA is back: the queue drains...
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            left = len(list(queue_dir.glob("*.json")))
            sizes.append(left)
            if left < 21:
                break
            time.sleep(0.02)
        process.kill()  # ...and umedge is killed -9 in the middle of it
        assert sizes[-1] < 21, sizes
        process = started(files)
        deadline = time.monotonic() + 30
        drained = []
        while time.monotonic() < deadline:
            state = outbox(files)
            drained.append(state["queue_size"])
            if state["queue_size"] == 0:
                break
            time.sleep(0.3)
        assert drained[-1] == 0, drained
        found = dovecot.wait_messages("1001", 20, timeout=15)
        ids = [mail["Message-ID"] for _, _, mail in found]
        assert len(found) == 20 and len(set(ids)) == 20, ids  # exactly 20, no duplicates
        stored = {m["id"] for m in voicemails(files) if m["mailbox"] == "1001"}
        assert {mail["X-Umedge-Voicemail-Id"] for _, _, mail in found} == stored

        final = outbox(files)
        [dead] = final["dead"]  # exactly the one for the refused recipient
        assert dead["mailbox"] == "1009" and dead["error"].startswith("550"), dead
        assert any(m["id"] == dead["id"] for m in voicemails(files))  # still playable on the phone
        retried = umedge("voicemail", "outbox", "retry", dead["id"], "--config", str(files.path))
        assert retried.returncode == 0 and dead["id"] in retried.stdout
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and outbox(files)["dead_count"] != 1:
            time.sleep(0.2)
        again = outbox(files)
        assert again["dead_count"] == 1 and again["dead"][0]["attempts"] == 1  # refused again, for good
        assert "Traceback" not in process.stderr()
    finally:
        process.kill()
