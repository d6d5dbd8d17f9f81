"""TURN ChannelData messages (RFC 8656 §12.4-§12.5): the one parser.

ChannelData is the 4-byte-header framing that carries relayed media once a
channel is bound, so this is the hottest path of the relay: the engine calls
:func:`split_channel_data` for every datagram (one ``struct`` unpack, one
length check, one slice; about what the same code costs inline).
:func:`decode_channel_data` is the strict reading on top of it.
"""

from __future__ import annotations

import struct

from .constants import CHANNEL_MAX, CHANNEL_MIN
from .errors import StunDecodeError

__all__ = [
    "channel_data_frame_length",
    "decode_channel_data",
    "encode_channel_data",
    "is_channel_data",
    "split_channel_data",
]

_HEAD = struct.Struct("!HH")
_unpack_head = _HEAD.unpack_from


def is_channel_data(first_byte: int | bytes | bytearray | memoryview) -> bool:
    """Demultiplex on the first byte: 0x40-0x4F is ChannelData (RFC 7983, RFC 8656).

    Accepts the byte as an int or the packet itself (empty means no).
    """
    if not isinstance(first_byte, int):
        if not len(first_byte):
            return False
        first_byte = first_byte[0]
    return 0x40 <= first_byte <= 0x4F


def split_channel_data(data: bytes) -> tuple[int, bytes]:
    """``(channel, payload)`` as a relay reads a datagram; StunDecodeError if it is too short.

    The only check is the length (RFC 8656 §12.5: a datagram shorter than
    its length field is discarded); whatever follows the payload is padding
    or ignored, and whether the channel is bound is the caller's lookup
    (RFC 5766 clients use channels up to 0x7FFF).
    """
    try:
        channel, length = _unpack_head(data)
    except struct.error:
        raise StunDecodeError("ChannelData shorter than its 4-byte header") from None
    if length > len(data) - 4:
        raise StunDecodeError("ChannelData shorter than its length field")
    return channel, data[4 : 4 + length]


def decode_channel_data(data: bytes | bytearray | memoryview) -> tuple[int, bytes]:
    """``(channel, payload)``, strictly; StunDecodeError for a bad channel or length.

    On top of :func:`split_channel_data`: the channel must be in the RFC 8656
    range, and at most 3 bytes of padding may follow the payload (always
    there over TCP, optional over UDP).
    """
    channel, payload = split_channel_data(bytes(data))
    if not CHANNEL_MIN <= channel <= CHANNEL_MAX:
        raise StunDecodeError(f"channel number {channel:#06x} outside 0x4000-0x4FFF")
    length = len(payload)
    if len(data) > 4 + length + (-length & 3):
        raise StunDecodeError("ChannelData longer than its length plus padding")
    return channel, payload


def channel_data_frame_length(header: bytes | bytearray | memoryview) -> int:
    """Bytes a ChannelData frame takes on a stream, from its first 4 bytes (padded to 4)."""
    length = (header[2] << 8) | header[3]
    return 4 + length + (-length & 3)


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
