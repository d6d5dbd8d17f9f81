"""Classic STUN (RFC 3489) Binding requests: no magic cookie, a 128-bit transaction ID.

RFC 8489 §12 says a server SHOULD answer them, with MAPPED-ADDRESS (not the XOR
form) and the request's whole transaction ID, so that old clients (Debian's
`stun`, pystun3) learn their address. A request that asks for an answer from
another address or port (CHANGE-REQUEST with a flag set) cannot be honoured
by a server with one address: RFC 3489 clients read silence there as "the
NAT filters", so it gets none.
"""

from __future__ import annotations

import struct

from .attributes import decode_change_request, encode_address
from .constants import MAGIC_COOKIE, Attr

_HEADER = struct.Struct("!HH16s")
_TLV = struct.Struct("!HH")
BINDING_REQUEST, BINDING_RESPONSE = 0x0001, 0x0101
_COOKIE = MAGIC_COOKIE.to_bytes(4, "big")


class ClassicAnswer:
    """What to do with a classic Binding request: `response` bytes, or None (asked for a changed address)."""

    __slots__ = ("response",)

    def __init__(self, response: bytes | None) -> None:
        self.response = response


def classic_binding(data: bytes, source: tuple[str, int]) -> ClassicAnswer | None:
    """The answer to `data` if it is a well-formed RFC 3489 Binding request, else None (not one)."""
    if len(data) < _HEADER.size:
        return None
    kind, length, transaction = _HEADER.unpack_from(data)
    if kind != BINDING_REQUEST or length != len(data) - _HEADER.size or length % 4 \
            or transaction[:4] == _COOKIE:
        return None
    offset, end = _HEADER.size, len(data)
    while offset < end:
        if end - offset < _TLV.size:
            return None
        attribute, size = _TLV.unpack_from(data, offset)
        value = data[offset + _TLV.size: offset + _TLV.size + size]
        if len(value) != size:
            return None
        if attribute == Attr.CHANGE_REQUEST:
            if size != 4:
                return None
            if any(decode_change_request(value)):
                return ClassicAnswer(None)
        offset += _TLV.size + size + (-size % 4)
    mapped = encode_address(*source)
    body = _TLV.pack(Attr.MAPPED_ADDRESS, len(mapped)) + mapped
    return ClassicAnswer(_HEADER.pack(BINDING_RESPONSE, len(body), transaction) + body)
