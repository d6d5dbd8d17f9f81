"""Find mediation servers: static URIs, or DNS SRV for the domain (dnspython), with TTL caching.

SRV services are tried in Lync's order (_sipinternaltls._tcp, _sipinternal._tcp,
_sip._tls); the first that answers gives the targets, in RFC 2782 order.
Without any SRV record the domain's own A/AAAA records are used on 5061 (TLS).
Answers are cached for their TTL, so a keepalive failure can fail over to
the next target without a DNS round trip.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.rdatatype
import dns.resolver

from edge.mediation.targets import (
    DEFAULT_PORTS,
    SRV_SERVICES,
    Target,
    parse_uri,
    rfc2782_order,
)

MIN_TTL, MAX_TTL = 5.0, 3600.0


def make_resolver(servers: Sequence[tuple[str, int]], timeout: float = 2.0) -> dns.asyncresolver.Resolver:
    """A resolver for the configured DNS servers, or the system's (/etc/resolv.conf) if none."""
    if not servers:
        resolver = dns.asyncresolver.Resolver()
    else:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(host, port) for host, port in servers]
    resolver.lifetime = timeout
    return resolver


class Discovery:
    def __init__(self, static: Sequence[str], domain: str, resolver: dns.asyncresolver.Resolver | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._static = [parse_uri(uri) for uri in static]
        self.domain = domain
        self._resolver = resolver
        self._clock = clock
        self._cached: list[Target] = []
        self._expires = 0.0
        self.last_error: str | None = None

    async def targets(self) -> list[Target]:
        """The mediation servers to use, best first (cached for the DNS TTL)."""
        if self._static:
            return list(self._static)
        if self._cached and self._clock() < self._expires:
            return list(self._cached)
        try:
            found, ttl = await self._lookup()
            self.last_error = None
        except (dns.exception.DNSException, OSError) as error:
            self.last_error = f"DNS lookup for {self.domain} failed: {type(error).__name__}"
            return list(self._cached)  # keep using what we knew
        self._cached = found
        self._expires = self._clock() + max(MIN_TTL, min(MAX_TTL, ttl))
        return list(found)

    async def _query(self, name: str, rdtype: str) -> dns.resolver.Answer | None:
        assert self._resolver is not None
        try:
            return await self._resolver.resolve(name, rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None

    async def _lookup(self) -> tuple[list[Target], float]:
        for service, transport in SRV_SERVICES:
            answer = await self._query(f"{service}.{self.domain}", "SRV")
            if answer is None:
                continue
            records = [Target(str(r.target).rstrip("."), r.port, transport, r.priority, r.weight)
                       for r in answer if str(r.target) != "."]
            if records:
                ttl = answer.rrset.ttl if answer.rrset is not None else MIN_TTL
                return await self._addresses(rfc2782_order(records)), ttl
        fallback = [Target(self.domain, DEFAULT_PORTS["tls"], "tls")]
        return await self._addresses(fallback), MIN_TTL

    async def _addresses(self, targets: list[Target]) -> list[Target]:
        """Each target's host resolved to its addresses (A, then AAAA), order kept."""
        resolved: list[Target] = []
        for target in targets:
            for rdtype in ("A", "AAAA"):
                answer = await self._query(target.host, rdtype)
                for record in answer or []:
                    resolved.append(Target(record.address, target.port, target.transport,
                                           target.priority, target.weight, target.host))
        return resolved
