"""Keys for MESSAGE-INTEGRITY(-SHA256), USERHASH and the nonce cookie.

RFC 8489 §9.1.1 (short-term) and §9.2.2 (long-term) define the HMAC keys;
§14.4 the USERHASH; §9.2 the "nonce cookie" a server puts at the front of
its NONCE so that a client can detect a bid-down of the security features
(an attacker stripping PASSWORD-ALGORITHMS or forcing plain USERNAME).

Text arguments (``str``) go through OpaqueString (RFC 8265) before hashing.
``bytes`` arguments are taken as already prepared, exactly as they appear on
the wire (e.g. the USERNAME attribute value), and are hashed unchanged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from .constants import NONCE_COOKIE, PasswordAlgorithm
from .precis import opaque_string

__all__ = [
    "short_term_key",
    "long_term_key",
    "userhash",
    "nonce_with_features",
    "nonce_features",
]

_COOKIE_BYTES = NONCE_COOKIE.encode("ascii")
_COOKIE_LEN = len(_COOKIE_BYTES)
#: RFC 8489 §14.10: NONCE is fewer than 128 characters.
_MAX_NONCE_CHARS = 127


def _prepared(value: str | bytes) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return opaque_string(value).encode("utf-8")


def short_term_key(password: str | bytes) -> bytes:
    """RFC 8489 §9.1.1: the key is OpaqueString(password) itself."""
    return _prepared(password)


def long_term_key(
    username: str | bytes,
    realm: str | bytes,
    password: str | bytes,
    algorithm: int = PasswordAlgorithm.MD5,
) -> bytes:
    """RFC 8489 §9.2.2: H(username ":" OpaqueString(realm) ":" OpaqueString(password)).

    A ``str`` username also goes through OpaqueString: RFC 8489 §14.3 says the
    USERNAME on the wire has already been through it, and the profile is
    idempotent, so a str and its wire bytes give the same key.

    ``algorithm`` is a PASSWORD-ALGORITHM number: MD5 (0x0001, 16-byte key,
    also the RFC 5389 key) or SHA-256 (0x0002, 32-byte key).
    """
    material = b":".join((_prepared(username), _prepared(realm), _prepared(password)))
    if algorithm == PasswordAlgorithm.MD5:
        return hashlib.md5(material, usedforsecurity=False).digest()
    if algorithm == PasswordAlgorithm.SHA256:
        return hashlib.sha256(material).digest()
    raise ValueError(f"unsupported password algorithm {algorithm:#06x}")


def userhash(username: str | bytes, realm: str | bytes) -> bytes:
    """RFC 8489 §14.4: SHA-256(OpaqueString(username) ":" OpaqueString(realm))."""
    return hashlib.sha256(_prepared(username) + b":" + _prepared(realm)).digest()


def nonce_with_features(features: int, opaque: str) -> str:
    """A NONCE value that starts with the RFC 8489 §9.2 nonce cookie.

    ``features`` is the 24-bit Security Feature Set (``SecurityFeature``
    bits); ``opaque`` is the server's own nonce material that follows it.
    """
    if not 0 <= features <= 0xFFFFFF:
        raise ValueError("security features are 24 bits")
    encoded = base64.b64encode(features.to_bytes(3, "big")).decode("ascii")
    nonce = NONCE_COOKIE + encoded + opaque
    if len(nonce) > _MAX_NONCE_CHARS:
        raise ValueError("NONCE must be fewer than 128 characters")
    if any(ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in opaque):
        raise ValueError("NONCE must be qdtext (no quotes, backslashes or controls)")
    return nonce


def nonce_features(nonce: bytes | str) -> int | None:
    """The Security Feature Set of a cookie NONCE, or None without a valid cookie.

    A client compares this with what the server actually offered: a feature
    bit set here but missing from the response (say, no PASSWORD-ALGORITHMS)
    means someone stripped it, and the client must not bid down.
    """
    raw = nonce.encode("utf-8") if isinstance(nonce, str) else bytes(nonce)
    if len(raw) < _COOKIE_LEN + 4 or not raw.startswith(_COOKIE_BYTES):
        return None
    try:
        bits = binascii.a2b_base64(raw[_COOKIE_LEN : _COOKIE_LEN + 4], strict_mode=True)
    except (binascii.Error, ValueError):
        return None
    if len(bits) != 3:
        return None
    return int.from_bytes(bits, "big")
