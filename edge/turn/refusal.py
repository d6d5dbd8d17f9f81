"""The one way a TURN request fails: a Refusal carrying an RFC 8489 ERROR-CODE.

Rules deep in the engine raise it; whoever answers the request (the RFC
path, or a dialect with its own wire format) turns it into an error response
once.  `extra` holds attributes for that response (ALTERNATE-SERVER,
UNKNOWN-ATTRIBUTES, ...) in the numbering of whoever raised it.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.stun.constants import ErrorCode

__all__ = ["ErrorCode", "Refusal"]


class Refusal(Exception):
    """A request fails with `code`; raised where the rule is, answered once."""

    def __init__(self, code: ErrorCode, reason: str | None = None,
                 extra: Sequence[tuple[int, bytes]] = ()) -> None:
        super().__init__(int(code), reason)
        self.code = code
        self.reason = reason
        self.extra = list(extra)
