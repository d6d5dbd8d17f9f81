"""Address families of a call's media: what the far end's offer needs and whether this worker can do it.

Two decisions, made before anything is allocated:

- `check`: with direct media the worker's RTP socket has one family (the
  `[worker]` host address; `::` is dual-stack). An offer whose audio
  address is of the other family cannot be answered: 488 with a Warning
  naming the family, instead of a 200 whose media then fails.
- `requested`: with media via the edge the relay must be of the far end's
  family (a relay reaches peers of its own family only: RFC 8656 §9.1,
  443 Peer Address Family Mismatch). The handler notes the offer's family
  in the call's task (`note`), and the relay transport asks the edge for it
  (REQUESTED-ADDRESS-FAMILY, RFC 8656 §18.11). A context variable carries
  it, so each call's task sees its own offer's family and nothing in
  between (call, context) needs to pass it along.
"""

from __future__ import annotations

import ipaddress
from contextvars import ContextVar
from typing import Any

from um.worker import sdp

IPV4, IPV6 = 4, 6
_REQUESTED: ContextVar[int | None] = ContextVar("umedge_worker_relay_family", default=None)


def offer_family(offer: sdp.Session) -> int | None:
    """The family of the offer's first audio stream's address (media c=, else session c=); None: no address."""
    for media in offer.media:
        if media.kind != "audio" or not media.port:
            continue
        address = media.connection or offer.connection
        if address is None:
            return None
        try:
            return ipaddress.ip_address(address).version
        except ValueError:
            return None
    return None


def host_families(host: str) -> frozenset[int]:
    """The families a socket bound to `host` can talk to: `::` is dual-stack, any other address its own family."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return frozenset((IPV4, IPV6))  # a name: the resolver decides; do not refuse on a guess
    if address.version == IPV6 and address.is_unspecified:
        return frozenset((IPV4, IPV6))
    return frozenset((address.version,))


def name(family: int) -> str:
    return "IPv6" if family == IPV6 else "IPv4"


def check(offer: sdp.Session, settings: Any) -> None:
    """Raise 488 (sdp.SdpError with a Warning) when direct media cannot reach the offer's address family."""
    family = offer_family(offer)
    if family is None or settings.media_via_edge or family in host_families(settings.host):
        return
    own = name(IPV4 if family == IPV6 else IPV6)
    raise sdp.SdpError(488, f"Not Acceptable Here - {name(family)} media not supported",
                       warning=f"incompatible network address family: the offer's media address is "
                               f"{name(family)}, this worker's RTP ({settings.host}) is {own} only")


def note(offer: sdp.Session) -> None:
    """Remember the offer's family for the relay this call's task allocates (call from the call's own task)."""
    _REQUESTED.set(offer_family(offer))


def requested() -> int | None:
    """The relay family the current call needs (None: not known, the edge's default, IPv4)."""
    return _REQUESTED.get()
