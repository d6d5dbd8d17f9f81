"""Who gets a token and for how long: identity checks, the lifetime cap, minting, auditing.

One TokenIssuer serves the MRAS, HTTPS and CLI paths, so they cannot
disagree. Identities are SIP URIs (sip:user@domain or sips:...) of a domain
this node serves ([node].domain plus [auth].served_domains); lifetimes are
capped at [auth].max_token_lifetime minutes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from edge.auth import audit
from edge.auth.secrets import auth_secrets
from edge.config import EdgeSections
from edge.tokens import MAX_USERNAME_BYTES, Token, mint

# user@host of a SIP URI without parameters or headers; the host is a domain name.
# The user part: RFC 3261's unreserved and user-unreserved characters and escapes, ASCII only (no
# control characters: they would end up in a TURN username and a log line).
_IDENTITY = re.compile(r"^sips?:([A-Za-z0-9\-_.!~*'()&=+$,%/]+)@([A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")
_EXPIRY_DIGITS = 12  # room for the "<expiry>:" prefix of the TURN username


class IdentityError(ValueError):
    """An identity gets no token: `forbidden` for a domain not served, else malformed."""

    def __init__(self, message: str, forbidden: bool = False) -> None:
        super().__init__(message)
        self.forbidden = forbidden


@dataclass(frozen=True)
class Issued:
    token: Token
    ttl: int  # seconds granted (after the cap)


def identity_domain(identity: str) -> str:
    """The domain of a SIP identity URI, lower-cased; IdentityError if it is not one."""
    match = _IDENTITY.match(identity)
    if not match or ".." in match.group(2):
        raise IdentityError("identity must be a SIP URI sip:user@domain")
    if len(identity.encode()) + _EXPIRY_DIGITS + 1 > MAX_USERNAME_BYTES:
        raise IdentityError("identity too long for a TURN username")
    return match.group(2).lower()


class TokenIssuer:
    def __init__(self, secret: str, max_lifetime: int, domains: frozenset[str],
                 clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self.max_lifetime = max_lifetime  # seconds
        self.domains = frozenset(d.lower() for d in domains)
        self._clock = clock

    @classmethod
    def from_config(cls, config: EdgeSections, clock: Callable[[], float] = time.time) -> TokenIssuer:
        domains = frozenset((config.node.domain, *config.auth.served_domains))
        return cls(auth_secrets(config)[0], config.auth.max_token_lifetime * 60, domains, clock)

    def reconfigure(self, config: EdgeSections) -> None:
        """SIGHUP: sign with the (possibly rotated) first secret; take the new lifetime cap and domains."""
        fresh = TokenIssuer.from_config(config, self._clock)
        self._secret, self.max_lifetime, self.domains = fresh._secret, fresh.max_lifetime, fresh.domains

    def check(self, identity: str) -> None:
        """IdentityError unless `identity` may get a token here."""
        domain = identity_domain(identity)
        if domain not in self.domains:
            raise IdentityError(f"domain {domain} is not served by this node", forbidden=True)

    def grant(self, ttl: int | None) -> int:
        """The lifetime (seconds) a request for `ttl` seconds gets: the cap when absent or above it."""
        if ttl is None or ttl > self.max_lifetime:
            return self.max_lifetime
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        return ttl

    def issue(self, identity: str, ttl: int | None, requester: str, path: str) -> Issued:
        """Check, mint and audit one token; IdentityError/ValueError if it may not be issued."""
        self.check(identity)
        granted = self.grant(ttl)
        token = mint(self._secret, identity, granted, self._clock())
        audit.issued(identity, requester, path, granted, token.expiry)
        return Issued(token, granted)
