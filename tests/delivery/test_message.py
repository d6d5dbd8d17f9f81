"""The MIME message of a voicemail (um.delivery.message): localized subject, caller as display name, escaped HTML,
a stable Message-ID, the WAV as stored, and the size limit."""

from __future__ import annotations

import email
from email.policy import default
from pathlib import Path

from um.delivery.message import Sender, build
from um.worker.store import VoicemailStore

SENDER = Sender("voicemail@example.test", "Voice Mail", "node1.example.test")


def _voicemail(tmp_path: Path, caller: str, name: str, seconds: float = 42.0) -> tuple[object, bytes]:
    store = VoicemailStore(tmp_path)
    recording = store.start("1001", "PCMA", caller=caller, caller_name=name)
    recording.write(b"\xd5" * int(8000 * seconds))
    message = recording.commit("bye")
    return message, store.wav_path(message).read_bytes()


def test_german_plan_escaped_name_and_stable_message_id(tmp_path: Path) -> None:
    voicemail, blob = _voicemail(tmp_path, "sip:+4930555123@gw.example.test;user=phone", "<b>Eve</b> & Co")
    mail = build(voicemail, blob, to="1001@example.test", sender=SENDER, language="de")  # type: ignore[arg-type]
    again = build(voicemail, blob, to="1001@example.test", sender=SENDER, language="de")  # type: ignore[arg-type]
    assert mail["Message-ID"] == again["Message-ID"] == f"<{voicemail.id}.voicemail@node1.example.test>"  # type: ignore[attr-defined]
    assert mail["Subject"] == "Sprachnachricht von +4930555123 (0:42)"
    parsed = email.message_from_bytes(mail.as_bytes(), policy=default)
    assert parsed["From"].addresses[0].display_name == "<b>Eve</b> & Co (+4930555123)"
    assert parsed["From"].addresses[0].addr_spec == "voicemail@example.test"
    html = parsed.get_body(("html",)).get_content()
    assert "&lt;b&gt;Eve&lt;/b&gt; &amp; Co" in html and "<b>Eve" not in html
    text = parsed.get_body(("plain",)).get_content()
    assert "Postfach 1001" in text and "0:42" in text
    [wav] = [p for p in parsed.iter_attachments() if p.get_content_type() == "audio/wav"]
    assert wav.get_content() == blob  # the WAV as stored (A-law here)
    assert parsed["X-Umedge-Duration"] == "42.000" and parsed["X-Umedge-Caller-Id"] == "+4930555123"


def test_unknown_caller_and_size_limit(tmp_path: Path) -> None:
    voicemail, blob = _voicemail(tmp_path, "", "", seconds=2.0)
    mail = build(voicemail, blob, to="1001@example.test", sender=SENDER, max_bytes=1000)  # type: ignore[arg-type]
    assert mail["Subject"] == "Voice mail from an unknown caller (0:02)"
    assert mail["From"] == "Voice Mail <voicemail@example.test>" and mail["X-Umedge-Caller-Id"] == "unknown"
    assert not list(mail.iter_attachments())  # too large to mail: the phone still plays it
    assert "too large to attach" in mail.get_body(("plain",)).get_content()


def test_an_urgent_voicemail_is_mailed_with_high_importance(tmp_path: Path) -> None:
    store = VoicemailStore(tmp_path)
    recording = store.start("1001", "PCMU", caller="sip:5550100@gw", urgent=True)
    recording.write(b"\xff" * 8000)
    urgent = recording.commit("bye")
    mail = build(urgent, store.wav_path(urgent).read_bytes(), to="1001@example.test", sender=SENDER)
    assert mail["Subject"] == "Urgent: Voice mail from 5550100 (0:01)"
    assert mail["Importance"] == "high" and mail["X-Priority"] == "1 (Highest)"
    german = build(urgent, store.wav_path(urgent).read_bytes(), to="1001@example.test", sender=SENDER,
                   language="de")
    assert german["Subject"].startswith("Dringend: ")
    plain, blob = _voicemail(tmp_path, "sip:5550101@gw", "")
    normal = build(plain, blob, to="1001@example.test", sender=SENDER)  # type: ignore[arg-type]
    assert normal["Importance"] is None and normal["X-Priority"] is None and not normal["Subject"].startswith("Urgent")
