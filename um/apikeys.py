"""Bearer API keys ([auth].api_keys) for the HTTPS token API and the UM web services, compared in constant time.

In um/ (the lower layer) so the worker's web services and the edge's token API share one implementation.

A key is never logged or echoed; logs name it by its id, "key-" plus the
first 8 hex digits of its SHA-256, which an operator computes with
`printf %s KEY | sha256sum`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence


def key_id(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


class ApiKeys:
    def __init__(self, keys: Sequence[str]) -> None:
        # Compare digests: equal lengths, and the time taken says nothing about the keys.
        self._digests = [(hashlib.sha256(k.encode()).digest(), key_id(k)) for k in keys]

    def __bool__(self) -> bool:
        return bool(self._digests)

    def match(self, presented: str) -> str | None:
        """The id of the configured key `presented` equals, or None."""
        digest = hashlib.sha256(presented.encode("utf-8", "replace")).digest()
        found = None
        for candidate, ident in self._digests:
            if hmac.compare_digest(candidate, digest):
                found = ident
        return found


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer TOKEN` header (RFC 6750 §2.1), else None."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()
