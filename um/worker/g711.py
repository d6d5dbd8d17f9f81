"""G.711 (ITU-T) mu-law and A-law as lookup tables: decode, encode, transcode, loudness.

Tables follow the reference g711.c (Sun Microsystems), the same values
Python's audioop produced. Everything runs through `bytes.translate` or
table lookups, so per-packet work stays in C.
"""

from __future__ import annotations

import array
import math
import sys

PCMU, PCMA = "PCMU", "PCMA"
STATIC_PT = {PCMU: 0, PCMA: 8}
SILENCE = {PCMU: 0xFF, PCMA: 0xD5}  # the code of linear 0 (mu-law 0xFF/0x7F, A-law 0xD5/0x55)


def _ulaw_to_linear(u: int) -> int:
    u = ~u & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return (0x84 - t) if (u & 0x80) else (t - 0x84)


def _alaw_to_linear(a: int) -> int:
    a ^= 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if (a & 0x80) else -t


def _linear_to_ulaw(pcm: int) -> int:
    pcm >>= 2  # 14-bit magnitude, as audioop/g711.c
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, 8159) + 0x21
    seg = _useg(pcm)
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask


_USEG_END = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def _useg(value: int) -> int:
    for index, end in enumerate(_USEG_END):
        if value <= end:
            return index
    return 8


_ASEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def _linear_to_alaw(pcm: int) -> int:
    pcm >>= 3  # 13-bit magnitude
    if pcm >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        pcm = -pcm - 1
    seg = 8
    for index, end in enumerate(_ASEG_END):
        if pcm <= end:
            seg = index
            break
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (pcm >> 1) & 0x0F if seg < 2 else (pcm >> seg) & 0x0F
    return aval ^ mask


ULAW_DECODE = tuple(_ulaw_to_linear(i) for i in range(256))
ALAW_DECODE = tuple(_alaw_to_linear(i) for i in range(256))
_ULAW_ENCODE = bytes(_linear_to_ulaw(v - 65536 if v >= 32768 else v) for v in range(65536))
_ALAW_ENCODE = bytes(_linear_to_alaw(v - 65536 if v >= 32768 else v) for v in range(65536))
ULAW_TO_ALAW = bytes(_ALAW_ENCODE[ULAW_DECODE[i] & 0xFFFF] for i in range(256))
ALAW_TO_ULAW = bytes(_ULAW_ENCODE[ALAW_DECODE[i] & 0xFFFF] for i in range(256))
DECODE = {PCMU: ULAW_DECODE, PCMA: ALAW_DECODE}
ENCODE = {PCMU: _ULAW_ENCODE, PCMA: _ALAW_ENCODE}
# Loudness classes for silence detection: 1 where |sample| exceeds the threshold (about -40 dBov).
LOUD_THRESHOLD = 330
_LOUD = {name: bytes(1 if abs(v) > LOUD_THRESHOLD else 0 for v in table) for name, table in DECODE.items()}


def decode(payload: bytes, codec: str) -> array.array:
    """G.711 bytes -> signed 16-bit samples."""
    table = DECODE[codec]
    return array.array("h", [table[b] for b in payload])


def encode(samples: array.array | list[int], codec: str) -> bytes:
    """Signed 16-bit samples -> G.711 bytes."""
    table = ENCODE[codec]
    return bytes(table[s & 0xFFFF] for s in samples)


def pcm16_to_g711(pcm: bytes, codec: str) -> bytes:
    """Little-endian 16-bit PCM bytes -> G.711 bytes."""
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if sys.byteorder == "big":
        samples.byteswap()
    return encode(samples, codec)


def g711_to_pcm16(payload: bytes, codec: str) -> bytes:
    """G.711 bytes -> little-endian 16-bit PCM bytes."""
    samples = decode(payload, codec)
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def transcode(payload: bytes, source: str, target: str) -> bytes:
    """PCMU <-> PCMA through the 256-entry tables (one translate call)."""
    if source == target:
        return payload
    return payload.translate(ULAW_TO_ALAW if source == PCMU else ALAW_TO_ULAW)


def loud_samples(payload: bytes, codec: str) -> int:
    """How many samples of `payload` are above the silence threshold (C speed)."""
    return payload.translate(_LOUD[codec]).count(1)


def silence(samples: int, codec: str) -> bytes:
    return bytes((SILENCE[codec],)) * samples


def tone(frequencies: tuple[float, ...], seconds: float, amplitude: float = 0.25, rate: int = 8000) -> list[int]:
    """A sum of sines as 16-bit samples, with 5 ms fades so tones do not click."""
    count = int(seconds * rate)
    fade = min(40, count // 2)
    peak = amplitude * 32767 / max(1, len(frequencies))
    out = []
    for n in range(count):
        value = sum(math.sin(2 * math.pi * f * n / rate) for f in frequencies) * peak
        if n < fade:
            value *= n / fade
        elif n >= count - fade:
            value *= (count - n) / fade
        out.append(int(value))
    return out
