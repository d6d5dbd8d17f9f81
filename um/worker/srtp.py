"""SRTP with SDES keys (RFC 4568) on pylibsrtp: one session to protect what we send, one to unprotect.

The a=crypto inline value is base64 of a 16-byte master key followed by a
14-byte master salt, which is the key layout libsrtp expects.
"""

from __future__ import annotations

import base64
import binascii

from pylibsrtp import Error as SrtpLibError
from pylibsrtp import Policy, Session

from um.worker.sdp import Crypto

PROFILES = {"AES_CM_128_HMAC_SHA1_80": Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            "AES_CM_128_HMAC_SHA1_32": Policy.SRTP_PROFILE_AES128_CM_SHA1_32}


class SrtpError(ValueError):
    pass


def _key(crypto: Crypto) -> bytes:
    try:
        key = base64.b64decode(crypto.key + "=" * (-len(crypto.key) % 4), validate=False)
    except (binascii.Error, ValueError):
        raise SrtpError("a=crypto key is not base64") from None
    if len(key) != 30:
        raise SrtpError(f"a=crypto key must be 30 bytes (16 key + 14 salt), not {len(key)}")
    return key


class SrtpContext:
    """protect (outbound, our key) and unprotect (inbound, their key), RTP and RTCP."""

    def __init__(self, local: Crypto, remote: Crypto) -> None:
        if local.suite not in PROFILES or remote.suite not in PROFILES:
            raise SrtpError("crypto suite not supported")
        self._tx = Session(Policy(key=_key(local), ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                                  srtp_profile=PROFILES[local.suite]))
        self._rx = Session(Policy(key=_key(remote), ssrc_type=Policy.SSRC_ANY_INBOUND,
                                  srtp_profile=PROFILES[remote.suite]))
        self.failures = 0

    def protect(self, rtp: bytes) -> bytes:
        return self._tx.protect(rtp)

    def protect_rtcp(self, rtcp: bytes) -> bytes:
        return self._tx.protect_rtcp(rtcp)

    def unprotect(self, srtp: bytes) -> bytes | None:
        try:
            return self._rx.unprotect(srtp)
        except SrtpLibError:
            self.failures += 1
            return None

    def unprotect_rtcp(self, srtcp: bytes) -> bytes | None:
        try:
            return self._rx.unprotect_rtcp(srtcp)
        except SrtpLibError:
            self.failures += 1
            return None
