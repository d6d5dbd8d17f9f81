"""Interop with aioice's STUN implementation, both directions."""

from __future__ import annotations

import pytest

aioice_stun = pytest.importorskip("aioice.stun")

from edge.stun import (  # noqa: E402
    ALLOCATE,
    BINDING,
    REQUEST,
    SUCCESS,
    Attr,
    Message,
    decode,
    decode_ice_tiebreaker,
    decode_lifetime,
    decode_priority,
    decode_software,
    decode_username,
    encode_lifetime,
    encode_software,
    encode_xor_address,
    long_term_key,
    make_success,
    short_term_key,
)

TID = bytes.fromhex("0102030405060708090a0b0c")
KEY = short_term_key("remote-ice-password-123")


@pytest.mark.parametrize("address", [("203.0.113.5", 61000), ("2001:db8::abcd", 3478)])
def test_aioice_parses_our_binding_success(address: tuple[str, int]) -> None:
    ours = Message(
        BINDING,
        SUCCESS,
        TID,
        [
            (Attr.XOR_MAPPED_ADDRESS, encode_xor_address(*address, TID)),
            (Attr.SOFTWARE, encode_software("umedge")),
        ],
    ).encode(KEY, fingerprint=True)
    theirs = aioice_stun.parse_message(ours)  # checks FINGERPRINT itself
    assert theirs.message_method == aioice_stun.Method.BINDING
    assert theirs.message_class == aioice_stun.Class.RESPONSE
    assert theirs.transaction_id == TID
    assert theirs.attributes["XOR-MAPPED-ADDRESS"] == address
    assert theirs.attributes["SOFTWARE"] == "umedge"
    assert theirs.check_message_integrity(KEY)
    assert not theirs.check_message_integrity(b"wrong")


def test_aioice_parses_our_allocate_success() -> None:
    request = Message(ALLOCATE, REQUEST, TID)
    ours = make_success(
        request,
        [
            (Attr.XOR_RELAYED_ADDRESS, encode_xor_address("198.51.100.9", 50000, TID)),
            (Attr.XOR_MAPPED_ADDRESS, encode_xor_address("192.0.2.77", 40000, TID)),
            (Attr.LIFETIME, encode_lifetime(600)),
        ],
    )
    key = long_term_key("alice", "umedge.example", "s3cret")
    theirs = aioice_stun.parse_message(ours.encode(key, fingerprint=True))
    assert theirs.message_method == aioice_stun.Method.ALLOCATE
    assert theirs.attributes["XOR-RELAYED-ADDRESS"] == ("198.51.100.9", 50000)
    assert theirs.attributes["LIFETIME"] == 600
    assert theirs.check_message_integrity(key)


def test_we_decode_aioice_binding_request() -> None:
    theirs = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING,
        message_class=aioice_stun.Class.REQUEST,
        transaction_id=TID,
    )
    theirs.attributes["USERNAME"] = "remote:local"
    theirs.attributes["PRIORITY"] = 1853824767
    theirs.attributes["ICE-CONTROLLING"] = 0x1234567890ABCDEF
    theirs.attributes["USE-CANDIDATE"] = None
    theirs.add_message_integrity(KEY)  # also adds FINGERPRINT
    msg = decode(bytes(theirs))
    assert (msg.method, msg.msg_class, msg.transaction_id) == (BINDING, REQUEST, TID)
    assert decode_username(msg.get(Attr.USERNAME)) == "remote:local"
    assert decode_priority(msg.get(Attr.PRIORITY)) == 1853824767
    assert decode_ice_tiebreaker(msg.get(Attr.ICE_CONTROLLING)) == 0x1234567890ABCDEF
    assert msg.get(Attr.USE_CANDIDATE) == b""
    assert [t for t, _ in msg.attributes][-2:] == [Attr.MESSAGE_INTEGRITY, Attr.FINGERPRINT]
    assert msg.verify_integrity(KEY)
    assert msg.verify_fingerprint()
    assert not msg.verify_integrity(b"wrong")
    assert msg.unknown_comprehension_required() == []


def test_we_decode_aioice_responses() -> None:
    theirs = aioice_stun.Message(
        message_method=aioice_stun.Method.BINDING,
        message_class=aioice_stun.Class.RESPONSE,
        transaction_id=TID,
    )
    theirs.attributes["XOR-MAPPED-ADDRESS"] = ("2001:db8:1::5", 9)
    theirs.attributes["SOFTWARE"] = "aioice"
    theirs.add_message_integrity(KEY)
    msg = decode(bytes(theirs))
    assert msg.xor_address() == ("2001:db8:1::5", 9)
    assert decode_software(msg.get(Attr.SOFTWARE)) == "aioice"
    assert msg.verify_integrity(KEY) and msg.verify_fingerprint()

    error = aioice_stun.Message(
        message_method=aioice_stun.Method.ALLOCATE,
        message_class=aioice_stun.Class.ERROR,
        transaction_id=TID,
    )
    error.attributes["ERROR-CODE"] = (438, "Stale Nonce")
    error.attributes["LIFETIME"] = 0
    error.add_fingerprint()
    msg = decode(bytes(error))
    assert msg.error_code() == (438, "Stale Nonce")
    assert decode_lifetime(msg.get(Attr.LIFETIME)) == 0
    assert msg.verify_fingerprint()
    assert not msg.verify_integrity(KEY)
