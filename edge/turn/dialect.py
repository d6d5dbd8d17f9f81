"""Other TURN dialects on the engine's ports, plugged in rather than known.

The composition root hands dialect objects to ``TurnEngine(dialects=...)``;
the engine never imports them.  It calls a dialect in three places only:

* ``from_client`` for a datagram the RFC codec refused (an Allocate of the
  dialect, usually): the first dialect that returns True has served it;
* ``claim`` before parsing a datagram from a client whose allocation the
  dialect made (``Allocation.dialect``), so only those clients pay for the
  dialect's checks: RFC ChannelData never reaches a dialect;
* ``data_indication`` to frame a peer's datagram for such a client.

A dialect serves its clients with the rules of :class:`DialectHost` (the
engine), the same code the RFC requests run, so quotas, lifetimes, the peer
policy, bandwidth caps, expiry and counters are one set.

A :class:`BindingResponder` (RFC 5780 behaviour discovery) is the one other
plug: it may answer Binding requests instead of the engine.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    from edge.stun import Message
    from edge.turn.allocation import Address, Allocation, ClientLink, RelayEndpoint
    from edge.turn.auth import Authenticator, Credentials

__all__ = ["BindingResponder", "DialectHost", "TurnDialect"]


class TurnDialect(Protocol):
    """A TURN dialect served next to RFC 8656 ([MS-TURN] is edge.msturn's)."""

    def attach(self, host: DialectHost) -> None:
        """Called once by the engine's constructor: the engine the dialect serves from."""

    def from_client(self, link: ClientLink, data: bytes) -> bool:
        """A datagram that is neither RFC STUN nor ChannelData; False if not this dialect's."""

    def claim(self, link: ClientLink, allocation: Allocation, data: bytes) -> bool:
        """A datagram from a client of this dialect's `allocation`, before the engine parses it.

        True if the dialect took it (e.g. [MS-TURN] unframed data to an active destination).
        """

    def data_indication(self, allocation: Allocation, data: bytes, peer: Address) -> bytes:
        """`data` from `peer` framed for the client of this dialect's `allocation`."""


class DialectHost(Protocol):
    """The engine as a dialect sees it: each rule implemented once, for RFC clients and the dialect's."""

    @property
    def auth(self) -> Authenticator: ...
    @property
    def stats(self) -> Counter[str]: ...
    @property
    def now(self) -> float: ...

    def admit(self, link: ClientLink, identity: str) -> Literal[True] | asyncio.Future[bool] | None:
        """Quota and capacity for a new allocation: True, a future (the pool decides) or None (waiting)."""

    def wait_for_quota(self, link: ClientLink, transaction_id: bytes, identity: str,
                       decision: asyncio.Future[bool], then: Callable[[bool], None]) -> None:
        """Park an admitted Allocate until the pool answers; `then(granted)` if the link is still there."""

    def bind_relay(self, identity: str, family: int) -> RelayEndpoint:
        """A relay for an admitted Allocate (the quota goes back if this raises Refusal)."""

    def install_allocation(self, link: ClientLink, creds: Credentials, relays: dict[int, RelayEndpoint],
                           lifetime: int, created_by: bytes, reservation: bytes | None = None,
                           dialect: TurnDialect | None = None) -> Allocation:
        """Register a new allocation over bound relays."""

    def advertised(self, relay: RelayEndpoint) -> Address:
        """The relayed address to tell the client (1:1 NAT aware)."""

    def delete_allocation(self, allocation: Allocation, why: str) -> None: ...

    def lifetime(self, asked: int | None, zero_deletes: bool = False) -> int:
        """The granted lifetime for a requested one (None: the default; 0 stays 0 if `zero_deletes`)."""

    def check_peer(self, allocation: Allocation, host: str, port: int) -> None:
        """Refusal (443, 403) unless `allocation`'s relays may talk to (host, port)."""

    def permit(self, allocation: Allocation, host: str) -> None:
        """Install or refresh the permission for `host`."""

    def relay_to_peer(self, allocation: Allocation, payload: bytes, peer: Address) -> bool:
        """Send `payload` from the allocation's relay (permission, port policy and bandwidth checked)."""


class BindingResponder(Protocol):
    """Answers Binding requests another way than the engine's plain XOR-MAPPED-ADDRESS (RFC 5780)."""

    def answer(self, link: ClientLink, request: Message) -> bool:
        """True if it answered `request` (the engine then does nothing more)."""
        ...
