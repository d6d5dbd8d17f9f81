"""TURN ChannelData messages (RFC 8656 §12.4-§12.5).

ChannelData is the 4-byte-header framing that carries relayed media once a
channel is bound, so this is the hottest path of the relay: one
``struct`` unpack and one slice per packet.
"""

from __future__ import annotations

import struct

from .constants import CHANNEL_MAX, CHANNEL_MIN
from .errors import StunDecodeError

__all__ = ["is_channel_data", "decode_channel_data", "encode_channel_data"]

_HEAD = struct.Struct("!HH")


def is_channel_data(first_byte: int | bytes | bytearray | memoryview) -> bool:
    """Demultiplex on the first byte: 0x40-0x4F is ChannelData (RFC 7983, RFC 8656).

    Accepts the byte as an int or the packet itself (empty means no).
    """
    if not isinstance(first_byte, int):
        if not len(first_byte):
            return False
        first_byte = first_byte[0]
    return 0x40 <= first_byte <= 0x4F


def decode_channel_data(data: bytes | bytearray | memoryview) -> tuple[int, bytes]:
    """``(channel, payload)``; StunDecodeError for a bad channel or length.

    The packet may carry up to 3 bytes of padding after the payload (always
    over TCP, optionally over UDP); more than that, or less data than the
    length field claims, is refused.
    """
    size = len(data)
    if size < 4:
        raise StunDecodeError("ChannelData shorter than its 4-byte header")
    channel, length = _HEAD.unpack_from(data)
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunDecodeError(f"channel number {channel:#06x} outside 0x4000-0x4FFF")
    end = 4 + length
    if size < end:
        raise StunDecodeError("ChannelData shorter than its length field")
    if size > end + (-length & 3):
        raise StunDecodeError("ChannelData longer than its length plus padding")
    return channel, bytes(data[4:end])


def encode_channel_data(channel: int, payload: bytes, pad: bool = False) -> bytes:
    """One ChannelData message; ``pad=True`` pads to 4 bytes, as TCP/TLS require."""
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise ValueError(f"channel number {channel:#06x} outside 0x4000-0x4FFF")
    length = len(payload)
    if length > 0xFFFF:
        raise ValueError("ChannelData payload longer than 65535 bytes")
    header = _HEAD.pack(channel, length)
    if pad and length & 3:
        return b"".join((header, payload, bytes(4 - (length & 3))))
    return header + bytes(payload)
