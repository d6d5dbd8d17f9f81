"""[MS-TURN] property tests: round trips and robustness to arbitrary input."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import stun
from edge.msturn import MsAttr, MsMessage, MsTurnDecodeError, decode, is_ms_turn

FAST = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

tids = st.binary(min_size=16, max_size=16).filter(
    lambda t: t[:4] != b"\x21\x12\xa4\x42"
)
attr_types = st.integers(0, 0xFFFF).filter(
    lambda t: t not in (MsAttr.MESSAGE_INTEGRITY, MsAttr.MAGIC_COOKIE)
)
attributes = st.lists(st.tuples(attr_types, st.binary(max_size=40)), max_size=8)
messages = st.builds(MsMessage, st.integers(0, 0x3FFF), tids, attributes)
keys = st.binary(min_size=1, max_size=32)


@FAST
@given(messages)
def test_round_trip(m: MsMessage) -> None:
    wire = m.encode()
    assert is_ms_turn(wire)
    assert decode(wire) == m
    assert decode(wire).encode() == wire


@FAST
@given(messages, keys, st.booleans())
def test_integrity_round_trip(m: MsMessage, key: bytes, sha256: bool) -> None:
    back = decode(m.encode(key, sha256=sha256))
    assert back.verify_integrity(key)
    assert not back.verify_integrity(key + b"x")


def _decode_or_error(data: bytes) -> None:
    try:
        m = decode(data)
    except MsTurnDecodeError:
        return
    m.verify_integrity(b"k")
    m.ms_version()
    assert m.encode() == data


@FAST
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    _decode_or_error(data)
    is_ms_turn(data)


@FAST
@given(st.binary(max_size=120))
def test_arbitrary_bodies_behind_a_valid_header(body: bytes) -> None:
    head = MsMessage(3, bytes(16)).encode()  # header + MAGIC-COOKIE attribute
    _decode_or_error(head[:2] + (8 + len(body)).to_bytes(2, "big") + head[4:] + body)


@FAST
@given(messages, keys, st.data())
def test_mutations(m: MsMessage, key: bytes, data: st.DataObject) -> None:
    wire = bytearray(m.encode(key))
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if not wire:
            break
        i = data.draw(st.integers(0, len(wire) - 1))
        if op == "flip":
            wire[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del wire[i]
        else:
            wire.insert(i, data.draw(st.integers(0, 255)))
    _decode_or_error(bytes(wire))


@FAST
@given(
    st.integers(0, 0xFFF),
    st.sampled_from(list(stun.MessageClass)),
    st.binary(min_size=12, max_size=12),
    st.lists(st.tuples(st.integers(0, 0x7FFF), st.binary(max_size=20)), max_size=5),
    st.booleans(),
)
def test_rfc_stun_is_never_ms_turn(method, cls, tid, attrs, with_key) -> None:
    attrs = [
        (t, v)
        for t, v in attrs
        if t
        not in (
            stun.Attr.MESSAGE_INTEGRITY,
            stun.Attr.MESSAGE_INTEGRITY_SHA256,
            stun.Attr.FINGERPRINT,
        )
    ]
    wire = stun.Message(method, cls, tid, attrs).encode(b"k" if with_key else None)
    assert not is_ms_turn(wire)
    try:
        decode(wire)
    except MsTurnDecodeError:
        pass
    else:
        raise AssertionError("RFC STUN decoded as MS-TURN")


@FAST
@given(messages)
def test_ms_turn_is_never_rfc_stun(m: MsMessage) -> None:
    wire = m.encode()
    try:
        stun.decode(wire)
    except stun.StunDecodeError:
        return
    raise AssertionError("MS-TURN decoded as RFC STUN")
