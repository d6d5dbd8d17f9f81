"""Long-term credential checks for TURN requests (RFC 8489 §9.2), stateless.

Nonces are an HMAC of the client's address and a timestamp, so an
unauthenticated packet costs the server no state; a nonce older than its
lifetime gets 438. The nonce cookie announces PASSWORD-ALGORITHMS, and the
bid-down rules of §9.2.4 hold: a client that echoes PASSWORD-ALGORITHMS must
echo ours unchanged and pick one of them. Passwords are TURN REST API tokens
(edge.tokens) checked against every configured secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.stun.attributes import (
    decode_password_algorithm,
    decode_password_algorithms,
    encode_nonce,
    encode_password_algorithms,
    encode_realm,
)
from edge.stun.constants import Attr, PasswordAlgorithm, SecurityFeature
from edge.stun.credentials import (
    long_term_key,
    nonce_features,
    nonce_with_features,
    userhash,
)
from edge.stun.message import Message
from edge.stun.responses import make_error
from edge.tokens import TokenError, candidate_passwords

OFFERED_ALGORITHMS = (PasswordAlgorithm.SHA256, PasswordAlgorithm.MD5)
_OFFERED_VALUE = encode_password_algorithms(OFFERED_ALGORITHMS)
_FEATURES = SecurityFeature.PASSWORD_ALGORITHMS
_STAMP = struct.Struct("!I")


@dataclass(frozen=True)
class Credentials:
    """Who proved what: the token username, its identity and the key for responses."""

    username: str
    identity: str
    key: bytes
    sha256: bool  # answer with MESSAGE-INTEGRITY-SHA256, as the request came


@dataclass(frozen=True)
class Rejection:
    response: Message
    reason: str  # for counters and logs: missing, malformed, stale_nonce, bad_token, ...


class Authenticator:
    def __init__(self, realm: str, secrets: Callable[[], Sequence[str]], nonce_key: bytes,
                 nonce_lifetime: int, clock: Callable[[], float]) -> None:
        self.realm = realm
        self._realm_value = encode_realm(realm)
        self._secrets = secrets
        self._nonce_key = nonce_key
        self._nonce_lifetime = nonce_lifetime
        self._clock = clock

    def secrets(self) -> Sequence[str]:
        """The secrets tokens are validated against now (the first signs)."""
        return self._secrets()

    def use_secrets(self, secrets: Callable[[], Sequence[str]]) -> None:
        """SIGHUP: validate against a new secret list (nonces stay valid: their key is kept)."""
        self._secrets = secrets

    # --- nonces -----------------------------------------------------------------

    def _mac(self, stamp: bytes, client: tuple[str, int]) -> bytes:
        material = stamp + client[0].encode() + b"|" + str(client[1]).encode()
        return hmac.new(self._nonce_key, material, hashlib.sha256).digest()[:12]

    def new_nonce(self, client: tuple[str, int]) -> str:
        stamp = _STAMP.pack(int(self._clock()) & 0xFFFFFFFF)
        opaque = base64.urlsafe_b64encode(stamp + self._mac(stamp, client)).decode().rstrip("=")
        return nonce_with_features(_FEATURES, opaque)

    def nonce_is_fresh(self, nonce: bytes, client: tuple[str, int]) -> bool:
        prefix = len(nonce_with_features(_FEATURES, ""))
        if nonce_features(nonce) != _FEATURES or len(nonce) <= prefix:
            return False
        try:
            raw = base64.urlsafe_b64decode(nonce[prefix:] + b"=" * (-len(nonce[prefix:]) % 4))
        except (ValueError, TypeError):
            return False
        if len(raw) != 16 or not hmac.compare_digest(raw[4:], self._mac(raw[:4], client)):
            return False
        stamp: int = _STAMP.unpack(raw[:4])[0]
        age = (int(self._clock()) - stamp) & 0xFFFFFFFF
        return age <= self._nonce_lifetime

    # --- responses ----------------------------------------------------------------

    def challenge(self, request: Message, client: tuple[str, int], code: int = 401,
                  reason: str | None = None) -> Message:
        """401 or 438 carrying REALM, a fresh NONCE and the PASSWORD-ALGORITHMS we offer."""
        return make_error(request, code, reason, [
            (Attr.REALM, self._realm_value),
            (Attr.NONCE, encode_nonce(self.new_nonce(client))),
            (Attr.PASSWORD_ALGORITHMS, _OFFERED_VALUE),
        ])

    # --- the check ------------------------------------------------------------------

    def check(self, request: Message, client: tuple[str, int],
              known_username: str | None = None) -> Credentials | Rejection:
        """Authenticate `request`; `known_username` resolves a USERHASH on an existing allocation."""
        sha256 = request.get(Attr.MESSAGE_INTEGRITY_SHA256) is not None
        if not sha256 and request.get(Attr.MESSAGE_INTEGRITY) is None:
            return Rejection(self.challenge(request, client), "missing")
        realm, nonce = request.get(Attr.REALM), request.get(Attr.NONCE)
        username_value, hashed = request.get(Attr.USERNAME), request.get(Attr.USERHASH)
        if realm is None or nonce is None or (username_value is None and hashed is None):
            return Rejection(make_error(request, 400, "Bad Request: USERNAME, REALM and NONCE required"),
                             "malformed")
        if not self.nonce_is_fresh(nonce, client):
            return Rejection(self.challenge(request, client, 438), "stale_nonce")
        algorithm = self._algorithm(request)
        if algorithm is None:
            return Rejection(make_error(request, 400, "Bad Request: PASSWORD-ALGORITHM(S) mismatch"),
                             "bid_down")
        if username_value is not None:
            try:
                username = username_value.decode("utf-8")
            except UnicodeDecodeError:
                return Rejection(self.challenge(request, client), "malformed")
        elif known_username is not None and hashed is not None \
                and hmac.compare_digest(hashed, userhash(known_username, self.realm)):
            username = known_username
        else:
            return Rejection(self.challenge(request, client), "unknown_userhash")
        try:
            passwords = candidate_passwords(self._secrets(), username, self._clock())
        except TokenError as error:
            return Rejection(self.challenge(request, client), f"token_{error.reason}")
        for password in passwords:
            key = long_term_key(username.encode(), realm, password.encode(), algorithm)
            if request.verify_integrity(key):
                return Credentials(username, username.split(":", 1)[1], key, sha256)
        return Rejection(self.challenge(request, client), "bad_token")

    @staticmethod
    def _algorithm(request: Message) -> int | None:
        """The password algorithm to use, or None on a bid-down attempt (RFC 8489 §9.2.4)."""
        offered, chosen = request.get(Attr.PASSWORD_ALGORITHMS), request.get(Attr.PASSWORD_ALGORITHM)
        if offered is None and chosen is None:
            return PasswordAlgorithm.MD5  # an RFC 5389 client
        if offered is None or chosen is None:
            return None
        try:
            echoed = [number for number, _ in decode_password_algorithms(offered)]
            algorithm, _ = decode_password_algorithm(chosen)
        except ValueError:
            return None
        if echoed != list(OFFERED_ALGORITHMS) or algorithm not in OFFERED_ALGORITHMS:
            return None
        return algorithm
