"""The [MS-TURN] message codec: ``decode`` bytes to :class:`MsMessage` and back.

Wire format (libnice OC2007 compatibility, which is what was checked):

* 20-byte header: type (16 bits, top two bits zero), length of the body,
  16-byte transaction id.  No header magic cookie.
* Attributes are **not** padded to 4 bytes: the length is the value length
  and the next attribute follows immediately (libnice stunagent.h
  ``STUN_AGENT_USAGE_NO_ALIGNED_ATTRIBUTES``: "should not assume STUN
  attributes are aligned on 32-bit boundaries when parsing messages and also
  do not add padding when creating messages", set for
  ``STUN_COMPATIBILITY_OC2007`` in socket/udp-turn.c; stunmessage.c only
  aligns ``alen`` when that flag is unset).
* The first attribute is MAGIC-COOKIE = 0x72C64BC6 (libnice usages/turn.c
  appends it first for every non-RFC TURN dialect and socket/udp-turn.c
  drops messages without it).  Decoding insists on it.
* MESSAGE-INTEGRITY is the last attribute; anything after it is refused.

MESSAGE-INTEGRITY (libnice stun/stunhmac.c ``stun_sha1`` with ``padding``
TRUE, which stunagent.c uses for ``STUN_COMPATIBILITY_OC2007``): the HMAC
input is the header with its length field set to the body length *up to
and including* MESSAGE-INTEGRITY, followed by the attributes before
MESSAGE-INTEGRITY, zero-padded to a multiple of 64 bytes ("RFC 3489
specifies that the message's size should be 64 bytes, and \\x00 padding
should be done").  A 20-byte value is HMAC-SHA1; a 32-byte value is
HMAC-SHA256 over the same input (MS-VERSION >= 3; the SHA-256 variant is
not confirmed by libnice or Wireshark).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
import struct
from collections.abc import Iterable

from edge.stun.attributes import decode_address as _stun_decode_address
from edge.stun.attributes import decode_error_code as _stun_decode_error_code
from edge.stun.attributes import encode_address as _stun_encode_address
from edge.stun.attributes import encode_error_code as _stun_encode_error_code
from edge.stun.errors import StunDecodeError

from .constants import (
    HEADER_LENGTH,
    MS_TURN_MAGIC_COOKIE,
    RFC_MAGIC_COOKIE,
    TRANSACTION_ID_LENGTH,
    MsAttr,
)

__all__ = [
    "MsMessage",
    "MsTurnDecodeError",
    "decode",
    "decode_address",
    "decode_error_code",
    "decode_u32",
    "decode_xor_address",
    "encode_address",
    "encode_error_code",
    "encode_u32",
    "encode_xor_address",
    "integrity_digest",
    "is_ms_turn",
    "long_term_key",
]

_HEADER = struct.Struct("!HH16s")
_TL = struct.Struct("!HH")
_U32 = struct.Struct("!I")
_MI = int(MsAttr.MESSAGE_INTEGRITY)
_COOKIE_ATTR = _TL.pack(MsAttr.MAGIC_COOKIE, 4) + _U32.pack(MS_TURN_MAGIC_COOKIE)
_RFC_COOKIE_BYTES = _U32.pack(RFC_MAGIC_COOKIE)
_DIGESTS = {20: hashlib.sha1, 32: hashlib.sha256}
_MAX_BODY = 0xFFFF


def _new_transaction_id() -> bytes:
    """16 random bytes that do not start like an RFC 5389 header (that would read as RFC STUN)."""
    while True:
        tid = secrets.token_bytes(TRANSACTION_ID_LENGTH)
        if tid[:4] != _RFC_COOKIE_BYTES:
            return tid


class MsTurnDecodeError(ValueError):
    """The bytes are not a well-formed [MS-TURN] message or attribute."""


# --- dialect detection --------------------------------------------------------


def is_ms_turn(data: bytes | bytearray | memoryview) -> bool:
    """True if ``data`` looks like an [MS-TURN] message (cheap, no full decode).

    RFC 5389/8489 STUN carries 0x2112A442 at bytes 4-7; [MS-TURN] has a
    16-byte transaction id there and the MAGIC-COOKIE attribute (type
    0x000F, length 4, value 0x72C64BC6) at bytes 20-27.
    """
    if len(data) < HEADER_LENGTH + 8 or data[0] & 0xC0:
        return False
    head = bytes(data[:28])
    return head[4:8] != _RFC_COOKIE_BYTES and head[20:28] == _COOKIE_ATTR


# --- attribute values -----------------------------------------------------------


def encode_address(ip: str, port: int) -> bytes:
    """MAPPED-ADDRESS / DESTINATION-ADDRESS / REMOTE-ADDRESS / ALTERNATE-SERVER."""
    return _stun_encode_address(ip, port)


def decode_address(value: bytes) -> tuple[str, int]:
    try:
        return _stun_decode_address(value)
    except StunDecodeError as exc:
        raise MsTurnDecodeError(str(exc)) from None


def _xor_mask(length: int, transaction_id: bytes) -> bytes:
    # libnice usages/turn.c (OC2007): XOR-MAPPED-ADDRESS is XORed with the
    # first 32 bits of the 16-byte transaction id in place of the RFC cookie
    # (stun_message_find_xor_addr_full(..., htonl(transid.u32[0]))); for IPv6
    # the rest of the id follows, so the mask is the whole id.
    return transaction_id[:4] if length == 4 else transaction_id


def _xor(data: bytes, mask: bytes) -> bytes:
    return bytes(a ^ b for a, b in zip(data, mask, strict=True))


def encode_xor_address(ip: str, port: int, transaction_id: bytes) -> bytes:
    """[MS-TURN] XOR-MAPPED-ADDRESS (0x8020) value."""
    if len(transaction_id) != TRANSACTION_ID_LENGTH:
        raise ValueError("transaction id must be 16 bytes")
    plain = _stun_encode_address(ip, port)
    mask = _xor_mask(len(plain) - 4, transaction_id)
    return plain[:2] + _xor(plain[2:4], mask[:2]) + _xor(plain[4:], mask)


def decode_xor_address(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    _, xport = decode_address(value)  # validates family and length
    mask = _xor_mask(len(value) - 4, transaction_id)
    packed = _xor(bytes(value[4:]), mask)
    af = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(af, packed), xport ^ int.from_bytes(mask[:2], "big")


def encode_u32(number: int) -> bytes:
    """LIFETIME, BANDWIDTH, MS-VERSION, MAGIC-COOKIE values."""
    return _U32.pack(number)


def decode_u32(value: bytes) -> int:
    if len(value) != 4:
        raise MsTurnDecodeError("32-bit attribute must be 4 bytes")
    number: int = _U32.unpack(value)[0]
    return number


def encode_error_code(code: int, reason: str | None = None) -> bytes:
    return _stun_encode_error_code(code, reason)


def decode_error_code(value: bytes) -> tuple[int, str]:
    try:
        return _stun_decode_error_code(value)
    except StunDecodeError as exc:
        raise MsTurnDecodeError(str(exc)) from None


# --- keys and integrity -----------------------------------------------------------


def _trim(value: bytes) -> bytes:
    # libnice stunhmac.c priv_trim_var: leading '"', trailing '"' and NUL
    start = 0
    while start < len(value) and value[start] == 0x22:
        start += 1
    end = len(value)
    while end > start and value[end - 1] in (0x22, 0):
        end -= 1
    return value[start:end]


def long_term_key(username: bytes, realm: bytes, password: bytes) -> bytes:
    """MD5(username ":" realm ":" password), as libnice's stun_hash_creds."""
    return hashlib.md5(
        _trim(username) + b":" + _trim(realm) + b":" + _trim(password)
    ).digest()


def integrity_digest(
    key: bytes, prefix: bytes, body_length: int, size: int = 20
) -> bytes:
    """HMAC over ``prefix`` (header + attributes before MESSAGE-INTEGRITY).

    The header's length field is replaced by ``body_length`` and the input is
    zero-padded to a multiple of 64 bytes (libnice stunhmac.c stun_sha1).
    ``size`` 20 is HMAC-SHA1, 32 HMAC-SHA256.
    """
    digest = _DIGESTS.get(size)
    if digest is None:
        raise ValueError(f"MESSAGE-INTEGRITY must be 20 or 32 bytes, not {size}")
    data = prefix[:2] + struct.pack("!H", body_length) + prefix[4:]
    data += bytes(-len(data) % 64)
    return hmac.new(key, data, digest).digest()


# --- the message -------------------------------------------------------------------


class MsMessage:
    """An [MS-TURN] message: a raw 16-bit type, 16-byte id, attributes in order.

    ``attributes`` holds every attribute as ``(type, value)`` including the
    leading MAGIC-COOKIE; a new message gets the cookie prepended unless
    ``cookie=False`` or it is already first.
    """

    __slots__ = ("_mi_offset", "attributes", "msg_type", "raw", "transaction_id")

    def __init__(
        self,
        msg_type: int,
        transaction_id: bytes | None = None,
        attributes: Iterable[tuple[int, bytes]] = (),
        *,
        cookie: bool = True,
    ) -> None:
        if not 0 <= msg_type <= 0x3FFF:
            raise ValueError(f"message type out of range: {msg_type:#x}")
        if transaction_id is None:
            transaction_id = _new_transaction_id()
        if len(transaction_id) != TRANSACTION_ID_LENGTH:
            raise ValueError("transaction id must be 16 bytes")
        attrs = [(int(t), bytes(v)) for t, v in attributes]
        if cookie and not (
            attrs and attrs[0] == (MsAttr.MAGIC_COOKIE, _COOKIE_ATTR[4:])
        ):
            attrs.insert(0, (int(MsAttr.MAGIC_COOKIE), _COOKIE_ATTR[4:]))
        self.msg_type = msg_type
        self.transaction_id = bytes(transaction_id)
        self.attributes = attrs
        self.raw: bytes | None = None
        self._mi_offset: int | None = None

    # -- reading
    def get(self, attr_type: int) -> bytes | None:
        """The first value of ``attr_type`` or None."""
        for t, v in self.attributes:
            if t == attr_type:
                return v
        return None

    def get_all(self, attr_type: int) -> list[bytes]:
        return [v for t, v in self.attributes if t == attr_type]

    def unknown_comprehension_required(self, known: Iterable[int]) -> list[int]:
        known = frozenset(known)
        seen: list[int] = []
        for t, _ in self.attributes:
            if t < 0x8000 and t not in known and t not in seen:
                seen.append(t)
        return seen

    def ms_version(self) -> int | None:
        value = self.get(MsAttr.MS_VERSION)
        if value is None or len(value) != 4:
            return None
        version: int = _U32.unpack(value)[0]
        return version

    # -- integrity
    def verify_integrity(self, key: bytes) -> bool:
        """Check MESSAGE-INTEGRITY (SHA1 or SHA256 by its length) over the wire bytes."""
        wire = self.raw if self.raw is not None else self.encode()
        if self.raw is None:
            # encode() of a decoded-then-modified message: re-decode for offsets
            return decode(wire).verify_integrity(key)
        offset = self._mi_offset
        if offset is None:
            return False
        received = wire[offset + 4 :]
        if len(received) not in _DIGESTS:
            return False
        expected = integrity_digest(
            key,
            wire[:offset],
            offset + 4 + len(received) - HEADER_LENGTH,
            len(received),
        )
        return hmac.compare_digest(expected, received)

    # -- writing
    def encode(self, key: bytes | None = None, *, sha256: bool = False) -> bytes:
        """Wire bytes; with ``key`` a fresh MESSAGE-INTEGRITY is appended last.

        Any MESSAGE-INTEGRITY already in ``attributes`` is dropped when a key
        is given (and kept as-is otherwise, so decode/encode round-trips).
        """
        attrs = self.attributes
        if key is not None:
            attrs = [(t, v) for t, v in attrs if t != _MI]
        parts = []
        for t, v in attrs:
            if len(v) > 0xFFFF:
                raise ValueError(f"attribute {t:#06x} longer than 65535 bytes")
            parts.append(_TL.pack(t, len(v)))
            parts.append(v)
        body = b"".join(parts)
        if key is None:
            if len(body) > _MAX_BODY:
                raise ValueError("message body longer than 65535 bytes")
            return _HEADER.pack(self.msg_type, len(body), self.transaction_id) + body
        size = 32 if sha256 else 20
        body_length = len(body) + 4 + size
        if body_length > _MAX_BODY:
            raise ValueError("message body longer than 65535 bytes")
        prefix = _HEADER.pack(self.msg_type, body_length, self.transaction_id) + body
        mac = integrity_digest(key, prefix, body_length, size)
        return prefix + _TL.pack(_MI, size) + mac

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MsMessage):
            return NotImplemented
        return (
            self.msg_type == other.msg_type
            and self.transaction_id == other.transaction_id
            and self.attributes == other.attributes
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        names = []
        for t, v in self.attributes:
            try:
                name = MsAttr(t).name
            except ValueError:
                name = f"{t:#06x}"
            names.append(f"{name}({len(v)})")
        return f"MsMessage(type={self.msg_type:#06x}, id={self.transaction_id.hex()}, attrs=[{', '.join(names)}])"


def decode(data: bytes | bytearray | memoryview) -> MsMessage:
    """Parse one [MS-TURN] message; every malformation raises MsTurnDecodeError."""
    data = bytes(data)
    if len(data) < HEADER_LENGTH:
        raise MsTurnDecodeError("shorter than the 20-byte header")
    msg_type, length, tid = _HEADER.unpack_from(data)
    if msg_type & 0xC000:
        raise MsTurnDecodeError("top two bits of the message type are not zero")
    if length != len(data) - HEADER_LENGTH:
        raise MsTurnDecodeError(
            f"length field {length} != body size {len(data) - HEADER_LENGTH}"
        )
    if data[4:8] == _RFC_COOKIE_BYTES:
        raise MsTurnDecodeError("RFC 5389 magic cookie in the header: not [MS-TURN]")
    attributes: list[tuple[int, bytes]] = []
    mi_offset: int | None = None
    pos = HEADER_LENGTH
    end = len(data)
    while pos < end:
        if mi_offset is not None:
            raise MsTurnDecodeError("attribute after MESSAGE-INTEGRITY")
        if end - pos < 4:
            raise MsTurnDecodeError("truncated attribute header")
        attr_type, attr_len = _TL.unpack_from(data, pos)
        value_end = pos + 4 + attr_len
        if value_end > end:
            raise MsTurnDecodeError(f"attribute {attr_type:#06x} overruns the message")
        if attr_type == _MI:
            if attr_len not in _DIGESTS:
                raise MsTurnDecodeError("MESSAGE-INTEGRITY must be 20 or 32 bytes")
            mi_offset = pos
        attributes.append((attr_type, data[pos + 4 : value_end]))
        pos = value_end
    if not attributes or attributes[0] != (MsAttr.MAGIC_COOKIE, _COOKIE_ATTR[4:]):
        raise MsTurnDecodeError("MAGIC-COOKIE 0x72C64BC6 is not the first attribute")
    message = MsMessage.__new__(MsMessage)
    message.msg_type = msg_type
    message.transaction_id = tid
    message.attributes = attributes
    message.raw = data
    message._mi_offset = mi_offset
    return message
