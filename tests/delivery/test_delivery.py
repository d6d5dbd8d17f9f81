"""A SIPp voicemail call to mailbox 1001 becomes one message in 1001's IMAP INBOX (Dovecot, read back with
imaplib) within 5 s, with the recorded audio attached sample for sample: over LMTP straight into Dovecot, and
over SMTP through Postfix with STARTTLS + AUTH relaying to Dovecot's LMTP. A compressed copy comes from the
Debian encoder (opusenc / lame) when [delivery] audio_format asks. Read state follows the mailbox."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_TOOLS, serving
from tests.delivery.mailstack import RELAY_PASSWORD, RELAY_USER, Dovecot, Postfix, skip_reason
from tests.delivery.support import ROLES, Calls, attachment, lmtp_into, node_config, outbox, voicemails, wav_of
from tests.sip.sipp_tools import sipp_available

needs_sipp = pytest.mark.skipif(not sipp_available() and not REQUIRE_TOOLS, reason="sipp (Debian sip-tester) missing")


def _check_message(dovecot: Dovecot, calls: Calls, files: object, started: float) -> object:
    found = dovecot.wait_messages("1001", 1, timeout=5 + (time.monotonic() - started))
    assert len(found) == 1, dovecot.log()
    uid, flags, mail = found[0]
    [stored] = voicemails(files)  # type: ignore[arg-type]
    assert mail["X-Umedge-Voicemail-Id"] == stored["id"]
    assert mail["Message-ID"] == f"<{stored['id']}.voicemail@node1.umedge.test>"
    assert mail["To"] == "1001@example.test"
    assert mail["Subject"] == "Voice mail from 5550100 (0:02)"
    assert "5550100" in mail["From"] and "SIPp gateway" in mail["From"]
    assert mail["X-Umedge-Caller-Id"] == "5550100"
    audio = wav_of(mail)
    assert audio.codec == "PCMU" and audio.rate == 8000
    assert audio.data == calls.audio  # the recorded audio, sample for sample
    assert "\\Seen" not in flags
    return mail


@needs_sipp
def test_lmtp_into_dovecot_with_opus_copy_and_read_state_both_ways(tmp_path: Path, dovecot: Dovecot) -> None:
    files = node_config(tmp_path, lmtp_into(dovecot, 0.5, audio_format="opus"))
    calls = Calls(tmp_path, files, seconds=1.5)
    with serving(files, *ROLES) as process:
        calls.run()
        ended = time.monotonic()
        mail = _check_message(dovecot, calls, files, ended)
        opus = attachment(mail, "audio/ogg")  # type: ignore[arg-type]
        assert opus is not None and opus.startswith(b"OggS") and b"OpusHead" in opus[:100]
        assert outbox(files)["queue_size"] == 0

        # Read in the mail client -> heard for the phone menu (the store's read flag).
        [(uid, _, _)] = dovecot.messages("1001")
        dovecot.set_seen("1001", uid)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and not voicemails(files)[0]["read"]:
            time.sleep(0.1)
        assert voicemails(files)[0]["read"] is True

        # Unread again in the client, then heard on the phone (the store's API the phone menu uses) -> \Seen.
        dovecot.set_seen("1001", uid, False)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and voicemails(files)[0]["read"]:
            time.sleep(0.1)
        assert voicemails(files)[0]["read"] is False
        from um.worker.store import VoicemailStore

        store = VoicemailStore(files.path.parent / "state")
        store.mark_read(store.messages("1001")[0])
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and "\\Seen" not in dovecot.messages("1001")[0][1]:
            time.sleep(0.1)
        assert "\\Seen" in dovecot.messages("1001")[0][1]

        # Deleted in the mail client -> no longer offered on the phone.
        dovecot.expunge("1001", uid)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and voicemails(files):
            time.sleep(0.1)
        assert voicemails(files) == []
        assert "Traceback" not in process.stderr()


@needs_sipp
def test_smtp_through_postfix_with_starttls_auth_and_mp3_copy(tmp_path: Path, dovecot: Dovecot) -> None:
    reason = skip_reason("postfix")
    if reason:
        pytest.skip(reason)
    mta = Postfix(dovecot).setup()
    (tmp_path / "smtp-password").write_text(RELAY_PASSWORD + "\n")
    files = node_config(tmp_path, {
        "mode": "smtp", "host": "127.0.0.1", "port": mta.port, "starttls": "required", "username": RELAY_USER,
        "password_file": str(tmp_path / "smtp-password"), "ca_file": str(mta.ca_file), "audio_format": "mp3",
        "from_address": "voicemail@umedge.test"})
    calls = Calls(tmp_path, files, seconds=1.5)
    try:
        mta.start()
        with serving(files, *ROLES) as process:
            calls.run()
            mail = _check_message(dovecot, calls, files, time.monotonic())
            mp3 = attachment(mail, "audio/mpeg")  # type: ignore[arg-type]
            assert mp3 is not None and (mp3.startswith(b"ID3") or (mp3[0] == 0xFF and mp3[1] & 0xE0 == 0xE0))
            assert "sasl_username=relay@example.test" in mta.log()  # AUTH, after STARTTLS (tls_auth_only)
            assert "Traceback" not in process.stderr()
    finally:
        mta.cleanup()
