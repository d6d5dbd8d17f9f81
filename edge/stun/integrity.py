"""MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT over wire bytes.

Each check covers the message up to the start of its own attribute, with
the header length field rewritten to end just after that attribute
(RFC 8489 §14.5-§14.7).  The functions take the message bytes, the offset
where the check attribute starts (``end``) and the length the header must
claim, so the encoder and the verifier share one definition.
"""

from __future__ import annotations

import hmac
import struct
import zlib

from .constants import FINGERPRINT_XOR

__all__ = ["hmac_sha1", "hmac_sha256", "fingerprint"]

_LENGTH = struct.Struct("!H")


def _covered(data: bytes | bytearray, end: int, body_length: int) -> bytes:
    return b"".join((data[:2], _LENGTH.pack(body_length), data[4:end]))


def hmac_sha1(key: bytes, data: bytes | bytearray, end: int, body_length: int) -> bytes:
    """The 20-byte MESSAGE-INTEGRITY value for ``data[:end]`` claiming ``body_length``."""
    return hmac.digest(key, _covered(data, end, body_length), "sha1")


def hmac_sha256(key: bytes, data: bytes | bytearray, end: int, body_length: int) -> bytes:
    """The full 32-byte HMAC-SHA256; truncate it for a short MESSAGE-INTEGRITY-SHA256."""
    return hmac.digest(key, _covered(data, end, body_length), "sha256")


def fingerprint(data: bytes | bytearray, end: int, body_length: int) -> int:
    """The FINGERPRINT value (CRC-32 XOR 0x5354554E) as an unsigned 32-bit int."""
    return zlib.crc32(_covered(data, end, body_length)) ^ FINGERPRINT_XOR
