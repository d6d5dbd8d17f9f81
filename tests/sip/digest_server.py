"""A digest server for the tests: stateless nonces (HMAC of a timestamp) and response checks.

umedge answers challenges (um.sip.digest) but never issues them; the tests
need the other side to check the client against.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from um.sip.digest import DigestError, compute, parse_auth_params
from um.sip.message import Request


class DigestServer:
    """Server side: stateless nonces (HMAC of a timestamp) and response checks."""

    def __init__(self, realm: str, secret: bytes | None = None, algorithm: str = "SHA-256",
                 nonce_lifetime: float = 300.0) -> None:
        self.realm, self.algorithm, self.lifetime = realm, algorithm, nonce_lifetime
        self._secret = secret or secrets.token_bytes(32)

    def _nonce(self, stamp: int) -> str:
        mac = hmac.new(self._secret, str(stamp).encode(), hashlib.sha256).hexdigest()[:32]
        return f"{stamp:x}.{mac}"

    def challenge(self, algorithms: tuple[str, ...] | None = None, now: float | None = None) -> list[str]:
        """WWW-Authenticate values, strongest first (RFC 8760 §2.4)."""
        nonce = self._nonce(int(now if now is not None else time.time()))
        return [f'Digest realm="{self.realm}", nonce="{nonce}", algorithm={a}, qop="auth"'
                for a in (algorithms or (self.algorithm,))]

    def verify(self, request: Request, passwords: dict[str, str], now: float | None = None) -> str | None:
        """The authenticated username, or None (wrong, stale or missing credentials)."""
        value = request.headers.get("Authorization")
        if not value:
            return None
        try:
            scheme, params = parse_auth_params(value)
        except DigestError:
            return None
        if scheme.lower() != "digest" or params.get("realm") != self.realm:
            return None
        nonce = params.get("nonce", "")
        stamp_text, _, _ = nonce.partition(".")
        try:
            stamp = int(stamp_text, 16)
        except ValueError:
            return None
        current = now if now is not None else time.time()
        if not hmac.compare_digest(self._nonce(stamp), nonce) or current - stamp > self.lifetime:
            return None
        username = params.get("username", "")
        password = passwords.get(username)
        if password is None:
            return None
        try:
            expected = compute(params.get("algorithm", "MD5"), username, self.realm, password, request.method,
                               params.get("uri", ""), nonce, qop=params.get("qop"), nc=params.get("nc", ""),
                               cnonce=params.get("cnonce", ""), body=request.body)
        except DigestError:
            return None
        return username if hmac.compare_digest(expected, params.get("response", "")) else None
