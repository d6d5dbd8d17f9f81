"""ChannelData framing and TCP stream splitting."""

from __future__ import annotations

import pytest

from edge.stun import (
    REFRESH,
    REQUEST,
    Attr,
    Message,
    StunDecodeError,
    decode,
    decode_channel_data,
    encode_channel_data,
    encode_lifetime,
    is_channel_data,
    next_frame_length,
    split_channel_data,
    split_frames,
)


def test_is_channel_data_first_byte() -> None:
    assert [b for b in range(256) if is_channel_data(b)] == list(range(0x40, 0x50))
    assert is_channel_data(b"\x40\x00\x00\x00")
    assert not is_channel_data(b"\x00\x01")
    assert not is_channel_data(b"")


def test_encode_decode_udp_and_tcp() -> None:
    unpadded = encode_channel_data(0x4001, b"hello")
    assert unpadded == b"\x40\x01\x00\x05hello"
    assert decode_channel_data(unpadded) == (0x4001, b"hello")
    padded = encode_channel_data(0x4FFF, b"hello", pad=True)
    assert padded == b"\x4f\xff\x00\x05hello\x00\x00\x00"
    assert decode_channel_data(padded) == (0x4FFF, b"hello")
    assert encode_channel_data(0x4000, b"", pad=True) == b"\x40\x00\x00\x00"
    assert encode_channel_data(0x4000, b"abcd", pad=True) == b"\x40\x00\x00\x04abcd"
    assert decode_channel_data(bytearray(padded)) == (0x4FFF, b"hello")
    assert decode_channel_data(memoryview(unpadded)) == (0x4001, b"hello")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x40\x01\x00",
        b"\x40\x01\x00\x05hell",  # shorter than its length
        b"\x40\x01\x00\x05hello\x00\x00\x00\x00",  # more than padding after it
        b"\x3f\xff\x00\x00",  # channel below 0x4000
        b"\x50\x00\x00\x00",  # channel above 0x4FFF (reserved, RFC 7983)
        b"\x00\x01\x00\x00",
    ],
)
def test_decode_refuses(data: bytes) -> None:
    with pytest.raises(StunDecodeError):
        decode_channel_data(data)


def test_split_is_the_relay_reading() -> None:
    """What the engine uses per datagram: only the length is checked; the channel is the caller's lookup."""
    assert split_channel_data(b"\x40\x01\x00\x05hello") == (0x4001, b"hello")
    assert split_channel_data(b"\x7f\xff\x00\x01x\x00\x00\x00") == (0x7FFF, b"x")  # RFC 5766 channel
    assert split_channel_data(b"\x40\x01\x00\x01xtrailing") == (0x4001, b"x")  # the rest is ignored
    assert split_channel_data(b"\x40\x00\x00\x00") == (0x4000, b"")
    for short in (b"", b"\x40", b"\x40\x01\x00", b"\x40\x01\x00\x05hell"):
        with pytest.raises(StunDecodeError):
            split_channel_data(short)


def test_encode_refuses() -> None:
    for channel in (0x3FFF, 0x5000, -1):
        with pytest.raises(ValueError):
            encode_channel_data(channel, b"x")
    with pytest.raises(ValueError):
        encode_channel_data(0x4000, bytes(0x10000))


def test_next_frame_length() -> None:
    stun = Message(REFRESH, REQUEST, bytes(12), [(Attr.LIFETIME, encode_lifetime(0))]).encode()
    assert next_frame_length(stun) == len(stun) == 28
    assert next_frame_length(stun + b"\x40") == 28
    for cut in range(len(stun)):
        assert next_frame_length(stun[:cut]) is None
    padded = encode_channel_data(0x4000, b"hello", pad=True)
    assert next_frame_length(padded) == 12
    assert next_frame_length(padded[:11]) is None
    assert next_frame_length(padded[:9]) is None  # unpadded is incomplete over TCP
    assert next_frame_length(b"\x40\x00") is None
    assert next_frame_length(b"") is None


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x80",  # top bits 10: neither STUN nor ChannelData
        b"\xff\xff\xff\xff",
        b"\x00\x01\x00\x02",  # STUN length not a multiple of 4
        b"\x00\x01\x00\x00\x21\x12\xa4\x43",  # wrong magic cookie, caught early
    ],
)
def test_next_frame_length_garbage(garbage: bytes) -> None:
    with pytest.raises(StunDecodeError):
        next_frame_length(garbage)


def test_rfc5766_channels_frame_on_streams() -> None:
    assert next_frame_length(b"\x7f\xff\x00\x01x\x00\x00\x00") == 8


def test_split_frames_stream() -> None:
    stun = Message(REFRESH, REQUEST, bytes(12), [(Attr.LIFETIME, encode_lifetime(0))]).encode()
    first = encode_channel_data(0x4001, b"hello", pad=True)
    empty = encode_channel_data(0x4002, b"", pad=True)
    stream = first + stun + empty + stun[:10]
    frames, used = split_frames(stream)
    assert frames == [first, stun, empty]
    assert used == len(stream) - 10
    assert decode_channel_data(frames[0]) == (0x4001, b"hello")
    assert decode(frames[1]).get(Attr.LIFETIME) == encode_lifetime(0)
    assert split_frames(b"") == ([], 0)
    with pytest.raises(StunDecodeError):
        split_frames(first + b"\x99\x00\x00\x00")
