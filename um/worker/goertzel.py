"""In-band DTMF: Goertzel detection of the digits' tone pairs in G.711 audio, sans-I/O.

For gateways that offer no telephone-event (RFC 4733): each 20 ms frame of
received audio is measured at the eight DTMF frequencies (ITU-T Q.23). A
frame holds a digit when its strongest row and column tones together carry
most of the frame's energy, each clearly above the other tones of its group,
with a twist (row/column level ratio) inside 8 dB and a minimum level; speech
and noise fail these tests. A digit is reported once, after two frames in a
row agree (40 ms), and again only after a frame without it.
"""

from __future__ import annotations

import math

from um.worker import g711

ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
RATE = 8000
FRAME = 160
MIN_RMS = 200.0          # about -44 dBov: quieter frames hold no digit
MIN_SHARE = 0.6          # the two tones' share of the frame's energy
MAX_TWIST = 6.3          # 8 dB between row and column level
MIN_SEPARATION = 4.0     # strongest tone of a group vs the next one (6 dB)


def _coefficients(frequencies: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(2.0 * math.cos(2.0 * math.pi * f / RATE) for f in frequencies)


_ROW_C, _COL_C = _coefficients(ROWS), _coefficients(COLS)


def _power(samples: list[int], coefficient: float) -> float:
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coefficient * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coefficient * s1 * s2


def frame_digit(samples: list[int]) -> str | None:
    """The digit one frame of 16-bit samples holds, or None."""
    n = len(samples)
    if n < 80:
        return None
    energy = float(sum(x * x for x in samples))
    if energy <= 0 or math.sqrt(energy / n) < MIN_RMS:
        return None
    rows = [_power(samples, c) for c in _ROW_C]
    cols = [_power(samples, c) for c in _COL_C]
    row = max(range(4), key=rows.__getitem__)
    col = max(range(4), key=cols.__getitem__)
    r, c = rows[row], cols[col]
    if r <= 0 or c <= 0 or r / c > MAX_TWIST or c / r > MAX_TWIST:
        return None
    if any(p * MIN_SEPARATION > r for i, p in enumerate(rows) if i != row):
        return None
    if any(p * MIN_SEPARATION > c for i, p in enumerate(cols) if i != col):
        return None
    share = 2.0 * (r + c) / (n * energy)  # a sine of amplitude A: |X|^2 = (A n / 2)^2, energy n A^2 / 2
    if share < MIN_SHARE:
        return None
    return KEYPAD[row][col]


class InbandDetector:
    """Feed G.711 payloads in order; `feed` returns the digits that started in them."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self._pending: list[int] = []
        self._candidate: str | None = None
        self._count = 0
        self._reported: str | None = None

    def feed(self, payload: bytes, codec: str | None = None) -> list[str]:
        self._pending += g711.decode(payload, codec or self.codec).tolist()
        found: list[str] = []
        while len(self._pending) >= FRAME:
            frame, self._pending = self._pending[:FRAME], self._pending[FRAME:]
            digit = frame_digit(frame)
            if digit is None:
                self._candidate, self._count, self._reported = None, 0, None
                continue
            if digit == self._candidate:
                self._count += 1
            else:
                self._candidate, self._count = digit, 1
            if self._count >= 2 and self._reported != digit:
                self._reported = digit
                found.append(digit)
        return found


def tone_payload(digit: str, seconds: float, codec: str = g711.PCMU, amplitude: float = 0.5) -> bytes:
    """A digit's tone pair as G.711 (test callers and outbound calls send it in band)."""
    for row, keys in enumerate(KEYPAD):
        if digit.upper() in keys:
            return g711.encode(g711.tone((ROWS[row], COLS[keys.index(digit.upper())]), seconds, amplitude), codec)
    raise ValueError(f"not a DTMF digit: {digit!r}")


__all__ = ["InbandDetector", "frame_digit", "tone_payload"]
