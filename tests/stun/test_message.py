"""Message type bits, attribute access, unknown attributes, builders, encode rules."""

from __future__ import annotations

import pytest

from edge.stun import (
    ALLOCATE,
    BINDING,
    CHANNEL_BIND,
    CONNECT,
    CONNECTION_ATTEMPT,
    CONNECTION_BIND,
    CREATE_PERMISSION,
    DATA,
    ERROR,
    INDICATION,
    KNOWN_ATTRIBUTES,
    REFRESH,
    REQUEST,
    SEND,
    SUCCESS,
    Attr,
    ErrorCode,
    Message,
    StunDecodeError,
    decode,
    decode_error_code,
    decode_unknown_attributes,
    encode_lifetime,
    encode_xor_address,
    make_error,
    make_success,
    make_unknown_attributes_error,
    message_type,
    split_message_type,
)

TID = bytes(range(100, 112))


@pytest.mark.parametrize(
    ("method", "msg_class", "wire"),
    [
        (BINDING, REQUEST, 0x0001),
        (BINDING, INDICATION, 0x0011),
        (BINDING, SUCCESS, 0x0101),
        (BINDING, ERROR, 0x0111),
        (ALLOCATE, REQUEST, 0x0003),
        (ALLOCATE, SUCCESS, 0x0103),
        (ALLOCATE, ERROR, 0x0113),
        (REFRESH, REQUEST, 0x0004),
        (SEND, INDICATION, 0x0016),
        (DATA, INDICATION, 0x0017),
        (CREATE_PERMISSION, REQUEST, 0x0008),
        (CHANNEL_BIND, SUCCESS, 0x0109),
        (CONNECT, REQUEST, 0x000A),
        (CONNECTION_BIND, REQUEST, 0x000B),
        (CONNECTION_ATTEMPT, INDICATION, 0x001C),
        (0x080, REQUEST, 0x0200),  # bit M7 lands above C1
        (0x010, REQUEST, 0x0020),  # bit M4 lands above C0
        (0xFFF, ERROR, 0x3FFF),
    ],
)
def test_message_type_interleaving(method: int, msg_class: int, wire: int) -> None:
    assert message_type(method, msg_class) == wire
    assert split_message_type(wire) == (method, msg_class)
    encoded = Message(method, msg_class, TID).encode()
    assert int.from_bytes(encoded[:2], "big") == wire
    decoded = decode(encoded)
    assert (decoded.method, decoded.msg_class) == (method, msg_class)


def test_message_type_round_trips_all_values() -> None:
    for wire in range(0x4000):
        assert message_type(*split_message_type(wire)) == wire


def test_constructor_validates() -> None:
    with pytest.raises(ValueError):
        Message(0x1000, REQUEST, TID)
    with pytest.raises(ValueError):
        Message(BINDING, 4, TID)
    with pytest.raises(ValueError):
        Message(BINDING, REQUEST, b"short")
    assert len(Message(BINDING, REQUEST).transaction_id) == 12  # random by default


def test_get_get_all_and_order() -> None:
    peer1 = encode_xor_address("198.51.100.1", 5000, TID)
    peer2 = encode_xor_address("2001:db8::7", 6000, TID)
    msg = decode(
        Message(
            CREATE_PERMISSION,
            REQUEST,
            TID,
            [(Attr.XOR_PEER_ADDRESS, peer1), (Attr.SOFTWARE, b"s"), (Attr.XOR_PEER_ADDRESS, peer2)],
        ).encode()
    )
    assert msg.get(Attr.XOR_PEER_ADDRESS) == peer1
    assert msg.get_all(Attr.XOR_PEER_ADDRESS) == [peer1, peer2]
    assert msg.get(Attr.DATA) is None
    assert msg.xor_address(Attr.XOR_PEER_ADDRESS) == ("198.51.100.1", 5000)
    assert msg.xor_address() is None


def test_unknown_comprehension_required_reported() -> None:
    msg = decode(
        Message(
            ALLOCATE,
            REQUEST,
            TID,
            [
                (Attr.REQUESTED_TRANSPORT, b"\x11\0\0\0"),
                (0x7F01, b"x"),
                (0x0002, b""),  # reserved (was RESPONSE-ADDRESS), unknown to RFC 8489
                (0x7F01, b"again"),
                (0xC001, b"optional"),
            ],
        ).encode()
    )
    assert msg.unknown_comprehension_required() == [0x7F01, 0x0002]
    reply = make_unknown_attributes_error(msg)
    assert reply.error_code() == (420, "Unknown Attribute")
    assert decode_unknown_attributes(reply.get(Attr.UNKNOWN_ATTRIBUTES)) == [0x7F01, 0x0002]


def test_comprehension_optional_unknown_kept_and_round_trips() -> None:
    attrs = [(0xC001, b"optional"), (0xFFFF, b""), (Attr.SOFTWARE, b"sw")]
    msg = decode(Message(BINDING, REQUEST, TID, attrs).encode())
    assert msg.unknown_comprehension_required() == []
    assert msg.attributes == attrs
    assert msg.get(0xC001) == b"optional"
    assert decode(msg.encode()) == msg


def test_every_known_attribute_is_not_reported() -> None:
    attrs = [(t, b"") for t in sorted(KNOWN_ATTRIBUTES) if t not in (
        Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256, Attr.FINGERPRINT)]
    msg = decode(Message(BINDING, REQUEST, TID, attrs).encode())
    assert msg.unknown_comprehension_required() == []


def test_make_success_and_error() -> None:
    request = decode(Message(ALLOCATE, REQUEST, TID, [(Attr.SOFTWARE, b"c")]).encode())
    ok = make_success(request, [(Attr.LIFETIME, encode_lifetime(600))])
    assert (ok.method, ok.msg_class, ok.transaction_id) == (ALLOCATE, SUCCESS, TID)
    assert ok.attributes == [(Attr.LIFETIME, encode_lifetime(600))]

    err = make_error(request, ErrorCode.UNAUTHENTICATED, extra_attrs=[(Attr.REALM, b"r")])
    assert (err.method, err.msg_class, err.transaction_id) == (ALLOCATE, ERROR, TID)
    assert [t for t, _ in err.attributes] == [Attr.ERROR_CODE, Attr.REALM]
    assert err.error_code() == (401, "Unauthenticated")
    assert decode_error_code(make_error(request, 438, "Stale").get(Attr.ERROR_CODE)) == (438, "Stale")
    assert make_error(request, 599).error_code() == (599, "")

    with pytest.raises(ValueError):
        make_success(Message(SEND, INDICATION, TID))
    with pytest.raises(ValueError):
        make_error(request, 200)


def test_encode_refuses_impossible_layouts() -> None:
    signed = decode(Message(BINDING, REQUEST, TID).encode(b"k", fingerprint=True))
    again = Message(BINDING, REQUEST, TID, signed.attributes)
    with pytest.raises(ValueError):
        again.encode(b"k")  # would put MESSAGE-INTEGRITY after FINGERPRINT
    with pytest.raises(ValueError):
        again.encode(fingerprint=True)
    only_mi = Message(BINDING, REQUEST, TID, signed.attributes[:1])
    with pytest.raises(ValueError):
        only_mi.encode(b"k")
    only_mi.encode(b"k", sha256=True)  # SHA-256 may follow SHA-1
    # re-signing goes through without_integrity()
    resigned = decode(signed.without_integrity().encode(b"other", fingerprint=True))
    assert resigned.verify_integrity(b"other") and resigned.verify_fingerprint()
    with pytest.raises(ValueError):
        Message(BINDING, REQUEST, TID, [(Attr.DATA, bytes(0x10000))]).encode()
    with pytest.raises(ValueError):
        Message(BINDING, REQUEST, TID, [(0x10000, b"")]).encode()
    with pytest.raises(ValueError):
        Message(BINDING, REQUEST, TID, [(Attr.DATA, bytes(0xFFF0))] * 2).encode()


def test_padding_is_zero_by_default() -> None:
    encoded = Message(BINDING, REQUEST, TID, [(Attr.SOFTWARE, b"a")]).encode()
    assert encoded[20:] == b"\x80\x22\x00\x01a\x00\x00\x00"


def test_integrity_and_fingerprint_lengths() -> None:
    # RFC 8489 §14.5/§14.7: MI is computed with the length covering MI, the
    # CRC with the length covering FINGERPRINT; the final header covers all.
    encoded = Message(BINDING, REQUEST, TID, [(Attr.SOFTWARE, b"abcd")]).encode(
        b"key", fingerprint=True
    )
    assert int.from_bytes(encoded[2:4], "big") == len(encoded) - 20 == 8 + 24 + 8
    msg = decode(encoded)
    assert msg.verify_integrity(b"key") and msg.verify_fingerprint()
    assert not msg.verify_integrity(b"kez")


def test_verify_on_messages_built_in_code() -> None:
    decoded = decode(Message(BINDING, REQUEST, TID).encode(b"key", fingerprint=True))
    built = Message(BINDING, REQUEST, TID, decoded.attributes)
    assert built.raw is None
    assert built.verify_integrity(b"key") and built.verify_fingerprint()
    assert not Message(BINDING, REQUEST, TID).verify_integrity(b"key")
    assert not Message(BINDING, REQUEST, TID).verify_fingerprint()
    broken = Message(BINDING, REQUEST, TID, [(Attr.FINGERPRINT, b"12")])
    assert not broken.verify_fingerprint()


def test_equality_ignores_raw_and_repr_names_things() -> None:
    built = Message(BINDING, REQUEST, TID, [(Attr.SOFTWARE, b"x"), (0x7777, b"")])
    decoded = decode(built.encode())
    assert decoded == built and decoded.raw is not None
    assert built != Message(BINDING, SUCCESS, TID, built.attributes)
    assert (built == object()) is False
    text = repr(built)
    assert "BINDING" in text and "REQUEST" in text and "SOFTWARE[1]" in text and "0x7777" in text


def test_malformed_typed_values_raise_stun_decode_error() -> None:
    msg = decode(
        Message(
            BINDING,
            ERROR,
            TID,
            [(Attr.ERROR_CODE, b"\0\0"), (Attr.XOR_MAPPED_ADDRESS, b"\0\x03\0\0")],
        ).encode()
    )
    with pytest.raises(StunDecodeError):
        msg.error_code()
    with pytest.raises(StunDecodeError):
        msg.xor_address()
