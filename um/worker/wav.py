"""WAV (RIFF/WAVE) files of 8 kHz mono audio: G.711 (format tags 7 mu-law, 6 A-law) or 16-bit PCM.

Voicemail is stored as the G.711 the caller sent, unchanged (WAVE_FORMAT_MULAW
or WAVE_FORMAT_ALAW, with the `fact` chunk non-PCM formats need), so the
stored bytes are the received payload, bit for bit. `read` accepts those and
16-bit PCM (how greetings and prompts are usually recorded).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from um.worker.g711 import PCMA, PCMU, g711_to_pcm16, pcm16_to_g711, transcode

FORMAT_PCM, FORMAT_ALAW, FORMAT_MULAW = 1, 6, 7
TAG_OF = {PCMU: FORMAT_MULAW, PCMA: FORMAT_ALAW}
CODEC_OF = {FORMAT_MULAW: PCMU, FORMAT_ALAW: PCMA}
RATE = 8000


class WavError(ValueError):
    """Not a WAV file umedge can use (the message says why)."""


@dataclass
class Wav:
    format_tag: int
    rate: int
    channels: int
    bits: int
    data: bytes

    @property
    def codec(self) -> str:
        return CODEC_OF.get(self.format_tag, "L16")

    @property
    def samples(self) -> int:
        return len(self.data) // max(1, self.channels * self.bits // 8)

    @property
    def duration(self) -> float:
        return self.samples / self.rate if self.rate else 0.0

    def as_g711(self, codec: str) -> bytes:
        """The audio in `codec` (8 kHz mono G.711 required for transcoding)."""
        if self.rate != RATE or self.channels != 1:
            raise WavError(f"audio must be 8000 Hz mono, not {self.rate} Hz with {self.channels} channels")
        if self.format_tag == FORMAT_PCM:
            if self.bits != 16:
                raise WavError(f"PCM audio must be 16-bit, not {self.bits}-bit")
            return pcm16_to_g711(self.data, codec)
        return transcode(self.data, self.codec, codec)

    def as_pcm16(self) -> bytes:
        if self.format_tag == FORMAT_PCM:
            return self.data
        return g711_to_pcm16(self.data, self.codec)


def header(codec: str, data_bytes: int) -> bytes:
    """The 58-byte header of a G.711 WAV with `data_bytes` of audio (fmt of 18 bytes, fact, data)."""
    tag = TAG_OF[codec]
    fmt = struct.pack("<HHIIHHH", tag, 1, RATE, RATE, 1, 8, 0)
    fact = struct.pack("<I", data_bytes)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"fact" + struct.pack("<I", 4) + fact
    body += b"data" + struct.pack("<I", data_bytes)
    return b"RIFF" + struct.pack("<I", len(body) + data_bytes + (data_bytes & 1)) + body


HEADER_BYTES = len(header(PCMU, 0))


def pcm16_header(data_bytes: int, rate: int = RATE) -> bytes:
    fmt = struct.pack("<HHIIHH", FORMAT_PCM, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_bytes)
    return b"RIFF" + struct.pack("<I", len(body) + data_bytes) + body


def encode(codec: str, audio: bytes) -> bytes:
    """A whole WAV file: G.711 audio in `codec`, or 16-bit PCM for codec "L16"."""
    if codec == "L16":
        return pcm16_header(len(audio)) + audio
    return header(codec, len(audio)) + audio + (b"\x00" if len(audio) & 1 else b"")


def decode(blob: bytes) -> Wav:
    if len(blob) < 12 or blob[:4] != b"RIFF" or blob[8:12] != b"WAVE":
        raise WavError("not a RIFF/WAVE file")
    offset, fmt, data = 12, None, None
    while offset + 8 <= len(blob):
        chunk, size = blob[offset:offset + 4], struct.unpack_from("<I", blob, offset + 4)[0]
        body = blob[offset + 8: offset + 8 + size]
        if chunk == b"fmt ":
            if len(body) < 16:
                raise WavError("fmt chunk too short")
            fmt = struct.unpack_from("<HHIIHH", body)
        elif chunk == b"data":
            if len(body) < size:
                raise WavError(f"data chunk truncated: {len(body)} of {size} bytes")
            data = body
        offset += 8 + size + (size & 1)
    if fmt is None or data is None:
        raise WavError("fmt or data chunk missing")
    tag, channels, rate, _, _, bits = fmt
    if tag not in (FORMAT_PCM, FORMAT_ALAW, FORMAT_MULAW):
        raise WavError(f"format tag {tag} not supported (1 PCM, 6 A-law, 7 mu-law)")
    return Wav(tag, rate, channels, bits, data)


def read(path: str | Path | BinaryIO) -> Wav:
    if isinstance(path, (str, Path)):
        with open(path, "rb") as handle:
            return decode(handle.read())
    return decode(path.read())
