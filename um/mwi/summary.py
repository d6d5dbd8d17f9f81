"""The message-summary body (RFC 3842 §5): what a phone's message-waiting light shows."""

from __future__ import annotations

CONTENT_TYPE = "application/simple-message-summary"
EVENT = "message-summary"


def body(new: int, old: int, account: str, urgent_new: int = 0, urgent_old: int = 0) -> bytes:
    """Messages-Waiting, Message-Account and the voice-message counts, CRLF lines."""
    lines = [f"Messages-Waiting: {'yes' if new else 'no'}", f"Message-Account: {account}",
             f"Voice-Message: {new}/{old} ({urgent_new}/{urgent_old})"]
    return ("\r\n".join(lines) + "\r\n").encode()


def parse(data: bytes) -> dict[str, str]:
    """Header-like lines of a summary body (for tests and for peers' NOTIFYs): name -> value."""
    found = {}
    for line in data.decode(errors="replace").splitlines():
        name, sep, value = line.partition(":")
        if sep:
            found[name.strip().lower()] = value.strip()
    return found


__all__ = ["CONTENT_TYPE", "EVENT", "body", "parse"]
