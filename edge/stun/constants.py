"""Numbers from the STUN/TURN registries, in one place.

The values follow the IANA "STUN Parameters" registry as filled in by
RFC 8489 (STUN), RFC 8656 (TURN), RFC 6156 (TURN IPv6), RFC 6062 (TURN-TCP),
RFC 5780 (NAT behaviour discovery) and RFC 8445 (ICE).  They are IntEnums so
logs read well, and every member compares equal to its plain ``int``.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType
from typing import Final

__all__ = [
    "MAGIC_COOKIE",
    "FINGERPRINT_XOR",
    "HEADER_LENGTH",
    "Method",
    "MessageClass",
    "BINDING",
    "ALLOCATE",
    "REFRESH",
    "SEND",
    "DATA",
    "CREATE_PERMISSION",
    "CHANNEL_BIND",
    "CONNECT",
    "CONNECTION_BIND",
    "CONNECTION_ATTEMPT",
    "REQUEST",
    "INDICATION",
    "SUCCESS",
    "ERROR",
    "Attr",
    "KNOWN_ATTRIBUTES",
    "ErrorCode",
    "REASON_PHRASES",
    "reason_phrase",
    "PasswordAlgorithm",
    "PASSWORD_ALGORITHM_MD5",
    "PASSWORD_ALGORITHM_SHA256",
    "SecurityFeature",
    "FEATURE_PASSWORD_ALGORITHMS",
    "FEATURE_USERNAME_ANONYMITY",
    "NONCE_COOKIE",
    "FAMILY_IPV4",
    "FAMILY_IPV6",
    "TRANSPORT_UDP",
    "TRANSPORT_TCP",
    "CHANNEL_MIN",
    "CHANNEL_MAX",
    "CHANNEL_MAX_RFC5766",
]

#: RFC 8489 §5: fixed value in bytes 4-7 of every STUN message.
MAGIC_COOKIE: Final = 0x2112A442
#: RFC 8489 §14.7: the CRC-32 is XORed with this so STUN is told apart from
#: other protocols that also carry a CRC-32.
FINGERPRINT_XOR: Final = 0x5354554E
HEADER_LENGTH: Final = 20


class Method(IntEnum):
    """STUN methods (12 bits)."""

    BINDING = 0x001
    ALLOCATE = 0x003  # RFC 8656
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009
    CONNECT = 0x00A  # RFC 6062
    CONNECTION_BIND = 0x00B
    CONNECTION_ATTEMPT = 0x00C


class MessageClass(IntEnum):
    """The two class bits C1C0, as a number 0..3 (not their wire positions)."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS = 0b10
    ERROR = 0b11


# Flat names for the methods and classes, as the rest of the project uses them.
# (Attribute types stay under ``Attr``: the DATA method and the DATA attribute
# would otherwise share one name.)
BINDING: Final = Method.BINDING
ALLOCATE: Final = Method.ALLOCATE
REFRESH: Final = Method.REFRESH
SEND: Final = Method.SEND
DATA: Final = Method.DATA
CREATE_PERMISSION: Final = Method.CREATE_PERMISSION
CHANNEL_BIND: Final = Method.CHANNEL_BIND
CONNECT: Final = Method.CONNECT
CONNECTION_BIND: Final = Method.CONNECTION_BIND
CONNECTION_ATTEMPT: Final = Method.CONNECTION_ATTEMPT

REQUEST: Final = MessageClass.REQUEST
INDICATION: Final = MessageClass.INDICATION
SUCCESS: Final = MessageClass.SUCCESS
ERROR: Final = MessageClass.ERROR


class Attr(IntEnum):
    """Attribute types.  0x0000-0x7FFF are comprehension-required."""

    # comprehension-required
    MAPPED_ADDRESS = 0x0001
    CHANGE_REQUEST = 0x0003  # RFC 5780
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    CHANNEL_NUMBER = 0x000C  # RFC 8656
    LIFETIME = 0x000D
    XOR_PEER_ADDRESS = 0x0012
    DATA = 0x0013
    REALM = 0x0014
    NONCE = 0x0015
    XOR_RELAYED_ADDRESS = 0x0016
    REQUESTED_ADDRESS_FAMILY = 0x0017  # RFC 8656 / RFC 6156
    EVEN_PORT = 0x0018
    REQUESTED_TRANSPORT = 0x0019
    DONT_FRAGMENT = 0x001A
    MESSAGE_INTEGRITY_SHA256 = 0x001C  # RFC 8489
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    RESERVATION_TOKEN = 0x0022  # RFC 8656
    PRIORITY = 0x0024  # RFC 8445
    USE_CANDIDATE = 0x0025
    PADDING = 0x0026  # RFC 5780
    RESPONSE_PORT = 0x0027
    CONNECTION_ID = 0x002A  # RFC 6062
    # comprehension-optional
    ADDITIONAL_ADDRESS_FAMILY = 0x8000  # RFC 8656
    ADDRESS_ERROR_CODE = 0x8001
    PASSWORD_ALGORITHMS = 0x8002  # RFC 8489
    ALTERNATE_DOMAIN = 0x8003
    ICMP = 0x8004  # RFC 8656
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    CACHE_TIMEOUT = 0x8027  # RFC 5780
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029  # RFC 8445
    ICE_CONTROLLING = 0x802A
    RESPONSE_ORIGIN = 0x802B  # RFC 5780
    OTHER_ADDRESS = 0x802C


#: Every attribute type this codec understands.  A comprehension-required type
#: outside this set makes the server answer 420 (RFC 8489 §6.3.1).
KNOWN_ATTRIBUTES: Final[frozenset[int]] = frozenset(int(a) for a in Attr)


class ErrorCode(IntEnum):
    """ERROR-CODE values (class * 100 + number)."""

    TRY_ALTERNATE = 300
    BAD_REQUEST = 400
    UNAUTHENTICATED = 401  # "Unauthorized" in RFC 5389
    FORBIDDEN = 403
    UNKNOWN_ATTRIBUTE = 420
    ALLOCATION_MISMATCH = 437
    STALE_NONCE = 438
    ADDRESS_FAMILY_NOT_SUPPORTED = 440
    WRONG_CREDENTIALS = 441
    UNSUPPORTED_TRANSPORT_PROTOCOL = 442
    PEER_ADDRESS_FAMILY_MISMATCH = 443
    CONNECTION_ALREADY_EXISTS = 446  # RFC 6062
    CONNECTION_TIMEOUT_OR_FAILURE = 447
    ALLOCATION_QUOTA_REACHED = 486
    ROLE_CONFLICT = 487  # RFC 8445
    SERVER_ERROR = 500
    INSUFFICIENT_CAPACITY = 508


#: The reason phrases the RFCs suggest; the phrase is advisory only.
REASON_PHRASES: Final[Mapping[int, str]] = MappingProxyType(
    {
        300: "Try Alternate",
        400: "Bad Request",
        401: "Unauthenticated",
        403: "Forbidden",
        420: "Unknown Attribute",
        437: "Allocation Mismatch",
        438: "Stale Nonce",
        440: "Address Family not Supported",
        441: "Wrong Credentials",
        442: "Unsupported Transport Protocol",
        443: "Peer Address Family Mismatch",
        446: "Connection Already Exists",
        447: "Connection Timeout or Failure",
        486: "Allocation Quota Reached",
        487: "Role Conflict",
        500: "Server Error",
        508: "Insufficient Capacity",
    }
)


def reason_phrase(code: int) -> str:
    """The standard phrase for ``code``, or an empty string if there is none."""
    return REASON_PHRASES.get(code, "")


class PasswordAlgorithm(IntEnum):
    """PASSWORD-ALGORITHM numbers (RFC 8489 §18.5)."""

    MD5 = 0x0001
    SHA256 = 0x0002


PASSWORD_ALGORITHM_MD5: Final = PasswordAlgorithm.MD5
PASSWORD_ALGORITHM_SHA256: Final = PasswordAlgorithm.SHA256


class SecurityFeature(IntEnum):
    """Bits of the 24-bit "Security Feature Set" in a nonce cookie.

    RFC 8489 §18.1 names bit 0 and bit 1; the verified erratum to §9.2 says
    bits are counted from the least significant end, so bit 0 is 0x000001.
    (The RFC's own Appendix B.1 nonce, "obMatJos2AAAC...", sets 0x000002 and
    carries a USERHASH, which agrees.)
    """

    PASSWORD_ALGORITHMS = 0x000001
    USERNAME_ANONYMITY = 0x000002


FEATURE_PASSWORD_ALGORITHMS: Final = SecurityFeature.PASSWORD_ALGORITHMS
FEATURE_USERNAME_ANONYMITY: Final = SecurityFeature.USERNAME_ANONYMITY

#: RFC 8489 §9.2: a NONCE starting with this announces the security features.
NONCE_COOKIE: Final = "obMatJos2"

#: Address family octet in the *-ADDRESS attributes and REQUESTED-ADDRESS-FAMILY.
FAMILY_IPV4: Final = 0x01
FAMILY_IPV6: Final = 0x02

#: REQUESTED-TRANSPORT protocol numbers (IANA protocol numbers).
TRANSPORT_UDP: Final = 17
TRANSPORT_TCP: Final = 6  # RFC 6062

#: RFC 8656 §12: the channel numbers a client may bind.
CHANNEL_MIN: Final = 0x4000
CHANNEL_MAX: Final = 0x4FFF
#: RFC 5766 allowed channels up to 0x7FFF; RFC 5766 clients (coturn's among them) still use them.
CHANNEL_MAX_RFC5766: Final = 0x7FFF
