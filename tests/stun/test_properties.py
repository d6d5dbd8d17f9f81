"""Property tests: round trips, robustness to arbitrary and mutated input, integrity."""

from __future__ import annotations

import struct
from collections.abc import Callable

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edge.stun import (
    MAGIC_COOKIE,
    Attr,
    Message,
    MessageClass,
    StunDecodeError,
    decode,
    decode_address,
    decode_address_error_code,
    decode_address_family,
    decode_alternate_domain,
    decode_change_request,
    decode_channel_data,
    decode_channel_number,
    decode_error_code,
    decode_even_port,
    decode_flag,
    decode_ice_tiebreaker,
    decode_icmp,
    decode_nonce,
    decode_password_algorithm,
    decode_password_algorithms,
    decode_realm,
    decode_requested_transport,
    decode_reservation_token,
    decode_response_port,
    decode_software,
    decode_u32,
    decode_unknown_attributes,
    decode_userhash,
    decode_username,
    decode_xor_address,
    nonce_features,
    split_frames,
)

from .vectors import ALL_VALID

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CHECK_TYPES = (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256, Attr.FINGERPRINT)

methods = st.integers(0, 0xFFF)
classes = st.sampled_from(list(MessageClass))
tids = st.binary(min_size=12, max_size=12)
attr_types = st.one_of(
    st.sampled_from([int(a) for a in Attr if a not in CHECK_TYPES]),
    st.integers(0, 0xFFFF),
).filter(lambda t: t not in CHECK_TYPES)
attributes = st.lists(st.tuples(attr_types, st.binary(max_size=40)), max_size=8)
messages = st.builds(Message, methods, classes, tids, attributes)


def _value_decoders(tid: bytes) -> dict[int, Callable[[bytes], object]]:
    xor = lambda v: decode_xor_address(v, tid)  # noqa: E731
    return {
        Attr.MAPPED_ADDRESS: decode_address,
        Attr.ALTERNATE_SERVER: decode_address,
        Attr.RESPONSE_ORIGIN: decode_address,
        Attr.OTHER_ADDRESS: decode_address,
        Attr.XOR_MAPPED_ADDRESS: xor,
        Attr.XOR_PEER_ADDRESS: xor,
        Attr.XOR_RELAYED_ADDRESS: xor,
        Attr.ERROR_CODE: decode_error_code,
        Attr.ADDRESS_ERROR_CODE: decode_address_error_code,
        Attr.UNKNOWN_ATTRIBUTES: decode_unknown_attributes,
        Attr.LIFETIME: decode_u32,
        Attr.PRIORITY: decode_u32,
        Attr.CONNECTION_ID: decode_u32,
        Attr.CACHE_TIMEOUT: decode_u32,
        Attr.ICE_CONTROLLED: decode_ice_tiebreaker,
        Attr.ICE_CONTROLLING: decode_ice_tiebreaker,
        Attr.REQUESTED_TRANSPORT: decode_requested_transport,
        Attr.CHANNEL_NUMBER: decode_channel_number,
        Attr.EVEN_PORT: decode_even_port,
        Attr.RESERVATION_TOKEN: decode_reservation_token,
        Attr.REQUESTED_ADDRESS_FAMILY: decode_address_family,
        Attr.ADDITIONAL_ADDRESS_FAMILY: decode_address_family,
        Attr.DONT_FRAGMENT: decode_flag,
        Attr.USE_CANDIDATE: decode_flag,
        Attr.ICMP: decode_icmp,
        Attr.PASSWORD_ALGORITHM: decode_password_algorithm,
        Attr.PASSWORD_ALGORITHMS: decode_password_algorithms,
        Attr.USERHASH: decode_userhash,
        Attr.USERNAME: decode_username,
        Attr.REALM: decode_realm,
        Attr.NONCE: decode_nonce,
        Attr.SOFTWARE: decode_software,
        Attr.ALTERNATE_DOMAIN: decode_alternate_domain,
        Attr.CHANGE_REQUEST: decode_change_request,
        Attr.RESPONSE_PORT: decode_response_port,
    }


def probe(data: bytes) -> Message | None:
    """Everything a server would do with untrusted bytes; only StunDecodeError may escape."""
    for frame_check in (decode_channel_data, split_frames):
        try:
            frame_check(data)
        except StunDecodeError:
            pass
    try:
        msg = decode(data)
    except StunDecodeError:
        return None
    msg.verify_integrity(b"key")
    msg.verify_fingerprint()
    msg.unknown_comprehension_required()
    msg.ignored_attributes()
    msg.integrity_attribute()
    decoders = _value_decoders(msg.transaction_id)
    for attr_type, value in msg.attributes:
        decoder = decoders.get(attr_type)
        try:
            if decoder is not None:
                decoder(value)
            decode_xor_address(value, msg.transaction_id)
            decode_error_code(value)
            decode_password_algorithms(value)
        except StunDecodeError:
            pass
        nonce_features(value)
    return msg


# --- round trips -------------------------------------------------------------------


@FAST
@given(messages)
def test_round_trip(msg: Message) -> None:
    encoded = msg.encode()
    decoded = decode(encoded)
    assert decoded == msg
    assert decoded.raw == encoded
    assert decoded.encode() == encoded


@FAST
@given(messages, st.binary(min_size=1, max_size=64), st.booleans(), st.booleans(),
       st.sampled_from([16, 20, 24, 28, 32]))
def test_round_trip_with_checks(
    msg: Message, key: bytes, sha256: bool, fingerprint: bool, sha256_length: int
) -> None:
    decoded = decode(msg.encode(key, sha256=sha256, sha256_length=sha256_length,
                                fingerprint=fingerprint))
    added = [t for t, _ in decoded.attributes[len(msg.attributes):]]
    expected = [Attr.MESSAGE_INTEGRITY_SHA256 if sha256 else Attr.MESSAGE_INTEGRITY]
    assert added == expected + ([Attr.FINGERPRINT] if fingerprint else [])
    assert decoded.attributes[: len(msg.attributes)] == msg.attributes
    assert decoded.verify_integrity(key)
    assert decoded.verify_fingerprint() is fingerprint
    assert decoded.without_integrity() == msg


# --- robustness ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    probe(data)


@st.composite
def stun_shaped(draw: st.DrawFn) -> bytes:
    """A valid header over a random attribute soup (so parsing gets past the header)."""
    words = draw(st.integers(0, 30))
    body = draw(st.binary(min_size=4 * words, max_size=4 * words))
    mtype = draw(st.integers(0, 0x3FFF))
    return struct.pack("!HHI", mtype, len(body), MAGIC_COOKIE) + draw(tids) + body


@st.composite
def tlv_shaped(draw: st.DrawFn) -> bytes:
    """Well-framed TLVs of types the codec knows, with random values."""
    tid = draw(tids)
    attrs = draw(st.lists(st.tuples(st.sampled_from(list(Attr)), st.binary(max_size=36)),
                          max_size=6))
    body = b"".join(
        struct.pack("!HH", t, len(v)) + v + bytes(-len(v) % 4) for t, v in attrs
    )
    return struct.pack("!HHI", 0x0001, len(body), MAGIC_COOKIE) + tid + body


@FAST
@given(st.one_of(stun_shaped(), tlv_shaped()))
def test_stun_shaped_garbage(data: bytes) -> None:
    probe(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid message (a vector or a generated one) with one or more edits."""
    base = draw(st.one_of(
        st.sampled_from(ALL_VALID),
        st.builds(lambda m, k, f: m.encode(k, fingerprint=f),
                  messages, st.one_of(st.none(), st.binary(min_size=1, max_size=8)),
                  st.booleans()),
    ))
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "length", "insert", "delete"]))
        if kind == "flip" and data:
            index = draw(st.integers(0, len(data) - 1))
            data[index] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "length" and len(data) >= 4:
            data[2:4] = draw(st.integers(0, 0xFFFF)).to_bytes(2, "big")
        elif kind == "insert":
            index = draw(st.integers(0, len(data)))
            data[index:index] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            index = draw(st.integers(0, len(data) - 1))
            del data[index : index + draw(st.integers(1, 8))]
    return bytes(data)


@settings(max_examples=300, deadline=None)
@given(mutated())
def test_mutations_of_valid_messages(data: bytes) -> None:
    probe(data)


# --- integrity -----------------------------------------------------------------------


@FAST
@given(messages, st.binary(min_size=1, max_size=64), st.booleans(), st.booleans(), st.data())
def test_any_flipped_byte_breaks_integrity_or_fingerprint(
    msg: Message, key: bytes, sha256: bool, fingerprint: bool, data: st.DataObject
) -> None:
    encoded = bytearray(msg.encode(key, sha256=sha256, fingerprint=fingerprint))
    index = data.draw(st.integers(0, len(encoded) - 1), label="index")
    encoded[index] ^= data.draw(st.integers(1, 255), label="xor")
    try:
        tampered = decode(bytes(encoded))
    except StunDecodeError:
        return
    integrity_ok = tampered.verify_integrity(key)
    if fingerprint:
        # bytes after MESSAGE-INTEGRITY are covered by FINGERPRINT only
        assert not (integrity_ok and tampered.verify_fingerprint())
    else:
        assert not integrity_ok


@FAST
@given(messages, st.binary(min_size=1, max_size=64), st.binary(min_size=1, max_size=64),
       st.booleans())
def test_wrong_key_fails(msg: Message, key: bytes, other: bytes, sha256: bool) -> None:
    # HMAC zero-pads keys shorter than its block, so b"k" and b"k\0" are one key
    assume(other.rstrip(b"\0") != key.rstrip(b"\0"))
    decoded = decode(msg.encode(key, sha256=sha256))
    assert decoded.verify_integrity(key)
    assert not decoded.verify_integrity(other)
