"""RFC 5769 test vectors, byte for byte, decode and encode."""

from __future__ import annotations

from edge.stun import (
    BINDING,
    REQUEST,
    SUCCESS,
    Attr,
    Message,
    decode,
    decode_ice_tiebreaker,
    decode_nonce,
    decode_priority,
    decode_realm,
    decode_software,
    decode_username,
    encode_ice_tiebreaker,
    encode_priority,
    encode_xor_address,
    long_term_key,
    short_term_key,
)

from .vectors import (
    LONG_TERM_PASSWORD,
    LONG_TERM_REALM,
    LONG_TERM_USERNAME,
    RFC5769_IPV4_RESPONSE,
    RFC5769_IPV6_RESPONSE,
    RFC5769_LONG_TERM_REQUEST,
    RFC5769_LONG_TERM_TID,
    RFC5769_NONCE,
    RFC5769_REQUEST,
    RFC5769_TID,
    SHORT_TERM_PASSWORD,
)

SHORT_KEY = short_term_key(SHORT_TERM_PASSWORD)


def test_sample_request_decodes_and_verifies() -> None:
    msg = decode(RFC5769_REQUEST)
    assert (msg.method, msg.msg_class, msg.transaction_id) == (BINDING, REQUEST, RFC5769_TID)
    assert [t for t, _ in msg.attributes] == [
        Attr.SOFTWARE,
        Attr.PRIORITY,
        Attr.ICE_CONTROLLED,
        Attr.USERNAME,
        Attr.MESSAGE_INTEGRITY,
        Attr.FINGERPRINT,
    ]
    assert decode_software(msg.get(Attr.SOFTWARE)) == "STUN test client"
    assert decode_username(msg.get(Attr.USERNAME)) == "evtj:h6vY"
    assert decode_priority(msg.get(Attr.PRIORITY)) == 0x6E0001FF
    assert decode_ice_tiebreaker(msg.get(Attr.ICE_CONTROLLED)) == 0x932FF9B151263B36
    assert msg.verify_integrity(SHORT_KEY)
    assert msg.verify_fingerprint()
    assert not msg.verify_integrity(short_term_key("VOkJxbRl1RmTxUk/WvJxBT"))
    assert msg.unknown_comprehension_required() == []
    assert msg.integrity_attribute() == Attr.MESSAGE_INTEGRITY


def test_sample_request_rebuilt_byte_exact() -> None:
    # RFC 5769 pads USERNAME with spaces; RFC 8489 senders pad with zeros,
    # so the byte-exact rebuild asks for the vector's padding byte.
    rebuilt = Message(
        BINDING,
        REQUEST,
        RFC5769_TID,
        [
            (Attr.SOFTWARE, b"STUN test client"),
            (Attr.PRIORITY, encode_priority(0x6E0001FF)),
            (Attr.ICE_CONTROLLED, encode_ice_tiebreaker(0x932FF9B151263B36)),
            (Attr.USERNAME, b"evtj:h6vY"),
        ],
    ).encode(SHORT_KEY, fingerprint=True, pad_byte=0x20)
    assert rebuilt == RFC5769_REQUEST


def test_sample_request_rebuilt_with_zero_padding_still_verifies() -> None:
    msg = decode(RFC5769_REQUEST)
    rebuilt = decode(msg.without_integrity().encode(SHORT_KEY, fingerprint=True))
    # Padding is not part of a value, so the decoded fields agree; the bytes
    # (and therefore the MAC and CRC) differ only because the padding does.
    assert rebuilt.raw != RFC5769_REQUEST
    assert rebuilt.attributes[:4] == msg.attributes[:4]
    assert (rebuilt.method, rebuilt.msg_class, rebuilt.transaction_id) == (
        msg.method,
        msg.msg_class,
        msg.transaction_id,
    )
    assert rebuilt.verify_integrity(SHORT_KEY) and rebuilt.verify_fingerprint()


def test_ipv4_response() -> None:
    msg = decode(RFC5769_IPV4_RESPONSE)
    assert (msg.method, msg.msg_class) == (BINDING, SUCCESS)
    assert decode_software(msg.get(Attr.SOFTWARE)) == "test vector"
    assert msg.xor_address() == ("192.0.2.1", 32853)
    assert msg.verify_integrity(SHORT_KEY)
    assert msg.verify_fingerprint()
    rebuilt = Message(
        BINDING,
        SUCCESS,
        RFC5769_TID,
        [
            (Attr.SOFTWARE, b"test vector"),
            (Attr.XOR_MAPPED_ADDRESS, encode_xor_address("192.0.2.1", 32853, RFC5769_TID)),
        ],
    ).encode(SHORT_KEY, fingerprint=True, pad_byte=0x20)
    assert rebuilt == RFC5769_IPV4_RESPONSE


def test_ipv6_response() -> None:
    msg = decode(RFC5769_IPV6_RESPONSE)
    address = ("2001:db8:1234:5678:11:2233:4455:6677", 32853)
    assert msg.xor_address() == address
    assert msg.verify_integrity(SHORT_KEY)
    assert msg.verify_fingerprint()
    rebuilt = Message(
        BINDING,
        SUCCESS,
        RFC5769_TID,
        [
            (Attr.SOFTWARE, b"test vector"),
            (Attr.XOR_MAPPED_ADDRESS, encode_xor_address(*address, RFC5769_TID)),
        ],
    ).encode(SHORT_KEY, fingerprint=True, pad_byte=0x20)
    assert rebuilt == RFC5769_IPV6_RESPONSE


def test_long_term_request() -> None:
    # RFC 5769 derives "TheMatrIX" from "The\u00ADM\u00AAtr\u2168" with SASLprep;
    # OpaqueString (RFC 8265) maps differently, so the key uses the prepared form.
    key = long_term_key(LONG_TERM_USERNAME, LONG_TERM_REALM, LONG_TERM_PASSWORD)
    msg = decode(RFC5769_LONG_TERM_REQUEST)
    assert msg.transaction_id == RFC5769_LONG_TERM_TID
    assert decode_username(msg.get(Attr.USERNAME)) == LONG_TERM_USERNAME
    assert decode_nonce(msg.get(Attr.NONCE)) == RFC5769_NONCE
    assert decode_realm(msg.get(Attr.REALM)) == LONG_TERM_REALM
    assert msg.verify_integrity(key)
    assert not msg.verify_fingerprint()  # the vector has none
    assert not msg.verify_integrity(long_term_key(LONG_TERM_USERNAME, LONG_TERM_REALM, "thematrix"))
    # the wire bytes of USERNAME/REALM give the same key as the str forms
    assert long_term_key(msg.get(Attr.USERNAME), msg.get(Attr.REALM), LONG_TERM_PASSWORD) == key


def test_long_term_request_rebuilt_byte_exact() -> None:
    key = long_term_key(LONG_TERM_USERNAME, LONG_TERM_REALM, LONG_TERM_PASSWORD)
    rebuilt = Message(
        BINDING,
        REQUEST,
        RFC5769_LONG_TERM_TID,
        [
            (Attr.USERNAME, LONG_TERM_USERNAME.encode()),
            (Attr.NONCE, RFC5769_NONCE.encode()),
            (Attr.REALM, LONG_TERM_REALM.encode()),
        ],
    ).encode(key)
    assert rebuilt == RFC5769_LONG_TERM_REQUEST
