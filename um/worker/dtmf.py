"""DTMF as RFC 4733 telephone-events, sans-I/O: decode digits from packets, encode packets for a digit.

A digit is reported once, on the first packet of its event (an event is
identified by its RTP timestamp), so a lost end packet or the three
redundant end packets (§2.5.1.4) change nothing.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

EVENTS = "0123456789*#ABCD"


@dataclass(frozen=True)
class Event:
    digit: str
    end: bool
    volume: int
    duration: int  # timestamp units


def parse_event(payload: bytes) -> Event | None:
    if len(payload) < 4:
        return None
    event, flags, duration = struct.unpack("!BBH", payload[:4])
    if event >= len(EVENTS):
        return None  # flash, tones and other events are not digits
    return Event(EVENTS[event], bool(flags & 0x80), flags & 0x3F, duration)


class DtmfDecoder:
    def __init__(self) -> None:
        self._seen: list[int] = []  # timestamps of recent events (a short memory is enough)

    def feed(self, timestamp: int, payload: bytes) -> str | None:
        """The digit a telephone-event packet starts, or None (a continuation, a repeat, not a digit)."""
        event = parse_event(payload)
        if event is None or timestamp in self._seen:
            return None
        self._seen.append(timestamp)
        del self._seen[:-16]
        return event.digit


def event_payloads(digit: str, duration_ms: int = 100, volume: int = 10, ptime: int = 20,
                   rate: int = 8000) -> list[tuple[bytes, bool]]:
    """(payload, marker) for each packet of one digit: updates every ptime, then three end packets."""
    code = EVENTS.index(digit.upper())
    step = rate * ptime // 1000
    total = rate * duration_ms // 1000
    packets: list[tuple[bytes, bool]] = []
    duration = step
    while duration < total:
        packets.append((struct.pack("!BBH", code, volume & 0x3F, duration), not packets))
        duration += step
    end = struct.pack("!BBH", code, 0x80 | (volume & 0x3F), min(total, 0xFFFF))
    packets += [(end, not packets)] + [(end, False)] * 2
    return packets
