"""[MS-TURN] codec: framing, attribute values, integrity, dialect detection."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest

from edge import stun
from edge.msturn import (
    MS_TURN_MAGIC_COOKIE,
    MsAttr,
    MsMessage,
    MsTurnDecodeError,
    MsType,
    decode,
    decode_address,
    decode_error_code,
    decode_u32,
    decode_xor_address,
    encode_address,
    encode_error_code,
    encode_u32,
    encode_xor_address,
    is_ms_turn,
    long_term_key,
)

TID = bytes(range(16))
KEY = long_term_key(b"user", b"realm", b"pass")


def allocate() -> MsMessage:
    attrs = [
        (MsAttr.MS_VERSION, encode_u32(1)),
        (MsAttr.USERNAME, b"user"),
        (MsAttr.REALM, b"realm"),
    ]
    return MsMessage(MsType.ALLOCATE_REQUEST, TID, attrs)


def test_numbers_as_verified() -> None:
    # libnice stunmessage.h / Wireshark packet-stun.c (see edge/msturn/constants.py)
    assert MS_TURN_MAGIC_COOKIE == 0x72C64BC6
    assert (MsAttr.MAGIC_COOKIE, MsAttr.NONCE, MsAttr.REALM) == (0x000F, 0x0014, 0x0015)
    assert (
        MsAttr.MS_VERSION,
        MsAttr.XOR_MAPPED_ADDRESS,
        MsAttr.MS_SEQUENCE_NUMBER,
    ) == (0x8008, 0x8020, 0x8050)
    assert (
        MsType.ALLOCATE_REQUEST,
        MsType.SEND_REQUEST,
        MsType.SET_ACTIVE_DESTINATION_REQUEST,
    ) == (3, 4, 6)
    assert MsType.DATA_INDICATION == 0x0115


def test_wire_layout_is_unpadded_with_cookie_first() -> None:
    m = MsMessage(
        MsType.SEND_REQUEST, TID, [(MsAttr.DATA, b"abc"), (MsAttr.USERNAME, b"u")]
    )
    wire = m.encode()
    assert wire[:2] == b"\x00\x04"
    assert wire[4:20] == TID
    assert wire[20:28] == bytes.fromhex("000f000472c64bc6")
    # DATA of 3 bytes is not padded: the next attribute starts right after it
    assert wire[28:35] == b"\x00\x13\x00\x03abc"
    assert wire[35:] == b"\x00\x06\x00\x01u"
    assert struct.unpack("!H", wire[2:4])[0] == len(wire) - 20
    back = decode(wire)
    assert back == m and back.get(MsAttr.DATA) == b"abc"
    assert back.encode() == wire


def test_cookie_not_duplicated() -> None:
    m = MsMessage(
        MsType.ALLOCATE_REQUEST,
        TID,
        [(MsAttr.MAGIC_COOKIE, encode_u32(MS_TURN_MAGIC_COOKIE))],
    )
    assert len(m.attributes) == 1


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"\x00\x03\x00\x00" + TID,  # no cookie attribute
        b"\xc0\x03\x00\x08" + TID + bytes.fromhex("000f000472c64bc6"),  # top bits
        b"\x00\x03\x00\x09"
        + TID
        + bytes.fromhex("000f000472c64bc6"),  # length mismatch
        b"\x00\x03\x00\x08"
        + TID
        + bytes.fromhex("000f00042112a442"),  # wrong cookie value
        b"\x00\x03\x00\x08"
        + TID
        + bytes.fromhex("0006000472c64bc6"),  # cookie not first
        b"\x00\x03\x00\x0b"
        + TID
        + bytes.fromhex("000f000472c64bc6000600"),  # truncated attr header
        b"\x00\x03\x00\x0d"
        + TID
        + bytes.fromhex("000f000472c64bc60006000561"),  # overrun
    ],
)
def test_malformed(wire: bytes) -> None:
    with pytest.raises(MsTurnDecodeError):
        decode(wire)


def test_rfc_cookie_in_header_refused() -> None:
    tid = bytes.fromhex("2112a442") + bytes(12)
    wire = MsMessage(MsType.ALLOCATE_REQUEST, tid).encode()
    assert not is_ms_turn(wire)
    with pytest.raises(MsTurnDecodeError):
        decode(wire)


def test_nothing_after_integrity() -> None:
    wire = allocate().encode(KEY) + b"\x00\x06\x00\x00"
    wire = wire[:2] + struct.pack("!H", len(wire) - 20) + wire[4:]
    with pytest.raises(MsTurnDecodeError):
        decode(wire)


def _libnice_stun_sha1(key: bytes, msg: bytes) -> bytes:
    """Independent transcription of libnice stunhmac.c stun_sha1(padding=TRUE)."""
    length = len(msg)  # up to and including MESSAGE-INTEGRITY
    fakelen = struct.pack("!H", length - 20)
    data = msg[:2] + fakelen + msg[4 : length - 24]
    if (length - 24) % 64:
        data += bytes(64 - (length - 24) % 64)
    return hmac.new(key, data, hashlib.sha1).digest()


@pytest.mark.parametrize("extra", [0, 1, 3, 36, 37, 100])
def test_integrity_sha1_matches_libnice_padding(extra: int) -> None:
    m = MsMessage(
        MsType.ALLOCATE_REQUEST,
        TID,
        [(MsAttr.USERNAME, b"x" * extra), (MsAttr.REALM, b"r")],
    )
    wire = m.encode(KEY)
    assert wire[-24:-20] == b"\x00\x08\x00\x14"
    assert wire[-20:] == _libnice_stun_sha1(KEY, wire)
    back = decode(wire)
    assert back.verify_integrity(KEY)
    assert not back.verify_integrity(b"wrong")
    tampered = bytearray(wire)
    tampered[-25] ^= 0x01  # the REALM value, just before MESSAGE-INTEGRITY
    assert not decode(bytes(tampered)).verify_integrity(KEY)


def test_integrity_sha256() -> None:
    m = allocate()
    m.attributes[1] = (MsAttr.MS_VERSION, encode_u32(3))
    wire = m.encode(KEY, sha256=True)
    assert wire[-36:-32] == b"\x00\x08\x00\x20"
    back = decode(wire)
    assert back.ms_version() == 3
    assert back.verify_integrity(KEY)
    assert not back.verify_integrity(KEY[::-1])
    prefix = wire[:-36]
    data = prefix[:2] + struct.pack("!H", len(wire) - 20) + prefix[4:]
    data += bytes(-len(data) % 64)
    assert wire[-32:] == hmac.new(KEY, data, hashlib.sha256).digest()


def test_integrity_reencode_replaces_old_mac() -> None:
    wire = allocate().encode(KEY)
    again = decode(wire).encode(KEY)
    assert again == wire
    assert decode(wire).encode() == wire  # no key: kept verbatim


def test_no_integrity_is_not_verified() -> None:
    assert not decode(allocate().encode()).verify_integrity(KEY)


def test_long_term_key_trims_like_libnice() -> None:
    assert (
        long_term_key(b'"user"', b"realm\x00", b"pass")
        == hashlib.md5(b"user:realm:pass").digest()
    )


def test_values() -> None:
    assert decode_address(encode_address("192.0.2.1", 3478)) == ("192.0.2.1", 3478)
    assert decode_address(encode_address("2001:db8::1", 1)) == ("2001:db8::1", 1)
    for ip in ("192.0.2.1", "2001:db8::7"):
        x = encode_xor_address(ip, 50000, TID)
        assert decode_xor_address(x, TID) == (ip, 50000)
    # IPv4: XORed with the first 4 bytes of the transaction id (libnice turn.c OC2007)
    x = encode_xor_address("192.0.2.1", 0x1234, TID)
    assert x == b"\x00\x01" + bytes([0x12 ^ 0, 0x34 ^ 1]) + bytes(
        [192 ^ 0, 0 ^ 1, 2 ^ 2, 1 ^ 3]
    )
    assert decode_u32(encode_u32(600)) == 600
    assert decode_error_code(encode_error_code(401, "Unauthorized")) == (
        401,
        "Unauthorized",
    )
    for bad in (b"", b"\x00\x03\x00\x00\x00\x00\x00\x00"):
        with pytest.raises(MsTurnDecodeError):
            decode_address(bad)
    with pytest.raises(MsTurnDecodeError):
        decode_u32(b"\x00")
    with pytest.raises(MsTurnDecodeError):
        decode_error_code(b"")


def test_detection_against_rfc_stun() -> None:
    ms = allocate().encode(KEY)
    assert is_ms_turn(ms)
    rfc = stun.Message(
        stun.ALLOCATE,
        stun.REQUEST,
        attributes=[(stun.Attr.LIFETIME, b"\x00\x00\x02\x58")],
    )
    rfc_wire = rfc.encode()
    assert not is_ms_turn(rfc_wire)
    with pytest.raises(MsTurnDecodeError):
        decode(rfc_wire)
    with pytest.raises(stun.StunDecodeError):
        stun.decode(ms)
    assert not is_ms_turn(b"\x40\x00\x00\x04abcd")  # ChannelData
    assert not is_ms_turn(ms[:27])
