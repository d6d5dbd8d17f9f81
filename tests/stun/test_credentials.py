"""RFC 8489 long-term auth: B.1 vector, keys, OpaqueString, USERHASH, nonce cookie."""

from __future__ import annotations

import hashlib

import pytest

from edge.stun import (
    BINDING,
    FEATURE_PASSWORD_ALGORITHMS,
    FEATURE_USERNAME_ANONYMITY,
    MD5,
    REQUEST,
    SHA256,
    Attr,
    Message,
    PasswordAlgorithm,
    StunDecodeError,
    decode,
    decode_password_algorithm,
    decode_password_algorithms,
    decode_userhash,
    encode_password_algorithm,
    encode_password_algorithms,
    long_term_key,
    nonce_features,
    nonce_with_features,
    opaque_string,
    short_term_key,
    userhash,
)

from .vectors import (
    LONG_TERM_PASSWORD,
    LONG_TERM_REALM,
    LONG_TERM_USERNAME,
    RFC5769_LONG_TERM_TID,
    RFC8489_B1_AS_PUBLISHED,
    RFC8489_B1_REQUEST,
    RFC8489_NONCE,
)

SHA256_KEY = long_term_key(LONG_TERM_USERNAME, LONG_TERM_REALM, LONG_TERM_PASSWORD, SHA256)


def test_b1_sha256_request_verifies() -> None:
    msg = decode(RFC8489_B1_REQUEST)
    assert msg.integrity_attribute() == Attr.MESSAGE_INTEGRITY_SHA256
    assert msg.verify_integrity(SHA256_KEY)
    assert msg.get(Attr.USERHASH) == userhash(LONG_TERM_USERNAME, LONG_TERM_REALM)
    assert decode_password_algorithm(msg.get(Attr.PASSWORD_ALGORITHM)) == (SHA256, b"")
    assert nonce_features(msg.get(Attr.NONCE)) == FEATURE_USERNAME_ANONYMITY
    # the MD5 key of the same credentials must not verify a SHA-256 MAC
    assert not msg.verify_integrity(
        long_term_key(LONG_TERM_USERNAME, LONG_TERM_REALM, LONG_TERM_PASSWORD, MD5)
    )


def test_b1_rebuilt_byte_exact() -> None:
    rebuilt = Message(
        BINDING,
        REQUEST,
        RFC5769_LONG_TERM_TID,
        [
            (Attr.USERHASH, userhash(LONG_TERM_USERNAME, LONG_TERM_REALM)),
            (Attr.NONCE, RFC8489_NONCE.encode()),
            (Attr.REALM, LONG_TERM_REALM.encode()),
            (Attr.PASSWORD_ALGORITHM, encode_password_algorithm(SHA256)),
        ],
    ).encode(SHA256_KEY, sha256=True)
    assert rebuilt == RFC8489_B1_REQUEST


def test_b1_as_published_is_refused() -> None:
    # The printed vector's length field does not match its contents (erratum).
    with pytest.raises(StunDecodeError):
        decode(RFC8489_B1_AS_PUBLISHED)


def test_b1_tampered_byte_fails() -> None:
    for index in (1, 9, 30, 70, 120):
        data = bytearray(RFC8489_B1_REQUEST)
        data[index] ^= 0x01
        try:
            msg = decode(bytes(data))
        except StunDecodeError:
            continue
        assert not msg.verify_integrity(SHA256_KEY), index


def test_truncated_sha256_integrity() -> None:
    base = Message(BINDING, REQUEST, bytes(12), [(Attr.USERNAME, b"user")])
    for size in (16, 20, 24, 28, 32):
        msg = decode(base.encode(SHA256_KEY, sha256=True, sha256_length=size))
        assert len(msg.get(Attr.MESSAGE_INTEGRITY_SHA256)) == size
        assert msg.verify_integrity(SHA256_KEY)
        assert not msg.verify_integrity(b"x" * 32)
    for size in (12, 18, 36):
        with pytest.raises(ValueError):
            base.encode(SHA256_KEY, sha256=True, sha256_length=size)


def test_truncation_claimed_length_matters() -> None:
    # A 32-byte MAC cut to 16 bytes by an attacker was computed over a header
    # that claimed 32; it must not verify as a 16-byte one.
    full = decode(
        Message(BINDING, REQUEST, bytes(12), [(Attr.USERNAME, b"u")]).encode(
            SHA256_KEY, sha256=True
        )
    )
    value = full.get(Attr.MESSAGE_INTEGRITY_SHA256)
    cut = Message(
        BINDING,
        REQUEST,
        bytes(12),
        [(Attr.USERNAME, b"u"), (Attr.MESSAGE_INTEGRITY_SHA256, value[:16])],
    )
    assert not decode(cut.encode()).verify_integrity(SHA256_KEY)


def test_sha256_preferred_over_sha1_when_both_present() -> None:
    msg = Message(BINDING, REQUEST, bytes(12), [(Attr.USERNAME, b"u")])
    sha1_only = decode(msg.encode(b"k1"))
    both = Message(BINDING, REQUEST, bytes(12), sha1_only.attributes).encode(b"k2", sha256=True)
    decoded = decode(both)
    assert decoded.integrity_attribute() == Attr.MESSAGE_INTEGRITY_SHA256
    assert decoded.verify_integrity(b"k2")
    assert not decoded.verify_integrity(b"k1")


def test_long_term_key_formulas() -> None:
    material = f"{LONG_TERM_USERNAME}:{LONG_TERM_REALM}:{LONG_TERM_PASSWORD}".encode()
    assert long_term_key(LONG_TERM_USERNAME, LONG_TERM_REALM, LONG_TERM_PASSWORD) == (
        hashlib.md5(material).digest()
    )
    assert SHA256_KEY == hashlib.sha256(material).digest()
    assert len(SHA256_KEY) == 32
    with pytest.raises(ValueError):
        long_term_key("u", "r", "p", 0x7777)


def test_short_term_key() -> None:
    assert short_term_key("VOkJxbRl1RmTxUk/WvJxBt") == b"VOkJxbRl1RmTxUk/WvJxBt"
    assert short_term_key("pass\u00A0word") == b"pass word"  # non-ASCII space mapped
    with pytest.raises(ValueError):
        short_term_key("")


def test_userhash_matches_rfc8489() -> None:
    expected = bytes.fromhex(
        "4a3cf38fef6992bda952c6780417da0f24819415569e60b205c46e41407f1704"
    )
    assert userhash(LONG_TERM_USERNAME, LONG_TERM_REALM) == expected
    assert userhash(LONG_TERM_USERNAME.encode(), b"example.org") == expected
    assert decode_userhash(expected) == expected
    with pytest.raises(StunDecodeError):
        decode_userhash(expected[:31])


def test_opaque_string_profile() -> None:
    assert opaque_string("TheMatrIX") == "TheMatrIX"
    # NFC: e + combining acute becomes the precomposed letter
    assert opaque_string("Caf\u0065\u0301") == "Caf\u00E9"
    # non-ASCII spaces become ASCII space; width/case/compat are kept as typed
    assert opaque_string("a\u3000b\u2002c") == "a b c"
    assert opaque_string("\uFF21\u2168") == "\uFF21\u2168"
    assert opaque_string("MªtrⅨ") == "MªtrⅨ"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "tab\there",
        "nul\x00",
        "del\x7f",
        "soft\u00ADhyphen",  # default-ignorable (why RFC 5769's SASLprep input is refused)
        "zero\u200Bwidth",
        "bidi\u202Eoverride",
        "private\uE000use",
        "line\u2028sep",
        "unassigned\U000E0080x",
        "variation\uFE0Fselector",
        "old\u1100jamo",
        "surrogate\ud800",
    ],
)
def test_opaque_string_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        opaque_string(bad)


def test_sasl_prepped_rfc5769_password_is_refused_by_opaque_string() -> None:
    with pytest.raises(ValueError):
        long_term_key(LONG_TERM_USERNAME, LONG_TERM_REALM, "The\u00ADM\u00AAtr\u2168")


def test_nonce_cookie_round_trip() -> None:
    both = FEATURE_PASSWORD_ALGORITHMS | FEATURE_USERNAME_ANONYMITY
    nonce = nonce_with_features(both, "f//499k954d6OL34oL9FSTvy64sA")
    assert nonce.startswith("obMatJos2")
    assert nonce[9:13] == "AAAD"
    assert nonce_features(nonce) == both
    assert nonce_features(nonce.encode()) == both
    assert nonce_with_features(FEATURE_USERNAME_ANONYMITY, "f//499k954d6OL34oL9FSTvy64sA") == (
        RFC8489_NONCE
    )
    for features in (0, 1, 0x123456, 0xFFFFFF):
        assert nonce_features(nonce_with_features(features, "x")) == features


@pytest.mark.parametrize(
    "nonce",
    [b"", b"f//499k954d6OL34oL9FSTvy64sA", b"obMatJos2", b"obMatJos2AA", b"obMatJos2AA?Bxx", b"obmatjos2AAAB"],
)
def test_nonce_without_valid_cookie(nonce: bytes) -> None:
    assert nonce_features(nonce) is None


def test_nonce_with_features_validates() -> None:
    with pytest.raises(ValueError):
        nonce_with_features(1 << 24, "x")
    with pytest.raises(ValueError):
        nonce_with_features(1, "x" * 120)
    with pytest.raises(ValueError):
        nonce_with_features(1, 'quote"')


def test_password_algorithms_codec() -> None:
    value = encode_password_algorithms([PasswordAlgorithm.SHA256, (0x7777, b"abc"), MD5])
    assert decode_password_algorithms(value) == [(SHA256, b""), (0x7777, b"abc"), (MD5, b"")]
    assert len(value) % 4 == 0
    assert encode_password_algorithm(MD5) == b"\x00\x01\x00\x00"
    assert decode_password_algorithm(encode_password_algorithm(0x10, b"xy")) == (0x10, b"xy")
    for bad in (b"\x00\x02\xff\xff\x00\x00", b"\x00\x02\x00", b"\x00\x01\x00\x04ab"):
        with pytest.raises(StunDecodeError):
            decode_password_algorithms(bad)
    for bad in (b"\x00\x02", b"\x00\x02\x00\x08abcd", b"\x00\x01\x00\x00\x00\x00\x00\x00"):
        with pytest.raises(StunDecodeError):
            decode_password_algorithm(bad)
