"""Media tokens in the TURN REST API format, minted and validated without shared state.

username = "<expiry unix time>:<identity>", password =
base64(HMAC-SHA1(secret, username)). Any node holding one of the pool's
secrets can check a token; the first secret signs, every listed secret
validates, so secrets rotate without a flag day.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

MAX_USERNAME_BYTES = 508  # RFC 8489 §14.3


class TokenError(ValueError):
    """A username is not a usable token; `reason` is short and safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Token:
    username: str
    password: str
    expiry: int

    @property
    def identity(self) -> str:
        return self.username.split(":", 1)[1]


def password_for(secret: str, username: str) -> str:
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def mint(secret: str, identity: str, ttl: int, now: float) -> Token:
    """A token for `identity` valid `ttl` seconds from `now`, signed with `secret`."""
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    if not identity or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in identity):
        raise ValueError("identity must be non-empty printable text")
    expiry = int(now) + ttl
    username = f"{expiry}:{identity}"
    if len(username.encode()) > MAX_USERNAME_BYTES:
        raise ValueError("identity too long for a STUN USERNAME")
    return Token(username, password_for(secret, username), expiry)


def parse_username(username: str) -> tuple[int, str]:
    """(expiry, identity) of a token username; TokenError if it is not one."""
    expiry_text, sep, identity = username.partition(":")
    if not sep or not expiry_text.isdigit() or not identity or len(expiry_text) > 12:
        raise TokenError("malformed")
    return int(expiry_text), identity


def candidate_passwords(secrets: Sequence[str], username: str, now: float) -> list[str]:
    """The passwords `username` may carry, one per listed secret; TokenError if expired/malformed.

    The caller proves which one (if any) the client used by checking its
    MESSAGE-INTEGRITY with each, which costs one HMAC per secret.
    """
    expiry, _ = parse_username(username)
    if expiry < now:
        raise TokenError("expired")
    return [password_for(secret, username) for secret in secrets]
