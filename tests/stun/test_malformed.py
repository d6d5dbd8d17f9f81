"""Every class of malformed message raises StunDecodeError, one test each."""

from __future__ import annotations

import struct

import pytest

from edge.stun import (
    BINDING,
    MAGIC_COOKIE,
    REQUEST,
    Attr,
    Message,
    StunDecodeError,
    decode,
)

from .vectors import RFC5769_REQUEST

TID = bytes(range(12))


def attr(attr_type: int, value: bytes, pad: bool = True) -> bytes:
    """One attribute TLV, padded unless told not to."""
    padding = bytes(-len(value) % 4) if pad else b""
    return struct.pack("!HH", attr_type, len(value)) + value + padding


def raw(body: bytes = b"", *, mtype: int = 0x0001, length: int | None = None,
        cookie: int = MAGIC_COOKIE) -> bytes:
    """A message with a hand-made header, so the header can lie."""
    if length is None:
        length = len(body)
    return struct.pack("!HHI12s", mtype, length, cookie, TID) + body


def test_well_formed_baseline() -> None:
    # the helpers build something valid when nothing is bent
    msg = decode(raw(attr(Attr.SOFTWARE, b"abc") + attr(Attr.LIFETIME, b"\0\0\0\1")))
    assert msg.get(Attr.SOFTWARE) == b"abc"


@pytest.mark.parametrize("size", [0, 1, 19])
def test_too_short(size: int) -> None:
    with pytest.raises(StunDecodeError):
        decode(raw()[:size])


@pytest.mark.parametrize("mtype", [0x4001, 0x8001, 0xC001])
def test_top_two_bits_not_zero(mtype: int) -> None:
    with pytest.raises(StunDecodeError):
        decode(raw(mtype=mtype))


def test_wrong_magic_cookie() -> None:
    with pytest.raises(StunDecodeError):
        decode(raw(cookie=MAGIC_COOKIE ^ 1))
    # an RFC 3489 message has no cookie at all
    with pytest.raises(StunDecodeError):
        decode(raw(cookie=0x12345678))


def test_length_not_multiple_of_4() -> None:
    body = attr(Attr.SOFTWARE, b"abc", pad=False)  # 7 bytes
    with pytest.raises(StunDecodeError):
        decode(raw(body))


@pytest.mark.parametrize("delta", [-4, 4, 8])
def test_length_not_matching_datagram(delta: int) -> None:
    body = attr(Attr.SOFTWARE, b"abcd") + attr(Attr.LIFETIME, b"\0\0\0\1")
    with pytest.raises(StunDecodeError):
        decode(raw(body, length=len(body) + delta))


def test_trailing_bytes_after_message() -> None:
    with pytest.raises(StunDecodeError):
        decode(raw(attr(Attr.SOFTWARE, b"abcd")) + b"\0\0\0\0")


def test_truncated_attribute() -> None:
    # the attribute claims 16 bytes but the message ends after 8
    body = struct.pack("!HH", Attr.SOFTWARE, 16) + b"12345678"
    with pytest.raises(StunDecodeError):
        decode(raw(body))


def test_missing_padding() -> None:
    # The last attribute without its padding: as sent (length 17) the length
    # is not a multiple of 4; with the header claiming the padding (20) the
    # datagram is 3 bytes short.  (Inside the message, positions are always
    # multiples of 4, so a value that fits always leaves room for its padding.)
    unpadded = attr(Attr.SOFTWARE, b"abcd") + attr(Attr.USERNAME, b"12345", pad=False)
    with pytest.raises(StunDecodeError):
        decode(raw(unpadded))
    with pytest.raises(StunDecodeError):
        decode(raw(unpadded, length=len(unpadded) + 3))


def test_nonzero_padding_is_accepted() -> None:
    # RFC 8489 §14: padding content is ignored on receipt (RFC 5769 uses spaces)
    msg = decode(raw(attr(Attr.USERNAME, b"12345", pad=False) + b"   "))
    assert msg.get(Attr.USERNAME) == b"12345"


def test_attribute_after_fingerprint() -> None:
    good = Message(BINDING, REQUEST, TID, [(Attr.SOFTWARE, b"x")]).encode(fingerprint=True)
    extra = attr(Attr.SOFTWARE, b"late")
    with pytest.raises(StunDecodeError):
        decode(raw(good[20:] + extra))
    with pytest.raises(StunDecodeError):
        decode(raw(good[20:] + attr(Attr.FINGERPRINT, b"\0\0\0\0")))


@pytest.mark.parametrize("size", [0, 3, 5, 8])
def test_fingerprint_wrong_length(size: int) -> None:
    with pytest.raises(StunDecodeError):
        decode(raw(attr(Attr.FINGERPRINT, bytes(size))))


@pytest.mark.parametrize("size", [0, 16, 19, 21, 32])
def test_message_integrity_not_20_bytes(size: int) -> None:
    with pytest.raises(StunDecodeError):
        decode(raw(attr(Attr.MESSAGE_INTEGRITY, bytes(size))))


@pytest.mark.parametrize("size", [0, 12, 15, 17, 18, 22, 30, 36, 64])
def test_message_integrity_sha256_bad_length(size: int) -> None:
    with pytest.raises(StunDecodeError):
        decode(raw(attr(Attr.MESSAGE_INTEGRITY_SHA256, bytes(size))))


@pytest.mark.parametrize("size", [16, 20, 24, 28, 32])
def test_message_integrity_sha256_good_lengths(size: int) -> None:
    decode(raw(attr(Attr.MESSAGE_INTEGRITY_SHA256, bytes(size))))


def test_bad_lengths_refused_even_after_integrity() -> None:
    # a malformed check attribute is a malformed message wherever it sits
    body = attr(Attr.MESSAGE_INTEGRITY, bytes(20)) + attr(Attr.MESSAGE_INTEGRITY, bytes(16))
    with pytest.raises(StunDecodeError):
        decode(raw(body))


def test_attributes_after_integrity_are_kept_but_ignored() -> None:
    key = b"key"
    signed = Message(BINDING, REQUEST, TID, [(Attr.LIFETIME, b"\0\0\0\x05")]).encode(key)
    late = attr(Attr.SOFTWARE, b"late") + attr(0x7ABC, b"??")
    msg = decode(raw(signed[20:] + late))
    assert [t for t, _ in msg.attributes] == [
        Attr.LIFETIME,
        Attr.MESSAGE_INTEGRITY,
        Attr.SOFTWARE,
        0x7ABC,
    ]
    assert msg.get(Attr.SOFTWARE) is None
    assert msg.ignored_attributes() == [(Attr.SOFTWARE, b"late"), (0x7ABC, b"??")]
    assert msg.unknown_comprehension_required() == []  # ignored, so no 420
    assert msg.verify_integrity(key)  # the MAC does not cover them
    # and the message round-trips with them
    assert decode(msg.encode()) == msg


def test_sha256_after_sha1_counts_then_only_fingerprint() -> None:
    body = (
        attr(Attr.MESSAGE_INTEGRITY, bytes(20))
        + attr(Attr.SOFTWARE, b"ignored")
        + attr(Attr.MESSAGE_INTEGRITY_SHA256, bytes(32))
        + attr(Attr.MESSAGE_INTEGRITY, bytes(20))
        + attr(Attr.FINGERPRINT, bytes(4))
    )
    msg = decode(raw(body))
    assert msg.get(Attr.MESSAGE_INTEGRITY_SHA256) == bytes(32)
    assert msg.get(Attr.SOFTWARE) is None
    assert [t for t, _ in msg.ignored_attributes()] == [Attr.SOFTWARE, Attr.MESSAGE_INTEGRITY]
    assert msg.get(Attr.FINGERPRINT) == bytes(4)
    assert not msg.verify_fingerprint()


def test_decode_accepts_bytearray_and_memoryview() -> None:
    assert decode(bytearray(RFC5769_REQUEST)) == decode(RFC5769_REQUEST)
    assert decode(memoryview(RFC5769_REQUEST)).raw == RFC5769_REQUEST
