"""[MS-TURN] numbers: the TURN dialect of Office Communicator / Lync.

[MS-TURN] is draft-rosenberg-midcom-turn-08 on RFC 3489 framing: the message
type is a plain 16-bit number (no RFC 5389 class/method interleaving
semantics are needed), the transaction id is 16 bytes, and there is no magic
cookie in the header; instead the MAGIC-COOKIE *attribute* comes first.

Where each number was checked (public sources, see the module docstrings):

* libnice ``stun/stunmessage.h`` (enum StunMethod, enum StunAttribute and
  STUN_MSOC_KNOWN_ATTRIBUTES, the "[MS-TURN]" / "midcom-TURN 08" entries);
* libnice ``stun/constants.h`` (``TURN_MAGIC_COOKIE 0x72c64bc6``);
* Wireshark ``epan/dissectors/packet-stun.c`` (the ``/* MS-TURN */``
  ``#define``s and the attribute names).
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "HEADER_LENGTH",
    "MS_KNOWN_ATTRIBUTES",
    "MS_TURN_MAGIC_COOKIE",
    "MS_VERSION_SHA256",
    "RFC_MAGIC_COOKIE",
    "TRANSACTION_ID_LENGTH",
    "MsAttr",
    "MsType",
]

#: Value of the MAGIC-COOKIE attribute.  libnice stun/constants.h
#: ``#define TURN_MAGIC_COOKIE 0x72c64bc6``; Wireshark packet-stun.c
#: ``#define TURN_MAGIC_COOKIE 0x72C64BC6``.
MS_TURN_MAGIC_COOKIE = 0x72C64BC6

#: RFC 5389/8489 header cookie at bytes 4-7 (never the MS-TURN dialect).
RFC_MAGIC_COOKIE = 0x2112A442

HEADER_LENGTH = 20
TRANSACTION_ID_LENGTH = (
    16  # libnice: STUN_MESSAGE_TRANS_ID_LEN 16 / stun_make_transid(id, 16)
)

#: From this MS-VERSION on (both sides), MESSAGE-INTEGRITY is HMAC-SHA256
#: (a 32-byte value) instead of HMAC-SHA1.  Per the [MS-TURN] brief for this
#: module; NOT confirmed in libnice (which only speaks MS-VERSION 1) nor
#: Wireshark.
MS_VERSION_SHA256 = 3


class MsType(IntEnum):
    """Message types, as raw 16-bit numbers.

    RFC 3489 layout: request = method, success = 0x0100 | method,
    error = 0x0110 | method.
    """

    # libnice stunmessage.h: STUN_ALLOCATE=0x003 /* TURN-12 */ (same number
    # in midcom-TURN 08; libnice's OC2007 usage stun/usages/turn.c sends it)
    ALLOCATE_REQUEST = 0x0003
    ALLOCATE_RESPONSE = 0x0103
    ALLOCATE_ERROR = 0x0113
    # libnice stunmessage.h: STUN_SEND=0x004 /* TURN-00 */ (Send *request*)
    SEND_REQUEST = 0x0004
    SEND_RESPONSE = 0x0104
    SEND_ERROR = 0x0114
    # Wireshark packet-stun.c: "0x1115 [sic] was used for DATA_INDICATION in
    # draft-rosenberg-midcom-turn-08 ... The MS-TURN specification lists it,
    # however, and some MS-TURN captures use it."  [MS-TURN] gives 0x0115.
    # NB: libnice's OC2007 client instead matches class INDICATION + method
    # STUN_IND_DATA (0x0017, socket/udp-turn.c); see DATA_INDICATION_RFC.
    DATA_INDICATION = 0x0115
    DATA_INDICATION_RFC = 0x0017
    # libnice stunmessage.h: STUN_OLD_SET_ACTIVE_DST=0x006 /* TURN-00 */
    SET_ACTIVE_DESTINATION_REQUEST = 0x0006
    SET_ACTIVE_DESTINATION_RESPONSE = 0x0106
    SET_ACTIVE_DESTINATION_ERROR = 0x0116


class MsAttr(IntEnum):
    """Attribute types as [MS-TURN] numbers them."""

    # libnice stunmessage.h STUN_MSOC_KNOWN_ATTRIBUTES + Wireshark packet-stun.c
    # ("RFC8489, MS-TURN") for 0x0001, 0x0006, 0x0008, 0x0009, 0x000A, 0x000D
    MAPPED_ADDRESS = 0x0001
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    LIFETIME = 0x000D
    # libnice: STUN_ATTRIBUTE_MS_ALTERNATE_SERVER=0x000E /* MS-TURN */;
    # Wireshark: MS_ALTERNATE_SERVER 0x000e /* MS-TURN */
    ALTERNATE_SERVER = 0x000E
    # libnice: STUN_ATTRIBUTE_MAGIC_COOKIE=0x000F /* midcom-TURN 08 */;
    # Wireshark: MAGIC_COOKIE 0x000f /* MS-TURN */
    MAGIC_COOKIE = 0x000F
    # libnice: STUN_ATTRIBUTE_BANDWIDTH=0x0010; Wireshark: BANDWIDTH 0x0010 /* MS-TURN */
    BANDWIDTH = 0x0010
    # libnice: STUN_ATTRIBUTE_DESTINATION_ADDRESS=0x0011 /* midcom-TURN 08 */;
    # Wireshark: DESTINATION_ADDRESS 0x0011 /* MS-TURN */
    DESTINATION_ADDRESS = 0x0011
    # libnice: STUN_ATTRIBUTE_REMOTE_ADDRESS=0x0012 /* TURN-04 */;
    # Wireshark: XOR_PEER_ADDRESS 0x0012 /* RFC8656, MS-TURN */
    REMOTE_ADDRESS = 0x0012
    # libnice: STUN_ATTRIBUTE_DATA=0x0013; Wireshark: DATA 0x0013 /* RFC8656, MS-TURN */
    DATA = 0x0013
    # Swapped against RFC 5389.  libnice stunmessage.h: "REALM and NONCE have
    # swapped hexadecimal IDs in [MS-TURN]"; Wireshark packet-stun.c:
    # "REALM 0x0014 /* RFC8489, MS-TURN uses 0x0015 */",
    # "NONCE 0x0015 /* RFC8489, MS-TURN uses 0x0014 */".
    NONCE = 0x0014
    REALM = 0x0015
    # The brief said 0x0016; both sources say 0x0017: Wireshark
    # "REQUESTED_ADDRESS_FAMILY 0x0017 /* RFC8656, MS-TURN */", libnice
    # "STUN_ATTRIBUTE_REQUESTED_ADDRESS_TYPE=0x0017 /* TURN-IPv6-05 */".
    REQUESTED_ADDRESS_TYPE = 0x0017
    # libnice: STUN_ATTRIBUTE_MS_VERSION=0x8008 /* MS-TURN */; Wireshark MS_VERSION 0x8008
    MS_VERSION = 0x8008
    # libnice: STUN_ATTRIBUTE_MS_XOR_MAPPED_ADDRESS=0x8020 /* MS-TURN */;
    # Wireshark MS_XOR_MAPPED_ADDRESS 0x8020 /* MS-TURN */
    XOR_MAPPED_ADDRESS = 0x8020
    # Wireshark: MS_ALTERNATE_HOST_NAME 0x8032 /* MS-TURN */
    MS_ALTERNATE_HOST_NAME = 0x8032
    # libnice: STUN_ATTRIBUTE_MS_SEQUENCE_NUMBER=0x8050 /* MS-TURN */;
    # Wireshark MS_SEQUENCE_NUMBER 0x8050
    MS_SEQUENCE_NUMBER = 0x8050
    # Wireshark: MS_SERVICE_QUALITY 0x8055 /* MS-TURN */
    MS_SERVICE_QUALITY = 0x8055


#: Comprehension-required attributes a server understands (libnice's
#: STUN_MSOC_KNOWN_ATTRIBUTES plus REQUESTED-ADDRESS-TYPE).
MS_KNOWN_ATTRIBUTES = frozenset(int(a) for a in MsAttr if a < 0x8000)
