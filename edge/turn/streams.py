"""Twisted stream transports as the TURN stream protocols use them, typed.

Twisted types ``Protocol.transport`` as ``ITransport | None`` and ``getPeer()``
as an IAddress without host or port.  The TURN protocols (edge.turn.io,
edge.msturn.pseudotls) only touch their transport once connected, over TCP
or TLS, where it has exactly these; naming them once keeps that typed.
"""

from __future__ import annotations

from typing import Protocol, cast

from twisted.internet.protocol import Protocol as TwistedProtocol

__all__ = ["PeerAddress", "StreamTransport", "transport_of"]


class PeerAddress(Protocol):
    host: str
    port: int


class StreamTransport(Protocol):
    def write(self, data: bytes) -> None: ...
    def loseConnection(self) -> None: ...
    def getPeer(self) -> PeerAddress: ...


def transport_of(protocol: TwistedProtocol) -> StreamTransport:
    """`protocol`'s transport; call from connectionMade on (makeConnection has set it)."""
    return cast(StreamTransport, protocol.transport)
