"""Relay port choice within relay_port_min..relay_port_max, with EVEN-PORT reservations.

Sans-I/O: it proposes ports and remembers which are in use and which are
reserved (RFC 8656 RESERVATION-TOKEN: the odd port after an even one, held
30 seconds for the RTCP allocation that follows). Binding is the caller's
job; a port that fails to bind is simply skipped.
"""

from __future__ import annotations

import random
import secrets
from typing import Iterator


class PortPool:
    def __init__(self, low: int, high: int, rng: random.Random | None = None) -> None:
        self.low, self.high = low, high
        self._rng = rng or random.SystemRandom()
        self._in_use: set[tuple[int, int]] = set()  # (family, port)
        self._reserved: dict[bytes, tuple[int, int, float]] = {}  # token -> (family, port, expiry)

    def _taken(self, family: int, port: int) -> bool:
        return (family, port) in self._in_use or any(
            f == family and p == port for f, p, _ in self._reserved.values())

    def candidates(self, family: int, even: bool = False, need_next: bool = False,
                   attempts: int = 64) -> Iterator[int]:
        """Random free ports to try binding (even ones, with a free successor, if asked)."""
        span = self.high - self.low + 1
        for _ in range(min(attempts, span)):
            port = self.low + self._rng.randrange(span)
            if even and port % 2:
                port = port - 1 if port - 1 >= self.low else port + 1
            if even and port % 2:
                continue
            if need_next and (port + 1 > self.high or self._taken(family, port + 1)):
                continue
            if not self._taken(family, port) and self.low <= port <= self.high:
                yield port

    def take(self, family: int, port: int) -> None:
        self._in_use.add((family, port))

    def release(self, family: int, port: int) -> None:
        self._in_use.discard((family, port))

    def reserve(self, family: int, port: int, until: float) -> bytes:
        token = secrets.token_bytes(8)
        self._reserved[token] = (family, port, until)
        return token

    def claim(self, token: bytes, now: float) -> tuple[int, int] | None:
        """The (family, port) a valid token reserved, now removed from the reservations."""
        entry = self._reserved.pop(token, None)
        if entry is None or entry[2] < now:
            return None
        return entry[0], entry[1]

    def expire(self, now: float) -> None:
        for token in [t for t, (_, _, until) in self._reserved.items() if until < now]:
            del self._reserved[token]

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def reservations(self) -> int:
        return len(self._reserved)
