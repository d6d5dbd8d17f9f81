"""One voicemail as one MIME message (email.message), the way Exchange UM mails it.

From the configured sender with the caller as display name, To the mailbox's
email, a localized subject ("Voice mail from +4930555123 (0:42)"), text and
HTML bodies, the WAV as stored (audio/wav) and, if asked, a compressed copy
made by the Debian encoder (lame for MP3, opusenc for Ogg Opus). The
Message-ID is derived from the voicemail's id and the node's domain, so the
same voicemail always has the same Message-ID: the IMAP sync finds it by it,
and a retry after a crash can be recognized.
"""

from __future__ import annotations

import datetime as dt
import html
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from um.worker import wav
from um.worker.store import Message

ENCODERS = {"mp3": ("lame", "audio/mpeg", "mp3"), "opus": ("opusenc", "audio/ogg", "opus")}
HEADER_ID = "X-Umedge-Voicemail-Id"

TEXT = {
    "en": {"subject": "Voice mail from {caller} ({duration})", "unknown": "an unknown caller",
           "body": "You received a voice mail from {caller} on {time} (UTC), {duration} long, for mailbox {mailbox}.",
           "caller": "Caller", "time": "Time (UTC)", "duration": "Duration", "mailbox": "Mailbox",
           "too_large": "The recording is too large to attach: listen to it by phone.", "urgent": "Urgent"},
    "de": {"subject": "Sprachnachricht von {caller} ({duration})", "unknown": "einem unbekannten Anrufer",
           "body": "Sie haben am {time} (UTC) eine Sprachnachricht von {caller} erhalten, Dauer {duration}, "
                   "für das Postfach {mailbox}.",
           "caller": "Anrufer", "time": "Zeit (UTC)", "duration": "Dauer", "mailbox": "Postfach",
           "too_large": "Die Aufnahme ist zu groß zum Anhängen: bitte per Telefon abhören.", "urgent": "Dringend"},
}


class EncodeError(RuntimeError):
    pass


@dataclass(frozen=True)
class Sender:
    address: str
    name: str
    domain: str  # right-hand side of the Message-ID


def message_id(voicemail_id: str, domain: str) -> str:
    return f"<{voicemail_id}.voicemail@{domain}>"


def caller_number(caller: str) -> str:
    """The number (or user) of a caller URI: sip:+4930555123@gw;user=phone -> +4930555123."""
    text = caller.strip().strip("<>")
    for scheme in ("sips:", "sip:", "tel:"):
        if text.lower().startswith(scheme):
            text = text[len(scheme):]
            break
    return text.split("@", 1)[0].split(";", 1)[0] or ""


def duration_text(seconds: float) -> str:
    whole = int(round(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


def encode(blob: bytes, audio_format: str, timeout: float = 60.0) -> bytes:
    """A compressed copy of a WAV by the Debian encoder (16-bit PCM in, MP3 or Ogg Opus out)."""
    tool, _, suffix = ENCODERS[audio_format]
    if shutil.which(tool) is None:
        raise EncodeError(f"{tool} is not installed (Debian package {'lame' if tool == 'lame' else 'opus-tools'})")
    pcm = wav.encode("L16", wav.decode(blob).as_pcm16())
    with tempfile.TemporaryDirectory(prefix="umedge-encode-") as folder:
        source, target = Path(folder) / "in.wav", Path(folder) / f"out.{suffix}"
        source.write_bytes(pcm)
        command = ([tool, "--quiet", "-b", "32", str(source), str(target)] if tool == "lame" else
                   [tool, "--quiet", "--bitrate", "24", str(source), str(target)])
        try:
            subprocess.run(command, check=True, timeout=timeout, capture_output=True, stdin=subprocess.DEVNULL)
            return target.read_bytes()
        except (OSError, subprocess.SubprocessError) as error:
            raise EncodeError(f"{tool} failed: {error}") from error


def build(voicemail: Message, blob: bytes, *, to: str, sender: Sender, language: str = "en",
          audio_format: str = "wav", max_bytes: int = 20 * 1024 * 1024, encoder_timeout: float = 60.0
          ) -> EmailMessage:
    """The MIME message for one voicemail; `blob` is its WAV file."""
    words = TEXT.get(language, TEXT["en"])
    number = caller_number(voicemail.caller)
    who = voicemail.caller_name or number or words["unknown"]
    shown = f"{voicemail.caller_name} ({number})" if voicemail.caller_name and number else who
    length = duration_text(voicemail.duration)
    when = dt.datetime.fromtimestamp(voicemail.timestamp, dt.UTC)
    facts = {"caller": shown, "time": when.strftime("%Y-%m-%d %H:%M:%S"), "duration": length,
             "mailbox": voicemail.mailbox}

    mail = EmailMessage()
    local, _, domain = sender.address.partition("@")
    display = shown if (voicemail.caller_name or number) else sender.name
    mail["From"] = Address(display_name=display, username=local, domain=domain)
    mail["To"] = to
    subject = words["subject"].format(caller=number or who, duration=length)
    mail["Subject"] = f"{words['urgent']}: {subject}" if voicemail.urgent else subject
    mail["Date"] = format_datetime(when)
    mail["Message-ID"] = message_id(voicemail.id, sender.domain)
    mail[HEADER_ID] = voicemail.id
    mail["X-Umedge-Caller-Id"] = number or "unknown"
    mail["X-Umedge-Duration"] = f"{voicemail.duration:.3f}"
    mail["X-Umedge-Mailbox"] = voicemail.mailbox
    mail["X-Umedge-Audio-SHA256"] = voicemail.sha256
    mail["Content-Language"] = language
    if voicemail.urgent:  # what mail clients show as high importance (RFC 2156 Importance, and X-Priority)
        mail["Importance"] = "high"
        mail["X-Priority"] = "1 (Highest)"
    too_large = len(blob) > max_bytes
    note = words["too_large"] if too_large else ""
    text = words["body"].format(**facts) + "\n\n" + "\n".join(
        f"{words[k]}: {facts[k]}" for k in ("caller", "time", "duration", "mailbox")) + "\n"
    mail.set_content(text + (f"\n{note}\n" if note else ""))
    rows = "".join(f"<tr><th align=left>{html.escape(words[k])}</th><td>{html.escape(facts[k])}</td></tr>"
                   for k in ("caller", "time", "duration", "mailbox"))
    mail.add_alternative(f"<html><body><p>{html.escape(words['body'].format(**facts))}</p>"
                         f"<table>{rows}</table>{f'<p>{html.escape(note)}</p>' if note else ''}</body></html>",
                         subtype="html")
    name = f"voicemail-{voicemail.id}"
    attachments = [(blob, "audio", "wav", f"{name}.wav")]
    if audio_format in ENCODERS and len(blob) < max_bytes:
        _, mime, suffix = ENCODERS[audio_format]
        compressed = encode(blob, audio_format, encoder_timeout)
        if len(blob) + len(compressed) < max_bytes:
            major, minor = mime.split("/")
            attachments.append((compressed, major, minor, f"{name}.{suffix}"))
    if too_large:
        attachments = []  # too large to mail: the phone still plays it
    for data, major, minor, filename in attachments:
        mail.add_attachment(data, maintype=major, subtype=minor, filename=filename)
    return mail


__all__ = ["HEADER_ID", "EncodeError", "Sender", "build", "caller_number", "duration_text", "encode", "message_id"]
