"""A strict sans-I/O codec for [MS-TURN], the TURN dialect of Lync / Office Communicator.

Same shape as :mod:`edge.stun`: bytes in, values out, one exception type
(:class:`MsTurnDecodeError`) for every malformed input.

* ``constants`` - message types and attribute numbers (with their sources)
* ``message``   - ``MsMessage``, ``decode``, ``is_ms_turn``, integrity, values

Serving it: ``server.MsTurnServer`` is the dialect the composition root plugs
into the TURN engine (``TurnEngine(dialects=[MsTurnServer()])``, see
edge.turn.dialect); ``pseudotls`` carries it over TCP on the TLS port.
"""

from __future__ import annotations

from .constants import (
    HEADER_LENGTH,
    MS_KNOWN_ATTRIBUTES,
    MS_TURN_MAGIC_COOKIE,
    MS_VERSION_SHA256,
    RFC_MAGIC_COOKIE,
    TRANSACTION_ID_LENGTH,
    MsAttr,
    MsType,
)
from .message import (
    MsMessage,
    MsTurnDecodeError,
    decode,
    decode_address,
    decode_error_code,
    decode_u32,
    decode_xor_address,
    encode_address,
    encode_error_code,
    encode_u32,
    encode_xor_address,
    integrity_digest,
    is_ms_turn,
    long_term_key,
)

__all__ = [
    "HEADER_LENGTH",
    "MS_KNOWN_ATTRIBUTES",
    "MS_TURN_MAGIC_COOKIE",
    "MS_VERSION_SHA256",
    "RFC_MAGIC_COOKIE",
    "TRANSACTION_ID_LENGTH",
    "MsAttr",
    "MsMessage",
    "MsTurnDecodeError",
    "MsType",
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
