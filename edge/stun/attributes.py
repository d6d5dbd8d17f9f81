"""Typed codecs for attribute values.

A decoded :class:`~edge.stun.message.Message` keeps every attribute as raw
bytes; these functions turn one value into a Python value (``decode_*``) or
back (``encode_*``) only when somebody asks, so relaying a Send indication
never pays for parsing attributes nobody reads.

``decode_*`` raise :class:`StunDecodeError` for a malformed value (the server
answers 400); ``encode_*`` raise ``ValueError`` for arguments that cannot be
put on the wire.  Values are attribute *values* only: no type, length or
padding.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Sequence

from .constants import FAMILY_IPV4, FAMILY_IPV6, MAGIC_COOKIE, REASON_PHRASES
from .errors import StunDecodeError

__all__ = [
    "Address",
    "encode_address",
    "decode_address",
    "encode_xor_address",
    "decode_xor_address",
    "encode_error_code",
    "decode_error_code",
    "encode_address_error_code",
    "decode_address_error_code",
    "encode_unknown_attributes",
    "decode_unknown_attributes",
    "encode_u32",
    "decode_u32",
    "encode_u64",
    "decode_u64",
    "encode_flag",
    "decode_flag",
    "encode_lifetime",
    "decode_lifetime",
    "encode_requested_transport",
    "decode_requested_transport",
    "encode_channel_number",
    "decode_channel_number",
    "encode_even_port",
    "decode_even_port",
    "encode_reservation_token",
    "decode_reservation_token",
    "encode_address_family",
    "decode_address_family",
    "encode_icmp",
    "decode_icmp",
    "encode_password_algorithm",
    "decode_password_algorithm",
    "encode_password_algorithms",
    "decode_password_algorithms",
    "decode_userhash",
    "encode_username",
    "decode_username",
    "encode_realm",
    "decode_realm",
    "encode_nonce",
    "decode_nonce",
    "encode_software",
    "decode_software",
    "encode_alternate_domain",
    "decode_alternate_domain",
    "encode_change_request",
    "decode_change_request",
    "encode_response_port",
    "decode_response_port",
    "encode_padding",
    "encode_priority",
    "decode_priority",
    "encode_ice_tiebreaker",
    "decode_ice_tiebreaker",
]

#: ``(ip, port)`` with ``ip`` in its canonical text form.
Address = tuple[str, int]

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_FAMILY_PORT = struct.Struct("!xBH")
_ERROR_HEAD = struct.Struct("!HBB")
_ALGORITHM_HEAD = struct.Struct("!HH")
_ICMP = struct.Struct("!xxBBI")
_COOKIE_BYTES = _U32.pack(MAGIC_COOKIE)
_COOKIE_HIGH = MAGIC_COOKIE >> 16

# RFC 8489 §14: USERNAME < 509 bytes; REALM, NONCE, SOFTWARE and reason
# phrases < 128 characters, which is at most 763 bytes of UTF-8.
_MAX_USERNAME_BYTES = 508
_MAX_TEXT_BYTES = 763
_MAX_TEXT_CHARS = 127
_MAX_DOMAIN_BYTES = 255


# --- addresses (MAPPED-ADDRESS, XOR-*-ADDRESS, ALTERNATE-SERVER, ...) --------


def _pack_ip(ip: str) -> tuple[int, bytes]:
    try:
        if ":" in ip:
            # a zone ("fe80::1%eth0") means nothing off this host; drop it
            return FAMILY_IPV6, socket.inet_pton(socket.AF_INET6, ip.partition("%")[0])
        return FAMILY_IPV4, socket.inet_pton(socket.AF_INET, ip)
    except (OSError, TypeError, ValueError) as exc:
        raise ValueError(f"not an IP address: {ip!r}") from exc


def _check_port(port: int) -> None:
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port out of range: {port}")


def encode_address(ip: str, port: int) -> bytes:
    """MAPPED-ADDRESS / ALTERNATE-SERVER / RESPONSE-ORIGIN / OTHER-ADDRESS value."""
    _check_port(port)
    family, packed = _pack_ip(ip)
    return _FAMILY_PORT.pack(family, port) + packed


def _split_address(value: bytes) -> tuple[int, int, bytes]:
    length = len(value)
    if length < 4:
        raise StunDecodeError("address attribute shorter than 4 bytes")
    family, port = _FAMILY_PORT.unpack_from(value)
    if family == FAMILY_IPV4:
        if length != 8:
            raise StunDecodeError("IPv4 address attribute must be 8 bytes")
    elif family == FAMILY_IPV6:
        if length != 20:
            raise StunDecodeError("IPv6 address attribute must be 20 bytes")
    else:
        raise StunDecodeError(f"unknown address family {family:#04x}")
    return family, port, bytes(value[4:])


def decode_address(value: bytes) -> Address:
    """Inverse of :func:`encode_address`."""
    family, port, packed = _split_address(value)
    af = socket.AF_INET if family == FAMILY_IPV4 else socket.AF_INET6
    return socket.inet_ntop(af, packed), port


def _xor_mask(family: int, transaction_id: bytes) -> bytes:
    if len(transaction_id) != 12:
        raise ValueError("transaction id must be 12 bytes")
    return _COOKIE_BYTES if family == FAMILY_IPV4 else _COOKIE_BYTES + bytes(transaction_id)


def _xor(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    return (int.from_bytes(data, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


def encode_xor_address(ip: str, port: int, transaction_id: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS / XOR-PEER-ADDRESS / XOR-RELAYED-ADDRESS value (RFC 8489 §14.2)."""
    _check_port(port)
    family, packed = _pack_ip(ip)
    mask = _xor_mask(family, transaction_id)
    return _FAMILY_PORT.pack(family, port ^ _COOKIE_HIGH) + _xor(packed, mask)


def decode_xor_address(value: bytes, transaction_id: bytes) -> Address:
    """Inverse of :func:`encode_xor_address`."""
    family, xport, xpacked = _split_address(value)
    packed = _xor(xpacked, _xor_mask(family, transaction_id))
    af = socket.AF_INET if family == FAMILY_IPV4 else socket.AF_INET6
    return socket.inet_ntop(af, packed), xport ^ _COOKIE_HIGH


# --- ERROR-CODE, ADDRESS-ERROR-CODE, UNKNOWN-ATTRIBUTES ----------------------


def _encode_reason(code: int, reason: str | None) -> tuple[int, int, bytes]:
    if not 300 <= code <= 699:
        raise ValueError(f"error code out of range 300-699: {code}")
    text = REASON_PHRASES.get(code, "") if reason is None else reason
    data = text.encode("utf-8")
    if len(text) > _MAX_TEXT_CHARS or len(data) > _MAX_TEXT_BYTES:
        raise ValueError("reason phrase must be fewer than 128 characters")
    return code // 100, code % 100, data


def _decode_reason(cls: int, number: int, reason: bytes) -> tuple[int, str]:
    if not 3 <= cls <= 6 or number > 99:
        raise StunDecodeError(f"bad error class/number {cls}/{number}")
    if len(reason) > _MAX_TEXT_BYTES:
        raise StunDecodeError("reason phrase too long")
    try:
        text = reason.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunDecodeError("reason phrase is not UTF-8") from exc
    return cls * 100 + number, text


def encode_error_code(code: int, reason: str | None = None) -> bytes:
    """ERROR-CODE value; ``reason=None`` uses the standard phrase for ``code``."""
    cls, number, data = _encode_reason(code, reason)
    return _ERROR_HEAD.pack(0, cls, number) + data


def decode_error_code(value: bytes) -> tuple[int, str]:
    """ERROR-CODE value to ``(code, reason)``; the 21 reserved bits are ignored."""
    if len(value) < 4:
        raise StunDecodeError("ERROR-CODE shorter than 4 bytes")
    _, cls, number = _ERROR_HEAD.unpack_from(value)
    return _decode_reason(cls & 0x07, number, bytes(value[4:]))


def encode_address_error_code(family: int, code: int, reason: str | None = None) -> bytes:
    """ADDRESS-ERROR-CODE value (RFC 8656 §18.12): which family failed and why."""
    if not 0 <= family <= 0xFF:
        raise ValueError("address family is one octet")
    cls, number, data = _encode_reason(code, reason)
    return bytes((family, 0, cls, number)) + data


def decode_address_error_code(value: bytes) -> tuple[int, int, str]:
    """ADDRESS-ERROR-CODE value to ``(family, code, reason)``."""
    if len(value) < 4:
        raise StunDecodeError("ADDRESS-ERROR-CODE shorter than 4 bytes")
    code, reason = _decode_reason(value[2] & 0x07, value[3], bytes(value[4:]))
    return value[0], code, reason


def encode_unknown_attributes(types: Iterable[int]) -> bytes:
    """UNKNOWN-ATTRIBUTES value: the 16-bit types the server did not understand."""
    out = bytearray()
    for attr_type in types:
        if not 0 <= attr_type <= 0xFFFF:
            raise ValueError(f"attribute type out of range: {attr_type}")
        out += _U16.pack(attr_type)
    return bytes(out)


def decode_unknown_attributes(value: bytes) -> list[int]:
    """Inverse of :func:`encode_unknown_attributes`."""
    if len(value) % 2:
        raise StunDecodeError("UNKNOWN-ATTRIBUTES length is odd")
    return [t for (t,) in _U16.iter_unpack(value)]


# --- fixed-size numbers and flags ---------------------------------------------


def encode_u32(number: int) -> bytes:
    """A 32-bit unsigned value (LIFETIME, PRIORITY, CONNECTION-ID, CACHE-TIMEOUT)."""
    if not 0 <= number <= 0xFFFFFFFF:
        raise ValueError("value does not fit in 32 bits")
    return _U32.pack(number)


def decode_u32(value: bytes) -> int:
    """Inverse of :func:`encode_u32`."""
    if len(value) != 4:
        raise StunDecodeError("32-bit attribute must be 4 bytes")
    number: int = _U32.unpack(value)[0]
    return number


def encode_u64(number: int) -> bytes:
    """A 64-bit unsigned value (ICE-CONTROLLED / ICE-CONTROLLING tiebreakers)."""
    if not 0 <= number <= 0xFFFFFFFFFFFFFFFF:
        raise ValueError("value does not fit in 64 bits")
    return _U64.pack(number)


def decode_u64(value: bytes) -> int:
    """Inverse of :func:`encode_u64`."""
    if len(value) != 8:
        raise StunDecodeError("64-bit attribute must be 8 bytes")
    number: int = _U64.unpack(value)[0]
    return number


def encode_flag() -> bytes:
    """The empty value of DONT-FRAGMENT and USE-CANDIDATE."""
    return b""


def decode_flag(value: bytes) -> bool:
    """DONT-FRAGMENT / USE-CANDIDATE carry no value; anything else is malformed."""
    if len(value):
        raise StunDecodeError("flag attribute must be empty")
    return True


encode_lifetime = encode_u32
decode_lifetime = decode_u32
encode_priority = encode_u32
decode_priority = decode_u32
encode_ice_tiebreaker = encode_u64
decode_ice_tiebreaker = decode_u64


def encode_requested_transport(protocol: int) -> bytes:
    """REQUESTED-TRANSPORT value: IANA protocol number plus 3 RFFU bytes."""
    if not 0 <= protocol <= 0xFF:
        raise ValueError("protocol number is one octet")
    return bytes((protocol, 0, 0, 0))


def decode_requested_transport(value: bytes) -> int:
    """The protocol number; whether it is supported (442) is the server's call."""
    if len(value) != 4:
        raise StunDecodeError("REQUESTED-TRANSPORT must be 4 bytes")
    return value[0]


def encode_channel_number(channel: int) -> bytes:
    """CHANNEL-NUMBER value: 16-bit channel plus 2 RFFU bytes."""
    if not 0 <= channel <= 0xFFFF:
        raise ValueError("channel number is 16 bits")
    return _U16.pack(channel) + b"\x00\x00"


def decode_channel_number(value: bytes) -> int:
    """The channel number; whether it is in 0x4000-0x4FFF (400) is the server's call."""
    if len(value) != 4:
        raise StunDecodeError("CHANNEL-NUMBER must be 4 bytes")
    number: int = _U16.unpack_from(value)[0]
    return number


def encode_even_port(reserve_next: bool) -> bytes:
    """EVEN-PORT value: the R bit asks to reserve the next-higher port too."""
    return b"\x80" if reserve_next else b"\x00"


def decode_even_port(value: bytes) -> bool:
    """The R bit of EVEN-PORT."""
    if len(value) != 1:
        raise StunDecodeError("EVEN-PORT must be 1 byte")
    return bool(value[0] & 0x80)


def encode_reservation_token(token: bytes) -> bytes:
    """RESERVATION-TOKEN value: 8 opaque bytes."""
    if len(token) != 8:
        raise ValueError("RESERVATION-TOKEN is 8 bytes")
    return bytes(token)


def decode_reservation_token(value: bytes) -> bytes:
    """Inverse of :func:`encode_reservation_token`."""
    if len(value) != 8:
        raise StunDecodeError("RESERVATION-TOKEN must be 8 bytes")
    return bytes(value)


def encode_address_family(family: int) -> bytes:
    """REQUESTED-ADDRESS-FAMILY / ADDITIONAL-ADDRESS-FAMILY value (family + 3 RFFU)."""
    if not 0 <= family <= 0xFF:
        raise ValueError("address family is one octet")
    return bytes((family, 0, 0, 0))


def decode_address_family(value: bytes) -> int:
    """The family octet; an unsupported family (440/400) is the server's call."""
    if len(value) != 4:
        raise StunDecodeError("address family attribute must be 4 bytes")
    return value[0]


def encode_icmp(icmp_type: int, icmp_code: int, error_data: int = 0) -> bytes:
    """ICMP value (RFC 8656 §18.13): type, code and 32 bits of error data."""
    if not (0 <= icmp_type <= 0xFF and 0 <= icmp_code <= 0xFF):
        raise ValueError("ICMP type and code are one octet each")
    if not 0 <= error_data <= 0xFFFFFFFF:
        raise ValueError("ICMP error data is 32 bits")
    return _ICMP.pack(icmp_type, icmp_code, error_data)


def decode_icmp(value: bytes) -> tuple[int, int, int]:
    """ICMP value to ``(type, code, error_data)``."""
    if len(value) != 8:
        raise StunDecodeError("ICMP must be 8 bytes")
    return _ICMP.unpack(value)


# --- PASSWORD-ALGORITHM(S), USERHASH -----------------------------------------


def _encode_algorithm(algorithm: int, params: bytes) -> bytes:
    if not 0 <= algorithm <= 0xFFFF:
        raise ValueError("algorithm number is 16 bits")
    if len(params) > 0xFFFF:
        raise ValueError("algorithm parameters too long")
    pad = -len(params) % 4
    return _ALGORITHM_HEAD.pack(algorithm, len(params)) + bytes(params) + bytes(pad)


def encode_password_algorithm(algorithm: int, params: bytes = b"") -> bytes:
    """PASSWORD-ALGORITHM value (RFC 8489 §14.12)."""
    return _encode_algorithm(algorithm, params)


def decode_password_algorithm(value: bytes) -> tuple[int, bytes]:
    """PASSWORD-ALGORITHM value to ``(algorithm, params)``."""
    if len(value) < 4:
        raise StunDecodeError("PASSWORD-ALGORITHM shorter than 4 bytes")
    algorithm, plen = _ALGORITHM_HEAD.unpack_from(value)
    if not 4 + plen <= len(value) <= 4 + plen + (-plen % 4):
        raise StunDecodeError("PASSWORD-ALGORITHM parameter length mismatch")
    return algorithm, bytes(value[4 : 4 + plen])


def encode_password_algorithms(algorithms: Sequence[int | tuple[int, bytes]]) -> bytes:
    """PASSWORD-ALGORITHMS value: the server's list, most preferred first."""
    parts = []
    for entry in algorithms:
        algorithm, params = entry if isinstance(entry, tuple) else (entry, b"")
        parts.append(_encode_algorithm(algorithm, params))
    return b"".join(parts)


def decode_password_algorithms(value: bytes) -> list[tuple[int, bytes]]:
    """PASSWORD-ALGORITHMS value to ``[(algorithm, params), ...]``, in order."""
    out: list[tuple[int, bytes]] = []
    pos, end = 0, len(value)
    while pos < end:
        if end - pos < 4:
            raise StunDecodeError("PASSWORD-ALGORITHMS entry truncated")
        algorithm, plen = _ALGORITHM_HEAD.unpack_from(value, pos)
        start = pos + 4
        pos = start + plen + (-plen % 4)
        if pos > end:
            raise StunDecodeError("PASSWORD-ALGORITHMS parameters overrun")
        out.append((algorithm, bytes(value[start : start + plen])))
    return out


def decode_userhash(value: bytes) -> bytes:
    """USERHASH value: exactly 32 bytes (compute one with ``credentials.userhash``)."""
    if len(value) != 32:
        raise StunDecodeError("USERHASH must be 32 bytes")
    return bytes(value)


# --- text attributes -----------------------------------------------------------


def _encode_text(text: str, max_bytes: int, max_chars: int | None, name: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > max_bytes or (max_chars is not None and len(text) > max_chars):
        raise ValueError(f"{name} too long")
    return data


def _decode_text(value: bytes, max_bytes: int, name: str) -> str:
    if len(value) > max_bytes:
        raise StunDecodeError(f"{name} too long")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunDecodeError(f"{name} is not UTF-8") from exc


def encode_username(username: str) -> bytes:
    """USERNAME value (fewer than 509 bytes of UTF-8)."""
    return _encode_text(username, _MAX_USERNAME_BYTES, None, "USERNAME")


def decode_username(value: bytes) -> str:
    """Inverse of :func:`encode_username`."""
    return _decode_text(value, _MAX_USERNAME_BYTES, "USERNAME")


def encode_realm(realm: str) -> bytes:
    """REALM value (fewer than 128 characters)."""
    return _encode_text(realm, _MAX_TEXT_BYTES, _MAX_TEXT_CHARS, "REALM")


def decode_realm(value: bytes) -> str:
    """Inverse of :func:`encode_realm`."""
    return _decode_text(value, _MAX_TEXT_BYTES, "REALM")


def encode_nonce(nonce: str) -> bytes:
    """NONCE value (fewer than 128 characters)."""
    return _encode_text(nonce, _MAX_TEXT_BYTES, _MAX_TEXT_CHARS, "NONCE")


def decode_nonce(value: bytes) -> str:
    """Inverse of :func:`encode_nonce`."""
    return _decode_text(value, _MAX_TEXT_BYTES, "NONCE")


def encode_software(software: str) -> bytes:
    """SOFTWARE value (fewer than 128 characters)."""
    return _encode_text(software, _MAX_TEXT_BYTES, _MAX_TEXT_CHARS, "SOFTWARE")


def decode_software(value: bytes) -> str:
    """Inverse of :func:`encode_software`."""
    return _decode_text(value, _MAX_TEXT_BYTES, "SOFTWARE")


def encode_alternate_domain(domain: str) -> bytes:
    """ALTERNATE-DOMAIN value (RFC 8489 §14.16): a domain name, at most 255 bytes."""
    return _encode_text(domain, _MAX_DOMAIN_BYTES, None, "ALTERNATE-DOMAIN")


def decode_alternate_domain(value: bytes) -> str:
    """Inverse of :func:`encode_alternate_domain`."""
    return _decode_text(value, _MAX_DOMAIN_BYTES, "ALTERNATE-DOMAIN")


# --- RFC 5780 --------------------------------------------------------------------


def encode_change_request(change_ip: bool, change_port: bool) -> bytes:
    """CHANGE-REQUEST value: the A (change IP) and B (change port) flags."""
    return _U32.pack((0x04 if change_ip else 0) | (0x02 if change_port else 0))


def decode_change_request(value: bytes) -> tuple[bool, bool]:
    """CHANGE-REQUEST value to ``(change_ip, change_port)``."""
    flags = decode_u32(value)
    return bool(flags & 0x04), bool(flags & 0x02)


def encode_response_port(port: int) -> bytes:
    """RESPONSE-PORT value: 16-bit port plus 2 bytes of padding."""
    _check_port(port)
    return _U16.pack(port) + b"\x00\x00"


def decode_response_port(value: bytes) -> int:
    """Inverse of :func:`encode_response_port`."""
    if len(value) != 4:
        raise StunDecodeError("RESPONSE-PORT must be 4 bytes")
    number: int = _U16.unpack_from(value)[0]
    return number


def encode_padding(size: int) -> bytes:
    """PADDING value of ``size`` zero bytes (RFC 5780 §7.6; content is ignored)."""
    if not 0 <= size <= 0xFFFF:
        raise ValueError("PADDING size out of range")
    return bytes(size)
