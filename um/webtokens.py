"""Per-mailbox bearer tokens for the UM web services: JWTs (HS256) signed with this node's web token secret.

A token names one mailbox (`sub`, its extension) and what it may do there
(`scope`, space-separated: play, pin-reset, voicemail, admin). `admin` acts on
any mailbox and may read the live calls (GET /v1/worker). Tokens are minted by
`umedge token issue --web --mailbox EXT --scope play,pin-reset [--ttl S]` with
the secret in <state_dir>/web_token_secret (0600), generated on first use, so
the node that serves the web port checks what the CLI on the same state_dir
issued. Replacing or removing the file revokes every token issued so far
(the server re-reads it when it changes; no restart).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import jwt

from um.secretfile import generated_secret

SECRET_FILE = "web_token_secret"
ALGORITHM = "HS256"
ISSUER = "umedge"
AUDIENCE = "umedge-um-web"
SCOPES = ("play", "pin-reset", "voicemail", "admin")
DEFAULT_TTL = 3600
MAX_TTL = 90 * 86400
ADMIN_SUBJECT = "admin"  # `sub` of an admin token issued without a mailbox
_MAILBOX = re.compile(r"^[0-9]{1,20}$")


class WebTokenError(ValueError):
    """A token cannot be issued as asked, or a presented one is not valid (the message says why)."""


@dataclass(frozen=True)
class Grant:
    """Who asks the UM web services and what for: a mailbox (None: any) and scopes."""

    requester: str
    mailbox: str | None = None
    scopes: frozenset[str] = field(default_factory=lambda: frozenset({"admin"}))

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    def may(self, scope: str) -> bool:
        """The scope is granted (admin grants every scope)."""
        return self.admin or scope in self.scopes

    def covers(self, mailbox: str | None) -> bool:
        """The grant acts on `mailbox` (admin: any mailbox; None asks for every mailbox: admin only)."""
        return self.admin or (mailbox is not None and mailbox == self.mailbox)


def secret_path(state_dir: str | Path) -> Path:
    return Path(state_dir) / SECRET_FILE


def load_secret(state_dir: str | Path) -> bytes:
    """The signing key, generated (32 random bytes, URL-safe text, 0600) on first use."""
    path = secret_path(state_dir)
    secret = generated_secret(path).encode()
    if len(secret) < 16:
        raise WebTokenError(f"{path}: the web token secret is shorter than 16 bytes")
    return secret


def parse_scopes(text: str | Iterable[str]) -> frozenset[str]:
    """Scopes from "play,pin-reset", "play pin-reset" or a list; raises WebTokenError on an unknown one."""
    parts = re.split(r"[\s,]+", text) if isinstance(text, str) else list(text)
    scopes = frozenset(p.strip() for p in parts if p.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        raise WebTokenError(f"unknown scope {unknown[0]!r}; allowed: {', '.join(SCOPES)}")
    if not scopes:
        raise WebTokenError(f"no scope; allowed: {', '.join(SCOPES)}")
    return scopes


def issue(state_dir: str | Path, mailbox: str | None, scopes: str | Iterable[str], ttl: int = DEFAULT_TTL,
          now: float | None = None) -> tuple[str, dict[str, object]]:
    """A signed token and its claims. Without `mailbox` only an admin token can be issued."""
    granted = parse_scopes(scopes)
    if not 1 <= ttl <= MAX_TTL:
        raise WebTokenError(f"ttl {ttl}: allowed 1-{MAX_TTL} seconds")
    if mailbox is None:
        if "admin" not in granted:
            raise WebTokenError("a mailbox is needed unless the scope is admin")
        subject = ADMIN_SUBJECT
    elif not _MAILBOX.match(mailbox):
        raise WebTokenError(f"mailbox {mailbox!r}: allowed an extension of 1-20 digits")
    else:
        subject = mailbox
    issued_at = int(now if now is not None else time.time())
    claims: dict[str, object] = {
        "iss": ISSUER, "aud": AUDIENCE, "sub": subject,
        "scope": " ".join(s for s in SCOPES if s in granted),
        "iat": issued_at, "exp": issued_at + ttl, "jti": uuid.uuid4().hex}
    return jwt.encode(claims, load_secret(state_dir), algorithm=ALGORITHM), claims


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


class WebTokens:
    """Checks presented tokens against <state_dir>/web_token_secret (re-read when the file changes)."""

    def __init__(self, state_dir: str | Path) -> None:
        self.state_dir = Path(state_dir)
        self._cached: tuple[tuple[int, float], bytes] | None = None

    def _secret(self) -> bytes:
        path = secret_path(self.state_dir)
        try:
            stat = path.stat()
        except FileNotFoundError:
            self._cached = None
            return load_secret(self.state_dir)
        key = (stat.st_ino, stat.st_mtime)
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, load_secret(self.state_dir))
        return self._cached[1]

    def verify(self, token: str, where: str) -> Grant:
        """The grant a token carries; raises WebTokenError (expired, bad signature, bad claims)."""
        try:
            claims = jwt.decode(token, self._secret(), algorithms=[ALGORITHM], audience=AUDIENCE, issuer=ISSUER,
                                options={"require": ["exp", "sub", "scope", "iss", "aud"]}, leeway=5)
        except jwt.ExpiredSignatureError:
            raise WebTokenError("token expired") from None
        except jwt.InvalidTokenError as error:
            raise WebTokenError(f"token not accepted ({error})") from None
        except OSError as error:
            raise WebTokenError(f"web token secret unavailable ({error.strerror})") from None
        subject, scope = claims.get("sub"), claims.get("scope")
        if not isinstance(scope, str):
            raise WebTokenError("token not accepted (scope is not a string)")
        scopes = parse_scopes(scope)
        if not isinstance(subject, str):
            raise WebTokenError("token not accepted (sub is not a string)")
        if _MAILBOX.match(subject):
            return Grant(f"jwt:{subject}@{where}", subject, scopes)
        if subject == ADMIN_SUBJECT and "admin" in scopes:
            return Grant(f"jwt:{subject}@{where}", None, scopes)
        raise WebTokenError("token not accepted (sub is not a mailbox)")


__all__ = ["ADMIN_SUBJECT", "DEFAULT_TTL", "MAX_TTL", "SCOPES", "Grant", "WebTokenError", "WebTokens", "issue",
           "load_secret", "looks_like_jwt", "parse_scopes", "secret_path"]
