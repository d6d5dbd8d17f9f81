"""The one exception the codec raises for bytes it refuses.

Everything malformed that comes off the wire raises :class:`StunDecodeError`,
so callers (the server loop, the TCP framer) need exactly one ``except`` to
drop a bad packet and never see an ``IndexError`` or ``struct.error``.
"""

from __future__ import annotations

__all__ = ["StunDecodeError"]


class StunDecodeError(ValueError):
    """The bytes are not a well-formed STUN message, attribute or frame."""
