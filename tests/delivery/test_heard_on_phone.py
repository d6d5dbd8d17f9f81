"""Heard on the phone = \\Seen in the mailbox: a delivered voicemail played to the end in subscriber access (the
phone menu, RFC 4733 DTMF for the PIN) is flagged \\Seen in 1001's INBOX (Dovecot, read back with imaplib)
within imap_poll_seconds + 1 s."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.conftest import serving, umedge
from tests.delivery.mailstack import Dovecot
from tests.delivery.support import ROLES, lmtp_into, node_config
from tests.worker.caller import Caller, sdp_offer, sine_payloads
from um.delivery.outbox import Outbox
from um.worker.store import VoicemailStore

PIN = "864213"
POLL = 1.0


async def listen_to_new_messages(router_port: int, store: VoicemailStore) -> None:
    caller = Caller(user="1001")  # the caller ID names the mailbox: only the PIN is asked
    _, port = await caller.redirect(router_port, "5001", "5001")
    rtp = await caller.open_direct()
    answer = await caller.call(port, "5001", "5001", sdp_offer("127.0.0.1", rtp, codecs=("PCMU",)))
    assert answer.status == 200, answer.reason
    await asyncio.sleep(0.5)
    await caller.send_digits(PIN + "#")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not store.messages("1001")[0].read:
        await asyncio.sleep(0.1)
    await caller.bye()
    await caller.close()


def test_heard_on_the_phone_sets_seen_in_imap(tmp_path: Path, dovecot: Dovecot) -> None:
    files = node_config(tmp_path, lmtp_into(dovecot, POLL))
    store = VoicemailStore(tmp_path / "state")
    Outbox(store).enable()
    recording = store.start("1001", "PCMU", caller="sip:4711@127.0.0.1")
    recording.write(b"".join(sine_payloads(1.0, seed=5)))
    recording.commit("bye")
    assert umedge("voicemail", "pin-reset", "1001", "--pin", PIN, "--config", str(files.path)).returncode == 0
    with serving(files, *ROLES):
        [(_, flags, _)] = dovecot.wait_messages("1001", 1, timeout=5)
        assert "\\Seen" not in flags
        time.sleep(POLL + 0.5)  # the sync has seen it unread in the mailbox
        asyncio.run(listen_to_new_messages(files.port("callrouter", "sip_tcp_port"), store))
        assert store.messages("1001")[0].read, "the phone menu did not play the message to the end"
        heard_at = time.monotonic()
        while time.monotonic() - heard_at < POLL + 1.0 and "\\Seen" not in dovecot.messages("1001")[0][1]:
            time.sleep(0.1)
        assert "\\Seen" in dovecot.messages("1001")[0][1]
