"""Cutting a TCP/TLS byte stream into STUN and ChannelData frames.

Over a stream transport STUN messages and ChannelData share the connection
(RFC 8656 §12.5), and the first byte tells which is which: top two bits 00
for STUN (20-byte header plus its length), 0x40-0x7F for ChannelData (4-byte
header plus its length rounded up to 4; RFC 8656 uses 0x40-0x4F, RFC 5766
clients up to 0x7F).  Anything else means the stream is
garbage and the connection should be closed.
"""

from __future__ import annotations

import struct

from .channeldata import channel_data_frame_length
from .constants import HEADER_LENGTH, MAGIC_COOKIE
from .errors import StunDecodeError

__all__ = ["next_frame_length", "split_frames"]

_COOKIE = struct.pack("!I", MAGIC_COOKIE)


def next_frame_length(buffer: bytes | bytearray | memoryview) -> int | None:
    """Length of the complete frame at the start of ``buffer``, or None if incomplete.

    Raises StunDecodeError as soon as the bytes seen cannot start a frame
    (bad first byte, STUN length not a multiple of 4, wrong magic cookie),
    even before the whole frame has arrived.
    """
    available = len(buffer)
    if available < 4:
        if available and buffer[0] >= 0x80:
            raise StunDecodeError(f"stream byte {buffer[0]:#04x} starts no STUN/ChannelData")
        return None
    first = buffer[0]
    if first < 0x40:
        length = (buffer[2] << 8) | buffer[3]
        if length & 3:
            raise StunDecodeError("STUN length is not a multiple of 4")
        if available >= 8 and bytes(buffer[4:8]) != _COOKIE:
            raise StunDecodeError("wrong magic cookie in stream")
        frame = HEADER_LENGTH + length
    elif first <= 0x7F:
        frame = channel_data_frame_length(buffer)
    else:
        raise StunDecodeError(f"stream byte {first:#04x} starts no STUN/ChannelData")
    return frame if available >= frame else None


def split_frames(buffer: bytes | bytearray | memoryview) -> tuple[list[bytes], int]:
    """All complete frames at the start of ``buffer`` and how many bytes they used.

    The caller drops the consumed bytes and keeps the rest for the next read.
    """
    view = memoryview(buffer)
    frames: list[bytes] = []
    pos = 0
    while True:
        frame = next_frame_length(view[pos:])
        if frame is None:
            return frames, pos
        frames.append(bytes(view[pos : pos + frame]))
        pos += frame
