"""Typed attribute value codecs."""

from __future__ import annotations

import pytest

from edge.stun import (
    FAMILY_IPV4,
    FAMILY_IPV6,
    REASON_PHRASES,
    TRANSPORT_UDP,
    ErrorCode,
    StunDecodeError,
    decode_address,
    decode_address_error_code,
    decode_address_family,
    decode_alternate_domain,
    decode_change_request,
    decode_channel_number,
    decode_error_code,
    decode_even_port,
    decode_flag,
    decode_ice_tiebreaker,
    decode_icmp,
    decode_lifetime,
    decode_nonce,
    decode_realm,
    decode_requested_transport,
    decode_reservation_token,
    decode_response_port,
    decode_software,
    decode_unknown_attributes,
    decode_username,
    decode_xor_address,
    encode_address,
    encode_address_error_code,
    encode_address_family,
    encode_alternate_domain,
    encode_change_request,
    encode_channel_number,
    encode_error_code,
    encode_even_port,
    encode_flag,
    encode_ice_tiebreaker,
    encode_icmp,
    encode_lifetime,
    encode_nonce,
    encode_padding,
    encode_realm,
    encode_requested_transport,
    encode_reservation_token,
    encode_response_port,
    encode_software,
    encode_unknown_attributes,
    encode_username,
    encode_xor_address,
    reason_phrase,
)

from .vectors import RFC5769_TID

TID = RFC5769_TID


def test_xor_address_matches_rfc5769() -> None:
    assert encode_xor_address("192.0.2.1", 32853, TID) == bytes.fromhex("0001a147e112a643")
    v6 = bytes.fromhex("0002a1470113a9faa5d3f179bc25f4b5bed2b9d9")
    assert encode_xor_address("2001:db8:1234:5678:11:2233:4455:6677", 32853, TID) == v6
    assert decode_xor_address(v6, TID) == ("2001:db8:1234:5678:11:2233:4455:6677", 32853)


@pytest.mark.parametrize(
    "address",
    [
        ("0.0.0.0", 0),
        ("203.0.113.7", 65535),
        ("::", 3478),
        ("::1", 1),
        ("2001:db8::1", 443),
        ("fe80::1:2:3:4", 7),
        ("::ffff:192.0.2.9", 9),
    ],
)
def test_address_round_trips(address: tuple[str, int]) -> None:
    assert decode_address(encode_address(*address)) == address
    assert decode_xor_address(encode_xor_address(*address, TID), TID) == address


def test_xor_depends_on_transaction_id_only_for_ipv6() -> None:
    other = bytes(range(12))
    v4 = encode_xor_address("192.0.2.1", 1, TID)
    assert decode_xor_address(v4, other) == ("192.0.2.1", 1)
    v6 = encode_xor_address("2001:db8::1", 1, TID)
    assert decode_xor_address(v6, other) != ("2001:db8::1", 1)


def test_address_canonical_text() -> None:
    packed = encode_address("2001:0DB8:0000:0000:0001:0000:0000:0001", 1)
    assert decode_address(packed) == ("2001:db8::1:0:0:1", 1)


def test_address_zone_is_dropped() -> None:
    assert decode_address(encode_address("fe80::1%eth0", 5)) == ("fe80::1", 5)


@pytest.mark.parametrize("ip", ["not-an-ip", "256.1.1.1", "1.2.3", "", "1.2.3.4%x", "::1::2"])
def test_address_encode_refuses_bad_ip(ip: str) -> None:
    with pytest.raises(ValueError):
        encode_address(ip, 1)
    with pytest.raises(ValueError):
        encode_xor_address(ip, 1, TID)


@pytest.mark.parametrize("port", [-1, 65536])
def test_address_encode_refuses_bad_port(port: int) -> None:
    with pytest.raises(ValueError):
        encode_address("192.0.2.1", port)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x00\x01\x00",
        b"\x00\x01\x00\x00\x01\x02\x03",  # IPv4, 7 bytes
        b"\x00\x01\x00\x00\x01\x02\x03\x04\x05",  # IPv4, 9 bytes
        b"\x00\x02\x00\x00" + bytes(15),  # IPv6, short
        b"\x00\x02\x00\x00" + bytes(17),  # IPv6, long
        b"\x00\x03\x00\x00\x01\x02\x03\x04",  # unknown family
        b"\x00\x00\x00\x00\x01\x02\x03\x04",
    ],
)
def test_address_decode_refuses_bad_family_or_length(value: bytes) -> None:
    with pytest.raises(StunDecodeError):
        decode_address(value)
    with pytest.raises(StunDecodeError):
        decode_xor_address(value, TID)


def test_error_code_codec() -> None:
    assert encode_error_code(401) == b"\x00\x00\x04\x01Unauthenticated"
    assert decode_error_code(encode_error_code(401)) == (401, "Unauthenticated")
    assert decode_error_code(encode_error_code(438, "Stale Nonce")) == (438, "Stale Nonce")
    assert decode_error_code(encode_error_code(420, "")) == (420, "")
    assert decode_error_code(encode_error_code(500, "Überlastet")) == (500, "Überlastet")
    for code in (299, 700, 200, 0):
        with pytest.raises(ValueError):
            encode_error_code(code)
    with pytest.raises(ValueError):
        encode_error_code(400, "x" * 128)
    for bad in (b"", b"\0\0\4", b"\0\0\2\0", b"\0\0\7\0", b"\0\0\4\x64", b"\0\0\4\0\xff"):
        with pytest.raises(StunDecodeError):
            decode_error_code(bad)


def test_reason_phrase_table() -> None:
    expected = {
        300: "Try Alternate",
        400: "Bad Request",
        401: "Unauthenticated",
        403: "Forbidden",
        420: "Unknown Attribute",
        437: "Allocation Mismatch",
        438: "Stale Nonce",
        440: "Address Family not Supported",
        441: "Wrong Credentials",
        442: "Unsupported Transport Protocol",
        443: "Peer Address Family Mismatch",
        446: "Connection Already Exists",
        447: "Connection Timeout or Failure",
        486: "Allocation Quota Reached",
        500: "Server Error",
        508: "Insufficient Capacity",
    }
    for code, phrase in expected.items():
        assert REASON_PHRASES[code] == phrase == reason_phrase(code)
        assert ErrorCode(code) == code
    assert reason_phrase(499) == ""


def test_address_error_code_codec() -> None:
    value = encode_address_error_code(FAMILY_IPV6, 440)
    assert value[:4] == b"\x02\x00\x04\x28"
    assert decode_address_error_code(value) == (FAMILY_IPV6, 440, "Address Family not Supported")
    assert decode_address_error_code(encode_address_error_code(1, 508, "full")) == (1, 508, "full")
    with pytest.raises(StunDecodeError):
        decode_address_error_code(b"\x02\x00\x04")
    with pytest.raises(StunDecodeError):
        decode_address_error_code(b"\x02\x00\x01\x00")


def test_unknown_attributes_codec() -> None:
    assert encode_unknown_attributes([0x7F01, 0x0002]) == b"\x7f\x01\x00\x02"
    assert decode_unknown_attributes(b"\x7f\x01\x00\x02") == [0x7F01, 0x0002]
    assert decode_unknown_attributes(b"") == []
    with pytest.raises(StunDecodeError):
        decode_unknown_attributes(b"\x00\x01\x00")
    with pytest.raises(ValueError):
        encode_unknown_attributes([0x10000])


def test_turn_fixed_size_attributes() -> None:
    assert encode_requested_transport(TRANSPORT_UDP) == b"\x11\0\0\0"
    assert decode_requested_transport(b"\x11\0\0\0") == 17
    assert decode_lifetime(encode_lifetime(600)) == 600
    assert encode_channel_number(0x4001) == b"\x40\x01\0\0"
    assert decode_channel_number(b"\x40\x01\0\0") == 0x4001
    assert encode_even_port(True) == b"\x80" and decode_even_port(b"\x80")
    assert not decode_even_port(encode_even_port(False))
    assert decode_reservation_token(encode_reservation_token(b"12345678")) == b"12345678"
    assert encode_address_family(FAMILY_IPV4) == b"\x01\0\0\0"
    assert decode_address_family(b"\x02\0\0\0") == FAMILY_IPV6
    assert encode_flag() == b"" and decode_flag(b"")
    assert decode_icmp(encode_icmp(3, 4, 1280)) == (3, 4, 1280)
    assert len(encode_icmp(1, 2)) == 8
    bad_cases = [
        (decode_requested_transport, b"\x11"),
        (decode_lifetime, b"\0\0\0"),
        (decode_channel_number, b"\x40\x01"),
        (decode_even_port, b""),
        (decode_even_port, b"\x80\0"),
        (decode_reservation_token, b"1234567"),
        (decode_address_family, b"\x01"),
        (decode_flag, b"\0"),
        (decode_icmp, b"\0" * 4),
    ]
    for decoder, value in bad_cases:
        with pytest.raises(StunDecodeError):
            decoder(value)
    with pytest.raises(ValueError):
        encode_reservation_token(b"short")
    with pytest.raises(ValueError):
        encode_lifetime(-1)
    with pytest.raises(ValueError):
        encode_requested_transport(256)


def test_ice_and_rfc5780_attributes() -> None:
    assert decode_ice_tiebreaker(encode_ice_tiebreaker(2**64 - 1)) == 2**64 - 1
    assert encode_change_request(True, False) == b"\0\0\0\x04"
    assert decode_change_request(encode_change_request(False, True)) == (False, True)
    assert decode_change_request(encode_change_request(True, True)) == (True, True)
    assert decode_response_port(encode_response_port(3479)) == 3479
    assert encode_padding(5) == bytes(5)
    with pytest.raises(StunDecodeError):
        decode_response_port(b"\0\0")
    with pytest.raises(StunDecodeError):
        decode_ice_tiebreaker(b"\0" * 4)
    with pytest.raises(ValueError):
        encode_ice_tiebreaker(2**64)


def test_text_attributes() -> None:
    pairs = [
        (encode_username, decode_username, "evtj:h6vY"),
        (encode_realm, decode_realm, "example.org"),
        (encode_nonce, decode_nonce, "f//499k954d6OL34oL9FSTvy64sA"),
        (encode_software, decode_software, "umedge 1.0 \u2603"),
        (encode_alternate_domain, decode_alternate_domain, "turn.example.net"),
    ]
    for encoder, decoder, text in pairs:
        assert decoder(encoder(text)) == text
        with pytest.raises(StunDecodeError):
            decoder(b"\xff\xfe")
    with pytest.raises(ValueError):
        encode_username("u" * 509)
    encode_username("u" * 508)
    with pytest.raises(StunDecodeError):
        decode_username(b"u" * 509)
    with pytest.raises(ValueError):
        encode_realm("r" * 128)
    with pytest.raises(ValueError):
        encode_software("\u2603" * 128)
    with pytest.raises(StunDecodeError):
        decode_nonce(b"n" * 764)
