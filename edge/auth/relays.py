"""Where a token can be used: this node's TURN relays, as MRAS mediaRelay entries and TURN URIs.

From [edge]: the intranet relay is listen_address (the node's FQDN when it
listens on a wildcard), the internet relay is external_address when set.
MRAS's mediaRelay has a UDP and a TCP port only, so it names turn_udp_port
and turn_tcp_port; the HTTPS answer also lists turns: on turn_tls_port.
In pool mode the lists name every live member of the pool, least loaded
first, from the pool's membership (edge.pool); a node that knows no members
(memory store, or before its first heartbeat) names itself from config.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

from edge.config import EdgeSections
from edge.pool.members import Member
from um.mras.codec import MediaRelay

Members = Callable[[], Sequence[Member]]


def _wildcard(address: str) -> bool:
    return not address or ipaddress.ip_address(address).is_unspecified


def advertised_host(config: EdgeSections) -> str:
    """The host clients reach the TURN listeners at: external, else listen address, else the FQDN."""
    e = config.edge
    if e.external_address:
        return e.external_address
    return config.node.fqdn if _wildcard(e.listen_address) else e.listen_address


def _uri_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def turn_uris(config: EdgeSections) -> list[str]:
    """The TURN REST API `uris` list (RFC 7065 syntax)."""
    e, host = config.edge, _uri_host(advertised_host(config))
    return [f"turn:{host}:{e.turn_udp_port}?transport=udp", f"turn:{host}:{e.turn_tcp_port}?transport=tcp",
            f"turns:{host}:{e.turn_tls_port}?transport=tcp"]


def media_relays(config: EdgeSections) -> tuple[MediaRelay, ...]:
    """Every relay this node offers, intranet first."""
    e = config.edge
    if _wildcard(e.listen_address):
        relays = [MediaRelay("intranet", host_name=config.node.fqdn, udp_port=e.turn_udp_port,
                             tcp_port=e.turn_tcp_port)]
    else:
        relays = [MediaRelay("intranet", direct_ip_address=e.listen_address, udp_port=e.turn_udp_port,
                             tcp_port=e.turn_tcp_port)]
    if e.external_address:
        relays.append(MediaRelay("internet", direct_ip_address=e.external_address,
                                 udp_port=e.turn_udp_port, tcp_port=e.turn_tcp_port))
    return tuple(relays)


def for_location(relays: tuple[MediaRelay, ...], location: str | None) -> tuple[MediaRelay, ...]:
    """The relays for a client at `location`: all of them, the client's own location first."""
    if location is None:
        return relays
    return tuple(sorted(relays, key=lambda relay: relay.location != location))


def _relay(location: str, host: str, udp: int, tcp: int) -> MediaRelay:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return MediaRelay(location, host_name=host, udp_port=udp, tcp_port=tcp)
    return MediaRelay(location, direct_ip_address=host, udp_port=udp, tcp_port=tcp)


def pool_media_relays(config: EdgeSections, members: Members | None) -> Callable[[], tuple[MediaRelay, ...]]:
    """MRAS relays now: every live pool member's (least loaded first), else this node's."""
    own = media_relays(config)

    def current() -> tuple[MediaRelay, ...]:
        live = list(members()) if members is not None else []
        if not live:
            return own
        relays = [_relay("intranet", m.intranet_host, m.udp_port, m.tcp_port) for m in live]
        relays += [_relay("internet", m.internet_host, m.udp_port, m.tcp_port) for m in live if m.internet_host]
        return tuple(relays)

    return current


def pool_turn_uris(config: EdgeSections, members: Members | None) -> Callable[[], list[str]]:
    """TURN REST `uris` now: every live pool member's (least loaded first), else this node's."""
    own = turn_uris(config)

    def current() -> list[str]:
        live = list(members()) if members is not None else []
        if not live:
            return own
        uris: list[str] = []
        for m in live:
            host = _uri_host(m.relay_host)
            uris += [f"turn:{host}:{m.udp_port}?transport=udp", f"turn:{host}:{m.tcp_port}?transport=tcp",
                     f"turns:{host}:{m.tls_port}?transport=tcp"]
        return uris

    return current
