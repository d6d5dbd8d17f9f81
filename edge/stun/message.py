"""STUN message framing: ``decode`` bytes to a :class:`Message` and back.

Decoding is strict about structure (RFC 8489 §5, §14) and lazy about
content: attributes stay raw ``(type, value)`` pairs, and their values are
only parsed when asked (see :mod:`edge.stun.attributes`).  The decoded
message keeps the exact bytes it came from, because MESSAGE-INTEGRITY and
FINGERPRINT are checked over the bytes as received, not as re-encoded.

Attribute ordering rules enforced here:

* nothing may follow FINGERPRINT (decode error);
* after MESSAGE-INTEGRITY only MESSAGE-INTEGRITY-SHA256 and FINGERPRINT
  count, after MESSAGE-INTEGRITY-SHA256 only FINGERPRINT (RFC 8489 §14.5,
  §14.6).  Other attributes there are *kept* (so the message round-trips)
  but ignored: ``get()`` does not return them, they never make the server
  answer 420, and they are listed by ``ignored_attributes()``.
"""

from __future__ import annotations

import hmac
import secrets
import struct
from collections.abc import Iterable

from .attributes import Address, decode_error_code, decode_xor_address
from .constants import (
    HEADER_LENGTH,
    KNOWN_ATTRIBUTES,
    MAGIC_COOKIE,
    Attr,
    MessageClass,
    Method,
)
from .errors import StunDecodeError
from .integrity import fingerprint, hmac_sha1, hmac_sha256

__all__ = ["Message", "decode", "message_type", "split_message_type"]

_HEADER = struct.Struct("!HHI12s")
_HEAD8 = struct.Struct("!HHI")
_TL = struct.Struct("!HH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

_MI = int(Attr.MESSAGE_INTEGRITY)
_MI256 = int(Attr.MESSAGE_INTEGRITY_SHA256)
_FP = int(Attr.FINGERPRINT)
_CHECKS = frozenset((_MI, _MI256, _FP))
_CLASSES = tuple(MessageClass)  # index = C1C0
_METHOD_NAMES = {int(m): m.name for m in Method}
_ATTR_NAMES = {int(a): a.name for a in Attr}
_NO_IGNORED: frozenset[int] = frozenset()

# decoder states: which check attributes have been seen so far
_OPEN, _AFTER_MI, _AFTER_MI256, _AFTER_FP = range(4)


def message_type(method: int, msg_class: int) -> int:
    """The 14-bit message type: method bits M0-M11 with C0 and C1 interleaved.

    Layout (RFC 8489 §5): ``M11..M7 C1 M6..M4 C0 M3..M0``.
    """
    if not 0 <= method <= 0xFFF:
        raise ValueError(f"method out of range: {method:#x}")
    if not 0 <= msg_class <= 3:
        raise ValueError(f"class out of range: {msg_class}")
    return (
        (method & 0x000F)
        | ((method & 0x0070) << 1)
        | ((method & 0x0F80) << 2)
        | ((msg_class & 0b01) << 4)
        | ((msg_class & 0b10) << 7)
    )


def split_message_type(mtype: int) -> tuple[int, MessageClass]:
    """Inverse of :func:`message_type`: ``(method, class)``."""
    method = (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)
    return method, _CLASSES[((mtype >> 4) & 0b01) | ((mtype >> 7) & 0b10)]


class Message:
    """One STUN message: header fields plus raw attributes in wire order.

    ``raw`` holds the bytes a decoded message came from (``None`` for one
    built in code); it is not updated if ``attributes`` is edited later.
    """

    __slots__ = (
        "method",
        "msg_class",
        "transaction_id",
        "attributes",
        "raw",
        "_ignored",
        "_mi_at",
        "_mi256_at",
        "_fp_at",
    )

    method: int
    msg_class: int
    transaction_id: bytes
    attributes: list[tuple[int, bytes]]
    raw: bytes | None

    def __init__(
        self,
        method: int,
        msg_class: int,
        transaction_id: bytes | None = None,
        attributes: Iterable[tuple[int, bytes]] = (),
    ) -> None:
        if transaction_id is None:
            transaction_id = secrets.token_bytes(12)
        if len(transaction_id) != 12:
            raise ValueError("transaction id must be 12 bytes")
        message_type(method, msg_class)  # range checks
        self.method = method
        self.msg_class = _CLASSES[msg_class]
        self.transaction_id = bytes(transaction_id)
        self.attributes = list(attributes)
        self.raw = None
        self._ignored: frozenset[int] | None = None
        self._mi_at = self._mi256_at = self._fp_at = -1

    # --- reading -------------------------------------------------------------

    def _ignored_indexes(self) -> frozenset[int]:
        # decode() records this; a message built in code is rescanned each
        # time, since its attribute list may still be growing
        if self._ignored is None:
            return _scan_ignored(self.attributes)
        return self._ignored

    def get(self, attr_type: int) -> bytes | None:
        """The value of the first ``attr_type`` attribute that counts, or None."""
        ignored = self._ignored_indexes()
        for index, (t, value) in enumerate(self.attributes):
            if t == attr_type and (not ignored or index not in ignored):
                return value
        return None

    def get_all(self, attr_type: int) -> list[bytes]:
        """Every value of ``attr_type`` that counts, in order (e.g. XOR-PEER-ADDRESS)."""
        ignored = self._ignored_indexes()
        return [
            value
            for index, (t, value) in enumerate(self.attributes)
            if t == attr_type and index not in ignored
        ]

    def ignored_attributes(self) -> list[tuple[int, bytes]]:
        """Attributes after the integrity check that RFC 8489 says to ignore."""
        ignored = self._ignored_indexes()
        return [attr for index, attr in enumerate(self.attributes) if index in ignored]

    def unknown_comprehension_required(self) -> list[int]:
        """Types 0x0000-0x7FFF this codec does not know: answer 420 with these."""
        ignored = self._ignored_indexes()
        unknown: list[int] = []
        for index, (t, _) in enumerate(self.attributes):
            if t < 0x8000 and t not in KNOWN_ATTRIBUTES and t not in unknown:
                if index not in ignored:
                    unknown.append(t)
        return unknown

    def integrity_attribute(self) -> int | None:
        """Which integrity check the message carries (SHA-256 preferred), if any.

        A server answers with the same kind the request used (RFC 8489 §9.2.4).
        """
        if self.get(_MI256) is not None:
            return Attr.MESSAGE_INTEGRITY_SHA256
        if self.get(_MI) is not None:
            return Attr.MESSAGE_INTEGRITY
        return None

    def error_code(self) -> tuple[int, str] | None:
        """ERROR-CODE as ``(code, reason)``; StunDecodeError if malformed."""
        value = self.get(Attr.ERROR_CODE)
        return None if value is None else decode_error_code(value)

    def xor_address(self, attr_type: int = Attr.XOR_MAPPED_ADDRESS) -> Address | None:
        """First XOR-*-ADDRESS of ``attr_type`` as ``(ip, port)``; StunDecodeError if malformed."""
        value = self.get(attr_type)
        return None if value is None else decode_xor_address(value, self.transaction_id)

    # --- checks ---------------------------------------------------------------

    def _wire(self) -> Message:
        if self.raw is not None:
            return self
        return decode(self.encode())

    def verify_integrity(self, key: bytes) -> bool:
        """Check MESSAGE-INTEGRITY-SHA256 if present, else MESSAGE-INTEGRITY.

        Constant-time compare; a truncated SHA-256 value (16-28 bytes) is
        compared against the same-length prefix of the HMAC (RFC 8489 §14.6).
        False when the message carries neither.
        """
        try:
            wire = self._wire()
        except (StunDecodeError, ValueError):
            return False
        raw = wire.raw
        assert raw is not None
        at = wire._mi256_at
        if at >= 0:
            size = _U16.unpack_from(raw, at + 2)[0]
            expected = hmac_sha256(key, raw, at, at - HEADER_LENGTH + 4 + size)[:size]
        else:
            at = wire._mi_at
            if at < 0:
                return False
            size = 20
            expected = hmac_sha1(key, raw, at, at - HEADER_LENGTH + 24)
        return hmac.compare_digest(expected, raw[at + 4 : at + 4 + size])

    def verify_fingerprint(self) -> bool:
        """True if a FINGERPRINT is present and matches; False otherwise."""
        try:
            wire = self._wire()
        except (StunDecodeError, ValueError):
            return False
        raw = wire.raw
        at = wire._fp_at
        if raw is None or at < 0:
            return False
        expected = fingerprint(raw, at, at - HEADER_LENGTH + 8)
        received: int = _U32.unpack_from(raw, at + 4)[0]
        return expected == received

    # --- writing --------------------------------------------------------------

    def encode(
        self,
        integrity_key: bytes | None = None,
        *,
        sha256: bool = False,
        sha256_length: int = 32,
        fingerprint: bool = False,
        pad_byte: int = 0,
    ) -> bytes:
        """Serialize; optionally append MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT.

        ``integrity_key`` appends MESSAGE-INTEGRITY (HMAC-SHA1), or with
        ``sha256=True`` MESSAGE-INTEGRITY-SHA256 truncated to
        ``sha256_length`` bytes (16-32, multiple of 4).  ``fingerprint``
        appends FINGERPRINT last.  The header length of each HMAC/CRC input
        is set as RFC 8489 §14.5-§14.7 require.  Existing attributes are
        written as they are; asking for a check that could not follow what the
        list already has raises ValueError (use :meth:`without_integrity` to
        re-sign), except that MESSAGE-INTEGRITY-SHA256 may follow an existing
        MESSAGE-INTEGRITY.  ``pad_byte``
        exists only to reproduce test vectors that pad with spaces (RFC 5769):
        RFC 8489 §14 says to send zeros.
        """
        mtype = message_type(self.method, self.msg_class)
        if integrity_key is not None or fingerprint:
            types = {t for t, _ in self.attributes}
            if _FP in types:
                raise ValueError("message already has FINGERPRINT; nothing may follow it")
            # MESSAGE-INTEGRITY-SHA256 may follow MESSAGE-INTEGRITY, nothing else may
            if integrity_key is not None and (_MI256 in types or (_MI in types and not sha256)):
                raise ValueError("message already has MESSAGE-INTEGRITY; use without_integrity()")
        pad = bytes((pad_byte,)) * 3
        body = bytearray()
        for t, value in self.attributes:
            size = len(value)
            if not 0 <= t <= 0xFFFF:
                raise ValueError(f"attribute type out of range: {t}")
            if size > 0xFFFF:
                raise ValueError("attribute value longer than 65535 bytes")
            body += _TL.pack(t, size)
            body += value
            if size & 3:
                body += pad[: 4 - (size & 3)]
        message = bytearray(_HEADER.pack(mtype, 0, MAGIC_COOKIE, self.transaction_id))
        message += body
        if integrity_key is not None:
            at = len(message)
            if sha256:
                if not (16 <= sha256_length <= 32 and sha256_length % 4 == 0):
                    raise ValueError("MESSAGE-INTEGRITY-SHA256 is 16-32 bytes, multiple of 4")
                claimed = at - HEADER_LENGTH + 4 + sha256_length
                mac = hmac_sha256(integrity_key, message, at, claimed)[:sha256_length]
                message += _TL.pack(_MI256, sha256_length) + mac
            else:
                mac = hmac_sha1(integrity_key, message, at, at - HEADER_LENGTH + 24)
                message += _TL.pack(_MI, 20) + mac
        if fingerprint:
            at = len(message)
            crc = _fingerprint(message, at, at - HEADER_LENGTH + 8)
            message += _TL.pack(_FP, 4) + _U32.pack(crc)
        length = len(message) - HEADER_LENGTH
        if length > 0xFFFF:
            raise ValueError("message longer than 65535 bytes")
        message[2:4] = _U16.pack(length)
        return bytes(message)

    def without_integrity(self) -> Message:
        """A copy without MESSAGE-INTEGRITY(-SHA256), FINGERPRINT and what followed them."""
        kept: list[tuple[int, bytes]] = []
        for attr in self.attributes:
            if attr[0] in _CHECKS:
                break
            kept.append(attr)
        return Message(self.method, self.msg_class, self.transaction_id, kept)

    # --- plumbing ---------------------------------------------------------------

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (
            self.method == other.method
            and self.msg_class == other.msg_class
            and self.transaction_id == other.transaction_id
            and self.attributes == other.attributes
        )

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        method = _METHOD_NAMES.get(self.method, f"{self.method:#05x}")
        attrs = ", ".join(
            f"{_ATTR_NAMES.get(t, f'{t:#06x}')}[{len(v)}]" for t, v in self.attributes
        )
        return (
            f"Message({method} {MessageClass(self.msg_class).name}"
            f" tid={self.transaction_id.hex()} [{attrs}])"
        )


_fingerprint = fingerprint  # the encode() keyword shadows the function name


def _scan_ignored(attributes: list[tuple[int, bytes]]) -> frozenset[int]:
    """Indexes of attributes that follow an integrity check and do not count."""
    state = _OPEN
    ignored: list[int] = []
    for index, (t, _) in enumerate(attributes):
        if t == _FP:
            state = _AFTER_FP
        elif state == _OPEN:
            if t == _MI:
                state = _AFTER_MI
            elif t == _MI256:
                state = _AFTER_MI256
        elif state == _AFTER_MI and t == _MI256:
            state = _AFTER_MI256
        else:
            ignored.append(index)
    return frozenset(ignored) if ignored else _NO_IGNORED


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Parse one STUN message occupying all of ``data``; StunDecodeError if malformed."""
    if not isinstance(data, bytes):
        data = bytes(data)
    size = len(data)
    if size < HEADER_LENGTH:
        raise StunDecodeError("shorter than the 20-byte STUN header")
    mtype, length, cookie = _HEAD8.unpack_from(data)
    if mtype & 0xC000:
        raise StunDecodeError("top two bits of the message type are not zero")
    if cookie != MAGIC_COOKIE:
        raise StunDecodeError("wrong magic cookie")
    if length & 3:
        raise StunDecodeError("message length is not a multiple of 4")
    if length + HEADER_LENGTH != size:
        raise StunDecodeError("message length does not match the datagram")

    attributes: list[tuple[int, bytes]] = []
    append = attributes.append
    unpack = _TL.unpack_from
    ignored: list[int] | None = None
    state = _OPEN
    mi_at = mi256_at = fp_at = -1
    pos = HEADER_LENGTH
    while pos < size:
        # pos and size are both multiples of 4, so a 4-byte header always fits
        if state == _AFTER_FP:
            raise StunDecodeError("attribute after FINGERPRINT")
        t, alen = unpack(data, pos)
        start = pos + 4
        end = start + alen
        next_pos = end + (-alen & 3)
        if next_pos > size:
            raise StunDecodeError("attribute (or its padding) overruns the message")
        if t in _CHECKS:
            if t == _FP:
                if alen != 4:
                    raise StunDecodeError("FINGERPRINT must be 4 bytes")
                state = _AFTER_FP
                fp_at = pos
            elif t == _MI:
                if alen != 20:
                    raise StunDecodeError("MESSAGE-INTEGRITY must be 20 bytes")
                if state == _OPEN:
                    state = _AFTER_MI
                    mi_at = pos
                else:
                    ignored = (ignored or []) + [len(attributes)]
            else:
                if alen < 16 or alen > 32 or alen & 3:
                    raise StunDecodeError("MESSAGE-INTEGRITY-SHA256 must be 16-32 bytes, x4")
                if state in (_OPEN, _AFTER_MI):
                    state = _AFTER_MI256
                    mi256_at = pos
                else:
                    ignored = (ignored or []) + [len(attributes)]
        elif state != _OPEN:
            ignored = (ignored or []) + [len(attributes)]
        append((t, data[start:end]))
        pos = next_pos

    method = (mtype & 0x000F) | ((mtype & 0x00E0) >> 1) | ((mtype & 0x3E00) >> 2)
    message = Message.__new__(Message)
    message.method = method
    message.msg_class = _CLASSES[((mtype >> 4) & 0b01) | ((mtype >> 7) & 0b10)]
    message.transaction_id = data[8:20]
    message.attributes = attributes
    message.raw = data
    message._ignored = frozenset(ignored) if ignored else _NO_IGNORED
    message._mi_at = mi_at
    message._mi256_at = mi256_at
    message._fp_at = fp_at
    return message
