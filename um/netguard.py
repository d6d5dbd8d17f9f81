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

from OpenSSL import SSL
from twisted.internet.interfaces import IHandshakeListener, IProtocolFactory
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from zope.interface import implementer

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


LISTEN_BACKLOG = 1024  # a flood must not fill the accept queue: its SYNs would crowd out honest clients


class _Guarded(ProtocolWrapper):
    """Counts the connection, closes it when it idles; its first whole message must come quickly.

    Outermost on the socket (outside TLS), so the first-data timer covers
    the TLS handshake and refusing (buildProtocol returning None) closes the
    accepted socket itself.
    """

    factory: ConnectionGuard

    def __init__(self, factory: ConnectionGuard, wrapped: Protocol) -> None:
        super().__init__(cast(Any, factory), wrapped)  # the stub wants WrappingFactory[_Guarded]
        self._timer: Any = None
        self._source = ""  # set with _counted by ConnectionGuard.buildProtocol
        self._counted = False
        self._settled = False
        self._closed = False

    def makeConnection(self, transport: Any) -> None:
        self._arm(self.factory.limits.first_data_timeout)  # first: armed even if the inside fails to start
        super().makeConnection(transport)

    def _arm(self, seconds: float) -> None:
        from twisted.internet import reactor

        if self._closed:
            return
        if self._timer is not None and self._timer.active():
            self._timer.reset(seconds)
        else:
            self._timer = reactor.callLater(seconds, self._expired)

    def _expired(self) -> None:
        self._timer = None
        self.factory.timed_out += 1
        transport: Any = self.transport  # the TCP transport: it can abort
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
        if self._closed:
            return  # once: the protocol inside has been told already
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        try:
            super().connectionLost(reason)  # unregisterProtocol, then the protocol inside
        finally:
            self.factory.unregisterProtocol(self)  # idempotent: released even if the protocol inside raised


class ConnectionGuard(WrappingFactory):
    """Wraps a stream factory: caps connections per source and in total, times out idlers.

    Put it outermost on the listening port (around a TLSMemoryBIOFactory, never
    inside one, see `guarded`): only there does refusing close the socket.
    """

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
        self.handshakes: HandshakeWatch | None = None  # TLS listeners: refused handshakes (guarded())

    @property
    def tls_refused(self) -> int:
        """TLS handshakes this listener refused (0 for a plain TCP listener)."""
        return self.handshakes.refused if self.handshakes is not None else 0

    def buildProtocol(self, addr: Any) -> Any:  # a _Guarded wrapper, or None to refuse
        host = getattr(addr, "host", "")
        if len(self.protocols) >= self.limits.total or self.per_source[host] >= self.limits.per_source:
            self.refused += 1
            if self._limiter_log.should_log(host):
                log.warn("{name}: refusing connections from {host} (cap {per_source} per source, "
                         "{total} in total)", name=self.name, host=host, per_source=self.limits.per_source,
                         total=self.limits.total)
            return None  # the port closes the accepted socket at once
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            return None  # the factory inside refused: closed at once too, and nothing counted
        protocol = _Guarded(self, inner)
        protocol._source, protocol._counted = host, True
        self.per_source[host] += 1
        return protocol

    def unregisterProtocol(self, protocol: Protocol) -> None:
        """Releases the connection's count once, whichever close path calls it (and however often)."""
        if getattr(protocol, "_counted", False):
            cast(_Guarded, protocol)._counted = False
            source = cast(_Guarded, protocol)._source
            if self.per_source[source] > 1:
                self.per_source[source] -= 1
            else:
                self.per_source.pop(source, None)
        self.protocols.pop(cast(Any, protocol), None)


def guarded(factory: IProtocolFactory, limits: ConnectionLimits, name: str,
            tls_options: Any = None) -> ConnectionGuard:
    """A listener's factory with its guard outermost: ConnectionGuard(TLSMemoryBIOFactory(factory)) for TLS.

    The protocol inside settles the guard (settle_connection) on its first
    whole message, so a TLS handshake or a request dripping in is cut by the
    handshake timeout and a working client only by the idle timeout. A TLS
    listener also watches its handshakes (HandshakeWatch): refusals are
    counted on the guard (`tls_refused`) and logged.
    """
    if tls_options is None:
        return ConnectionGuard(factory, limits, name, settle_on_data=False)
    watch = HandshakeWatch(factory, name)
    guard = ConnectionGuard(TLSMemoryBIOFactory(tls_options, False, watch), limits, name, settle_on_data=False)
    guard.handshakes = watch
    return guard


def _tls_reason(failure: Failure) -> str:
    """OpenSSL's reason for a failed handshake, in words an operator acts on."""
    error = failure.value
    args = error.args if error is not None else ()
    texts = []
    for item in (args[0] if args and isinstance(args[0], list) else []):
        if isinstance(item, tuple) and item:
            texts.append(str(item[-1]))
    text = "; ".join(t for t in texts if t) or str(error) or type(error).__name__
    lowered = text.lower()
    if "did not return a certificate" in lowered or "certificate required" in lowered:
        return f"no client certificate ({text})"
    if "certificate verify failed" in lowered or "unknown ca" in lowered:
        return f"client certificate not trusted: not issued by the pool CA, or expired ({text})"
    if "wrong version number" in lowered or "http request" in lowered or "unknown protocol" in lowered:
        return f"not TLS ({text})"
    return text


@implementer(IHandshakeListener)
class _Watched(ProtocolWrapper):
    """Between TLS and the listener's protocol: learns whether the handshake completed, and why not."""

    factory: HandshakeWatch

    def __init__(self, factory: HandshakeWatch, wrapped: Protocol) -> None:
        super().__init__(cast(Any, factory), wrapped)
        self._handshake_done = False

    def handshakeCompleted(self) -> None:
        self._handshake_done = True
        if IHandshakeListener.providedBy(self.wrappedProtocol):
            cast(Any, self.wrappedProtocol).handshakeCompleted()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self._handshake_done and reason.check(SSL.Error) is not None:
            peer = self.transport.getPeer() if self.transport is not None else None
            self.factory.refused_handshake(getattr(peer, "host", "?"), _tls_reason(reason))
        super().connectionLost(reason)


class HandshakeWatch(WrappingFactory):
    """Counts and logs refused TLS handshakes (no client certificate, an untrusted CA, not TLS at all).

    Without it a refused MTLS client sees only a closed connection or a
    timeout, and the node says nothing. One line per source and minute
    (LOG_EVERY), whatever the source sends; `refused` counts every one.
    """

    protocol = _Watched
    noisy = False

    def __init__(self, wrapped: IProtocolFactory, name: str) -> None:
        super().__init__(cast(Any, wrapped))
        self.name = name
        self.refused = 0
        self._log = RateLimiter(0.0, 0.0)

    def refused_handshake(self, host: str, why: str) -> None:
        self.refused += 1
        if self._log.should_log(host):
            log.warn("{name}: TLS handshake from {host} refused: {why} (logged once a minute per source)",
                     name=self.name, host=host, why=why)


def settle_on_request(site: Any) -> None:
    """Make an HTTP site (twisted.web Site) settle its connection's guard once a whole request is in."""
    base = site.requestFactory
    if getattr(base, "settles_guard", False):
        return

    class SettlingRequest(base):  # type: ignore[misc,valid-type]
        settles_guard = True

        def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
            settle_connection(self.channel)
            super().requestReceived(command, path, version)

    site.requestFactory = SettlingRequest


def settle_connection(protocol: Protocol) -> None:
    """Tell the ConnectionGuard below `protocol` (through TLS and other wrappers) that it settled."""
    transport, hops = getattr(protocol, "transport", None), 0
    while transport is not None and hops < 6:
        settle = getattr(transport, "settle", None)
        if callable(settle):
            settle()
            return
        transport, hops = getattr(transport, "transport", None), hops + 1
