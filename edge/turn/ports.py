"""Relay port choice within relay_port_min..relay_port_max (even ones for EVEN-PORT).

Sans-I/O: it proposes random free ports and remembers which this process
holds. Binding is the caller's job; a port that fails to bind (another
process has it) is simply skipped.
"""

from __future__ import annotations

import random
from collections.abc import Iterator


class PortPool:
    def __init__(self, low: int, high: int, rng: random.Random | None = None) -> None:
        self.low, self.high = low, high
        self._rng = rng or random.SystemRandom()
        self._in_use: set[tuple[int, int]] = set()  # (family, port), reserved ones included

    def _taken(self, family: int, port: int) -> bool:
        return (family, port) in self._in_use

    def candidates(self, family: int, even: bool = False, need_next: bool = False,
                   attempts: int = 64) -> Iterator[int]:
        """Free ports to try binding (even ones, with a free successor, if asked).

        Random ones first (RFC 8656 §7.2 wants relay ports hard to guess); then, so a nearly full
        range still finds its last free ports, every port once from a random offset.
        """
        span = self.high - self.low + 1

        def fits(port: int) -> bool:
            if even and port % 2:
                return False
            if need_next and (port + 1 > self.high or self._taken(family, port + 1)):
                return False
            return not self._taken(family, port)

        tried: set[int] = set()
        for _ in range(min(attempts, span)):
            port = self.low + self._rng.randrange(span)
            if port not in tried and fits(port):
                tried.add(port)
                yield port
        start = self._rng.randrange(span)
        for offset in range(span):
            port = self.low + (start + offset) % span
            if port not in tried and fits(port):
                yield port

    def take(self, family: int, port: int) -> None:
        self._in_use.add((family, port))

    def release(self, family: int, port: int) -> None:
        self._in_use.discard((family, port))

    @property
    def in_use(self) -> int:
        return len(self._in_use)

    @property
    def size(self) -> int:
        """Ports in the range, per address family."""
        return self.high - self.low + 1

