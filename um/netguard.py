"""Abuse limits every listener shares: per-source request rates, connection caps, timeouts.

Lives in um/ (the lower layer) so the UM SIP listeners and the edge's TURN
and token listeners use one implementation. RateLimiter is sans-I/O (fed a
clock); ConnectionGuard wraps any Twisted stream factory.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure

from um.config import LimitsConfig

log = Logger(namespace="umedge.limits")
LOG_EVERY = 60.0  # seconds: one log line per source and minute, however hard it pushes


class RateLimiter:
    """Token buckets per source address: `rate` per second, bursts of `burst`; bounded memory."""

    MAX_SOURCES = 50_000

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._buckets: dict[str, list[float]] = {}
        self._logged: dict[str, float] = {}
        self.dropped = 0

    def allow(self, source: str) -> bool:
        now = self._clock()
        bucket = self._buckets.get(source)
        if bucket is None:
            if len(self._buckets) >= self.MAX_SOURCES:
                self._forget_full_buckets(now)
            bucket = self._buckets[source] = [self.burst, now]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        self.dropped += 1
        return False

    def should_log(self, source: str) -> bool:
        """True at most once per source and minute (for the 'rate limited' log line)."""
        now = self._clock()
        if now - self._logged.get(source, -LOG_EVERY) < LOG_EVERY:
            return False
        if len(self._logged) >= self.MAX_SOURCES:
            self._logged.clear()
        self._logged[source] = now
        return True

    def _forget_full_buckets(self, now: float) -> None:
        """Drop sources whose bucket has refilled: forgetting them changes nothing."""
        full = [s for s, (tokens, last) in self._buckets.items()
                if tokens + (now - last) * self.rate >= self.burst]
        for source in full:
            del self._buckets[source]
        if len(self._buckets) >= self.MAX_SOURCES:  # a spoofed flood of distinct sources
            self._buckets.clear()


@dataclass(frozen=True)
class ConnectionLimits:
    per_source: int
    total: int
    first_data_timeout: float  # TLS handshake plus the first bytes (slowloris)
    idle_timeout: float

    @classmethod
    def of(cls, limits: LimitsConfig) -> ConnectionLimits:
        """From the config's [limits] section."""
        return cls(limits.connections_per_source, limits.max_connections, limits.handshake_timeout,
                   limits.idle_timeout)


class _Guarded(ProtocolWrapper):
    """Counts the connection, closes it when it idles; first data must come quickly."""

    factory: ConnectionGuard

    def __init__(self, factory: ConnectionGuard, wrapped: Protocol) -> None:
        super().__init__(cast(Any, factory), wrapped)  # the stub wants WrappingFactory[_Guarded]
        self._timer: Any = None
        self._source = ""
        self._settled = False

    def makeConnection(self, transport: Any) -> None:
        self._source = transport.getPeer().host
        self._arm(self.factory.limits.first_data_timeout)
        super().makeConnection(transport)

    def _arm(self, seconds: float) -> None:
        from twisted.internet import reactor

        if self._timer is not None and self._timer.active():
            self._timer.reset(seconds)
        else:
            self._timer = reactor.callLater(seconds, self._expired)

    def _expired(self) -> None:
        self.factory.timed_out += 1
        transport: Any = self.transport  # a TCP or TLS transport: both can abort
        transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        if self._settled or self.factory.settle_on_data:
            self._arm(self.factory.limits.idle_timeout)
        super().dataReceived(data)

    def settle(self) -> None:
        """The protocol inside has its first whole message: from now on only the idle timeout applies."""
        if not self._settled:
            self._settled = True
            self._arm(self.factory.limits.idle_timeout)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        super().connectionLost(reason)


class ConnectionGuard(WrappingFactory):
    """Wraps a stream factory: caps connections per source and in total, times out idlers."""

    protocol = _Guarded
    noisy = False

    def __init__(self, wrapped: IProtocolFactory, limits: ConnectionLimits, name: str,
                 settle_on_data: bool = True) -> None:
        """`settle_on_data=False`: raw bytes (a TLS handshake dripping in) do not end the first-data
        timeout; the protocol inside calls settle_connection() once it has a whole message."""
        super().__init__(cast(Any, wrapped))  # Twisted annotates a ClientFactory; any factory serves
        self.limits, self.name = limits, name
        self.settle_on_data = settle_on_data
        self.per_source: Counter[str] = Counter()
        self.refused = 0
        self.timed_out = 0
        self._limiter_log = RateLimiter(0.0, 0.0)

    def buildProtocol(self, addr: Any) -> Any:  # a _Guarded wrapper, or None to refuse
        host = getattr(addr, "host", "")
        if len(self.protocols) >= self.limits.total or self.per_source[host] >= self.limits.per_source:
            self.refused += 1
            if self._limiter_log.should_log(host):
                log.warn("{name}: refusing connections from {host} (cap {per_source} per source, "
                         "{total} in total)", name=self.name, host=host, per_source=self.limits.per_source,
                         total=self.limits.total)
            return None  # Twisted closes the accepted socket at once
        self.per_source[host] += 1
        return super().buildProtocol(addr)

    def unregisterProtocol(self, protocol: Protocol) -> None:
        source = getattr(protocol, "_source", "")
        if self.per_source[source] > 1:
            self.per_source[source] -= 1
        else:
            self.per_source.pop(source, None)
        super().unregisterProtocol(protocol)


def settle_connection(protocol: Protocol) -> None:
    """Tell the ConnectionGuard below `protocol` (through TLS and other wrappers) that it settled."""
    transport, hops = getattr(protocol, "transport", None), 0
    while transport is not None and hops < 6:
        settle = getattr(transport, "settle", None)
        if callable(settle):
            settle()
            return
        transport, hops = getattr(transport, "transport", None), hops + 1
