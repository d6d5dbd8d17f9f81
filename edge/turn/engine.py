"""The TURN allocation engine (RFC 8656, RFC 6156 address families): requests and relaying.

It owns allocations, permissions, channels and quotas. It reaches clients
through ClientLink objects and peers through RelayEndpoint objects that the
I/O layer provides, and reads time from an injected clock, so every rule is
testable with fakes. The per-packet paths (ChannelData both ways, Send and
Data indications) do dictionary lookups and one send, nothing more.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from twisted.logger import Logger

from edge import stun
from edge.stun import Attr
from edge.turn.allocation import Address, Allocation, ClientLink, RelayEndpoint
from edge.turn.auth import Authenticator, Credentials, Rejection
from edge.turn.policy import Limits, PeerPolicy
from edge.turn.ports import PortPool

if TYPE_CHECKING:
    from edge.msturn.server import MsTurnServer

log = Logger(namespace="umedge.turn")
SOFTWARE = stun.encode_software("umedge 0.1")
_CHANNEL_HEADER = struct.Struct("!HH")
_FAMILY_OF_CODE = {stun.FAMILY_IPV4: 4, stun.FAMILY_IPV6: 6}
_TRAFFIC = ("packets_to_peer", "bytes_to_peer", "packets_to_client", "bytes_to_client")
_AUTHENTICATED = (stun.ALLOCATE, stun.REFRESH, stun.CREATE_PERMISSION, stun.CHANNEL_BIND)

RelayBinder = Callable[[int, int, str], "RelayEndpoint | None"]  # (family, port, ip) -> bound relay


@dataclass
class RelayAddresses:
    """Where relays bind per family, and what address to advertise (1:1 NAT)."""

    bind: dict[int, str]
    advertise: dict[int, str] = field(default_factory=dict)

    def advertised(self, family: int, port: int) -> Address:
        return self.advertise.get(family) or self.bind[family], port


class QuotaGate(Protocol):
    """Pool-wide per-identity quota: True/False now, or a future that says later."""

    def acquire(self, identity: str) -> bool | asyncio.Future[bool]: ...
    def release(self, identity: str) -> None: ...


class _Refusal(Exception):
    """A request fails with `code`; raised deep, answered once."""

    def __init__(self, code: int, reason: str | None = None, extra: Sequence[tuple[int, bytes]] = ()) -> None:
        super().__init__(code)
        self.code, self.reason, self.extra = code, reason, list(extra)


class TurnEngine:
    def __init__(self, authenticator: Authenticator, limits: Limits, policy: PeerPolicy,
                 relay_addresses: RelayAddresses, ports: PortPool, bind_relay: RelayBinder,
                 clock: Callable[[], float], alternates: Sequence[Address] | Callable[[], Sequence[Address]] = (),
                 quota: QuotaGate | None = None, ms_turn: bool = True) -> None:
        self.auth = authenticator
        self.limits = limits
        self.policy = policy
        self.relay_addresses = relay_addresses
        self.ports = ports
        self._bind_relay = bind_relay
        self._clock = clock
        self._alternates = alternates if callable(alternates) else (lambda: list(alternates))
        self.quota = quota  # pool-wide quotas; None: this node's count is the whole story
        self._pending: dict[ClientLink, bytes] = {}  # Allocates waiting for the pool's quota answer
        self.allocations: dict[object, Allocation] = {}
        # RESERVATION-TOKEN -> (the bound odd relay it holds, expiry): RFC 8656 §7.2
        self._reserved: dict[bytes, tuple[RelayEndpoint, float]] = {}
        self.per_identity: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self._finished_traffic: Counter[str] = Counter({name: 0 for name in _TRAFFIC})
        self.now = clock()
        self.accepting = True  # False while draining: no new allocations
        # Lync's TURN dialect ([MS-TURN]) on the same ports, through the hooks below
        self.ms_turn: MsTurnServer | None = None
        if ms_turn:
            from edge.msturn.server import MsTurnServer

            self.ms_turn = MsTurnServer(self)

    # --- entry points from the I/O layer -------------------------------------------

    def from_client(self, link: ClientLink, data: bytes) -> None:
        """One datagram (UDP) or one frame (TCP/TLS) from a client."""
        ms_turn = self.ms_turn
        if ms_turn is not None and ms_turn.active and ms_turn.raw_to_destination(link, data):
            return  # [MS-TURN]: after Set Active Destination, data goes to the peer unframed
        if data and 0x40 <= data[0] < 0x80:  # ChannelData, RFC 8656 and RFC 5766 ranges
            self._channel_data_from_client(link, data)
            return
        try:
            message = stun.decode(data)
        except stun.StunDecodeError:
            if self.ms_turn is None or not self.ms_turn.from_client(link, data):
                self.stats["malformed"] += 1
            return
        if message.msg_class == stun.REQUEST:
            self._request(link, message)
        elif message.msg_class == stun.INDICATION and message.method == stun.SEND:
            self._send_indication(link, message)

    def client_closed(self, link: ClientLink) -> None:
        """A TCP/TLS client went away: its allocation goes with it (RFC 8656 §3.1)."""
        allocation = link.allocation
        if allocation is not None:
            self._delete(allocation, "connection closed")

    def tick(self) -> None:
        """Called about once a second: expire what ran out, refill bandwidth budgets."""
        now = self.now = self._clock()
        budget = self.limits.bandwidth_bytes_per_second
        for allocation in list(self.allocations.values()):
            if allocation.expires < now:
                self._delete(allocation, "expired")
                self.stats["allocations_expired"] += 1
                continue
            allocation.expire_entries(now)
            allocation.budget = budget
        for token in [t for t, (_, until) in self._reserved.items() if until < now]:
            self._close_relay(self._reserved.pop(token)[0])

    def close_all(self) -> None:
        for allocation in list(self.allocations.values()):
            self._delete(allocation, "server stopping")
        for relay, _ in self._reserved.values():
            self._close_relay(relay)
        self._reserved.clear()

    # --- the data plane -----------------------------------------------------------

    def _spend(self, allocation: Allocation, size: int) -> bool:
        if not self.limits.bandwidth_bytes_per_second:
            return True
        allocation.budget -= size
        if allocation.budget < 0:
            self.stats["dropped_bandwidth"] += 1
            return False
        return True

    def _channel_data_from_client(self, link: ClientLink, data: bytes) -> None:
        allocation = link.allocation
        binding = allocation.channels.get((data[0] << 8) | data[1]) if allocation else None
        if binding is None or len(data) < 4:
            self.stats["dropped_no_channel"] += 1
            return
        peer, expiry, relay = binding
        length = (data[2] << 8) | data[3]
        now = self.now
        permission = allocation.permissions.get(peer[0])  # type: ignore[union-attr]
        if expiry < now or length > len(data) - 4 or permission is None or permission < now:
            self.stats["dropped_no_channel"] += 1
            return
        if self.limits.bandwidth_bytes_per_second and not self._spend(allocation, length):  # type: ignore[arg-type]
            return
        if relay.sendto(data[4:4 + length], peer):
            allocation.packets_to_peer += 1  # type: ignore[union-attr]
            allocation.bytes_to_peer += length  # type: ignore[union-attr]

    def _send_indication(self, link: ClientLink, message: stun.Message) -> None:
        allocation = link.allocation
        peer_value, payload = message.get(Attr.XOR_PEER_ADDRESS), message.get(Attr.DATA)
        if allocation is None or peer_value is None or payload is None:
            self.stats["dropped_send"] += 1
            return
        try:
            peer = stun.decode_xor_address(peer_value, message.transaction_id)
        except stun.StunDecodeError:
            return
        if not self.relay_to_peer(allocation, payload, (peer[0], peer[1])):
            self.stats["dropped_send"] += 1

    def from_peer(self, allocation: Allocation, data: bytes, peer: Address,
                  data_indication: Callable[[bytes, Address], bytes] | None = None) -> None:
        """A datagram arrived on one of `allocation`'s relays from `peer`.

        `data_indication` frames it for a client of another dialect ([MS-TURN]).
        """
        permission = allocation.permissions.get(peer[0])
        if permission is None or permission < self.now:
            self.stats["dropped_from_peer"] += 1
            return
        size = len(data)
        if self.limits.bandwidth_bytes_per_second and not self._spend(allocation, size):
            return
        number = allocation.peer_channels.get(peer)
        client = allocation.client
        if number is not None:
            frame = _CHANNEL_HEADER.pack(number, size) + data
            if size & 3 and client.stream:
                frame += b"\x00" * (4 - (size & 3))
        elif data_indication is not None:
            frame = data_indication(data, peer)
        else:
            tid = secrets.token_bytes(12)
            frame = stun.Message(stun.DATA, stun.INDICATION, tid, [
                (Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(peer[0], peer[1], tid)),
                (Attr.DATA, data),
            ]).encode()
        client.send(frame)
        allocation.packets_to_client += 1
        allocation.bytes_to_client += size

    def traffic(self) -> dict[str, int]:
        """Relayed packets and bytes by direction, over live and finished allocations."""
        totals = dict(self._finished_traffic)
        for allocation in self.allocations.values():
            for name in _TRAFFIC:
                totals[name] += getattr(allocation, name)
        return totals

    # --- requests -----------------------------------------------------------------

    def _respond(self, link: ClientLink, response: stun.Message, key: bytes | None = None,
                 sha256: bool = False) -> bytes:
        response.attributes.append((Attr.SOFTWARE, SOFTWARE))
        wire = response.encode(key, sha256=sha256, fingerprint=True)
        link.send(wire)
        return wire

    def _request(self, link: ClientLink, request: stun.Message) -> None:
        unknown = request.unknown_comprehension_required()
        if unknown:
            self._respond(link, stun.make_unknown_attributes_error(request, unknown))
            return
        if request.method == stun.BINDING:
            mapped = stun.encode_xor_address(link.address[0], link.address[1], request.transaction_id)
            self._respond(link, stun.make_success(request, [(Attr.XOR_MAPPED_ADDRESS, mapped)]))
            return
        if request.method not in _AUTHENTICATED:
            self._respond(link, stun.make_error(request, 400, "Bad Request: unsupported method"))
            return
        existing = link.allocation
        outcome = self.auth.check(request, link.address, existing.username if existing else None)
        if isinstance(outcome, Rejection):
            self.stats[f"auth_failed_{outcome.reason}"] += 1
            self._respond(link, outcome.response)
            return
        if existing is not None and existing.username != outcome.username and request.method != stun.ALLOCATE:
            self._respond(link, stun.make_error(request, 441), outcome.key, outcome.sha256)
            return
        handler = {stun.ALLOCATE: self._allocate, stun.REFRESH: self._refresh,
                   stun.CREATE_PERMISSION: self._create_permission,
                   stun.CHANNEL_BIND: self._channel_bind}[request.method]
        self._finish(link, request, outcome, lambda: handler(link, request, outcome, existing))

    def _finish(self, link: ClientLink, request: stun.Message, creds: Credentials,
                work: Callable[[], list[tuple[int, bytes]] | None]) -> None:
        """Run a request's work and answer it: success, or the error it raised."""
        try:
            attributes = work()
        except _Refusal as refusal:
            self.stats[f"refused_{refusal.code}"] += 1
            self._respond(link, stun.make_error(request, refusal.code, refusal.reason, refusal.extra),
                          creds.key, creds.sha256)
            return
        except stun.StunDecodeError as error:
            self._respond(link, stun.make_error(request, 400, f"Bad Request: {error}"),
                          creds.key, creds.sha256)
            return
        if attributes is None:
            return  # answered already, or to be answered when the pool decides
        wire = self._respond(link, stun.make_success(request, attributes), creds.key, creds.sha256)
        allocation = link.allocation
        if request.method == stun.ALLOCATE and allocation is not None and allocation.created_by == request.transaction_id:
            allocation.created_response = wire

    # Allocate ----------------------------------------------------------------------

    def _families(self, request: stun.Message) -> tuple[int, int | None]:
        """(primary family, additional family or None) as REQUESTED/ADDITIONAL-ADDRESS-FAMILY ask."""
        requested = request.get(Attr.REQUESTED_ADDRESS_FAMILY)
        additional = request.get(Attr.ADDITIONAL_ADDRESS_FAMILY)
        if requested is not None and additional is not None:
            raise _Refusal(400, "Bad Request: both REQUESTED- and ADDITIONAL-ADDRESS-FAMILY")
        if additional is not None:
            if stun.decode_address_family(additional) != stun.FAMILY_IPV6:
                raise _Refusal(400, "Bad Request: ADDITIONAL-ADDRESS-FAMILY must be IPv6")
            return 4, 6
        if requested is None:
            return 4, None
        family = _FAMILY_OF_CODE.get(stun.decode_address_family(requested))
        if family is None:
            raise _Refusal(440)
        return family, None

    def _allocate(self, link: ClientLink, request: stun.Message, creds: Credentials,
                  existing: Allocation | None) -> list[tuple[int, bytes]] | None:
        if existing is not None:
            if existing.created_by == request.transaction_id and existing.created_response:
                link.send(existing.created_response)  # a retransmission: same answer
                return None
            raise _Refusal(437)
        if not self.accepting:
            raise _Refusal(*self._capacity_refusal("draining"))
        transport = request.get(Attr.REQUESTED_TRANSPORT)
        if transport is None:
            raise _Refusal(400, "Bad Request: REQUESTED-TRANSPORT missing")
        if stun.decode_requested_transport(transport) != stun.TRANSPORT_UDP:
            raise _Refusal(442)
        even = request.get(Attr.EVEN_PORT)
        token = request.get(Attr.RESERVATION_TOKEN)
        if token is not None and (even is not None or request.get(Attr.REQUESTED_ADDRESS_FAMILY) is not None
                                  or request.get(Attr.ADDITIONAL_ADDRESS_FAMILY) is not None):
            raise _Refusal(400, "Bad Request: RESERVATION-TOKEN with EVEN-PORT or an address family")
        family, additional = self._families(request)
        if family not in self.relay_addresses.bind:
            raise _Refusal(440)
        decision = self.admit(link, creds.identity)
        if decision is None:
            return None  # a retransmission while the pool quota is being checked
        if decision is True:
            return self._commit_allocate(link, request, creds, family, additional, even, token)
        self._pending[link] = request.transaction_id
        decision.add_done_callback(lambda done: self._resume_allocate(
            link, request, creds, done.result(), lambda: self._commit_allocate(
                link, request, creds, family, additional, even, token)))
        return None

    def _resume_allocate(self, link: ClientLink, request: stun.Message, creds: Credentials, granted: bool,
                         commit: Callable[[], list[tuple[int, bytes]]]) -> None:
        """The pool answered the quota question for a pending Allocate."""
        if not self._quota_settled(link, creds.identity, granted):
            return

        def work() -> list[tuple[int, bytes]]:
            if not granted:
                raise _Refusal(486)
            return commit()

        self._finish(link, request, creds, work)

    def _commit_allocate(self, link: ClientLink, request: stun.Message, creds: Credentials, family: int,
                         additional: int | None, even: bytes | None,
                         token: bytes | None) -> list[tuple[int, bytes]]:
        """Bind the relays and create the allocation (quota already granted)."""
        try:
            return self._create_allocation(link, request, creds, family, additional, even, token)
        except _Refusal:
            if self.quota is not None:
                self.quota.release(creds.identity)
            raise

    def _create_allocation(self, link: ClientLink, request: stun.Message, creds: Credentials, family: int,
                           additional: int | None, even: bytes | None,
                           token: bytes | None) -> list[tuple[int, bytes]]:
        relays: dict[int, RelayEndpoint] = {}
        reservation: bytes | None = None
        try:
            if token is not None:
                claimed = self._reserved.pop(stun.decode_reservation_token(token), None)
                if claimed is None or claimed[1] < self.now:
                    if claimed is not None:
                        self._close_relay(claimed[0])
                    raise _Refusal(508, "Insufficient Capacity: unknown or expired RESERVATION-TOKEN")
                family = claimed[0].family
                relays[family] = claimed[0]
            elif even is not None and stun.decode_even_port(even):
                relays[family], held = self._bind_even_pair(family)
                reservation = secrets.token_bytes(8)
                self._reserved[reservation] = (held, self.now + self.limits.reservation_lifetime)
            else:
                relays[family] = self._bind_any(family, even is not None)
            address_error: list[tuple[int, bytes]] = []
            if additional is not None:
                if additional in self.relay_addresses.bind:
                    relays[additional] = self._bind_any(additional, False)
                else:
                    address_error = [(Attr.ADDRESS_ERROR_CODE,
                                      stun.encode_address_error_code(stun.FAMILY_IPV6, 440))]
            if request.get(Attr.DONT_FRAGMENT) is not None:
                if not all(relay.set_dont_fragment() for relay in relays.values()):
                    raise _Refusal(420, None, [(Attr.UNKNOWN_ATTRIBUTES,
                                                stun.encode_unknown_attributes([Attr.DONT_FRAGMENT]))])
        except _Refusal:
            for relay in relays.values():
                self._close_relay(relay)
            if reservation is not None:
                self._close_relay(self._reserved.pop(reservation)[0])
            raise
        lifetime = self._lifetime(request)
        self.install_allocation(link, creds, relays, lifetime, request.transaction_id, reservation)
        attributes = [(Attr.XOR_RELAYED_ADDRESS, stun.encode_xor_address(
            *self.relay_addresses.advertised(f, relay.address[1]), request.transaction_id))
            for f, relay in relays.items()]
        attributes += [(Attr.LIFETIME, stun.encode_lifetime(lifetime)),
                       (Attr.XOR_MAPPED_ADDRESS, stun.encode_xor_address(
                           link.address[0], link.address[1], request.transaction_id))]
        if reservation is not None:
            attributes.append((Attr.RESERVATION_TOKEN, stun.encode_reservation_token(reservation)))
        return attributes + address_error

    # --- hooks for other dialects (edge.msturn.server): one set of rules ------------

    Refusal = _Refusal

    def admit(self, link: ClientLink, identity: str) -> bool | asyncio.Future[bool] | None:
        """An Allocate's quota checks: True, a future (the pool decides), None (already waiting).

        Raises Refusal (486, 508 or 300) when the node or the identity is full.
        """
        if self.per_identity[identity] >= self.limits.max_allocations_per_user:
            raise _Refusal(486)
        if len(self.allocations) >= self.limits.max_allocations:
            raise _Refusal(*self._capacity_refusal("allocation limit"))
        if link in self._pending:
            return None
        if len(self._pending) >= self.limits.max_pending:
            raise _Refusal(508, "Insufficient Capacity: too many allocations waiting for the pool")
        decision = self.quota.acquire(identity) if self.quota is not None else True
        if decision is False:
            raise _Refusal(486)
        return decision

    def wait_for_quota(self, link: ClientLink, transaction_id: bytes, identity: str,
                       decision: asyncio.Future[bool], then: Callable[[bool], None]) -> None:
        """Park an admitted Allocate until the pool answers; `then(granted)` if the link is still there."""
        self._pending[link] = transaction_id
        decision.add_done_callback(
            lambda done: self._quota_settled(link, identity, done.result()) and then(done.result()))

    def _quota_settled(self, link: ClientLink, identity: str, granted: bool) -> bool:
        self._pending.pop(link, None)
        if not getattr(link, "connected", True):
            if granted and self.quota is not None:
                self.quota.release(identity)
            return False
        return True

    def release_quota(self, identity: str) -> None:
        """Give back a pool quota granted by admit() that no allocation took."""
        if self.quota is not None:
            self.quota.release(identity)

    def bind_relay(self, family: int) -> RelayEndpoint:
        """A relay on any free port of `family`; Refusal (508/300) if none."""
        if family not in self.relay_addresses.bind:
            raise _Refusal(440)
        return self._bind_any(family, False)

    def install_allocation(self, link: ClientLink, creds: Credentials, relays: dict[int, RelayEndpoint],
                           lifetime: int, created_by: bytes, reservation: bytes | None = None,
                           data_indication: Callable[[Allocation], Callable[[bytes, Address], bytes]] | None
                           = None) -> Allocation:
        """Register a new allocation over bound relays (quota already granted)."""
        allocation = Allocation(link, creds.username, creds.identity, creds.key, creds.sha256, relays,
                                self.now + lifetime, created_by,
                                budget=self.limits.bandwidth_bytes_per_second, reservation=reservation)
        framer = data_indication(allocation) if data_indication is not None else None
        for relay in relays.values():
            relay.receiver = self._receiver(allocation, framer)  # type: ignore[attr-defined]
        self.allocations[link] = allocation
        link.allocation = allocation
        self.per_identity[creds.identity] += 1
        self.stats["allocations_created"] += 1
        self.stats[f"allocations_created_{link.kind}"] += 1
        log.info("allocated {relays} for {identity} via {transport} (lifetime {lifetime}s, pid {pid})",
                 relays=",".join(f"{r.address[0]}:{r.address[1]}" for r in relays.values()),
                 identity=creds.identity, transport=link.kind, lifetime=lifetime, pid=os.getpid())
        return allocation

    def delete_allocation(self, allocation: Allocation, why: str) -> None:
        self._delete(allocation, why)

    def clamp_lifetime(self, asked: int | None) -> int:
        """A requested lifetime within the limits (None: the default), as Allocate/Refresh do."""
        if asked is None:
            return self.limits.default_lifetime
        return max(self.limits.default_lifetime, min(asked, self.limits.max_lifetime))

    def check_peer(self, host: str, port: int) -> bool:
        """May a relay of this node send to (host, port)? (the peer policy of CreatePermission)"""
        if not self.policy.permits(host) or (port and not self.policy.permits_port(host, port)):
            self.stats["peer_denied"] += 1
            return False
        return True

    def relay_to_peer(self, allocation: Allocation, payload: bytes, peer: Address) -> bool:
        """Send `payload` from the allocation's relay (permission, port policy and bandwidth checked)."""
        relay = allocation.relays.get(6 if ":" in peer[0] else 4)
        if relay is None or not allocation.permitted(peer[0], self.now) or not self.policy.permits_port(*peer) \
                or not self._spend(allocation, len(payload)):
            return False
        if relay.sendto(payload, peer):
            allocation.packets_to_peer += 1
            allocation.bytes_to_peer += len(payload)
        return True

    def _capacity_refusal(self, why: str) -> tuple[int, str | None, list[tuple[int, bytes]]]:
        alternates = self._alternates()
        if alternates:
            host, port = alternates[0]
            return 300, None, [(Attr.ALTERNATE_SERVER, stun.encode_address(host, port))]
        return 508, f"Insufficient Capacity: {why}", []

    def _receiver(self, allocation: Allocation, data_indication: Callable[[bytes, Address], bytes] | None = None
                  ) -> Callable[[bytes, Address], None]:
        from_peer = self.from_peer
        if data_indication is not None:
            def receive_framed(data: bytes, peer: Address) -> None:
                from_peer(allocation, data, peer, data_indication)

            return receive_framed

        def receive(data: bytes, peer: Address) -> None:
            from_peer(allocation, data, peer)

        return receive

    def _bind_port(self, family: int, port: int) -> RelayEndpoint | None:
        relay = self._bind_relay(family, port, self.relay_addresses.bind[family])
        if relay is not None:
            self.ports.take(family, port)
        return relay

    def _bind_any(self, family: int, even: bool) -> RelayEndpoint:
        for port in self.ports.candidates(family, even):
            relay = self._bind_port(family, port)
            if relay is not None:
                return relay
        raise _Refusal(*self._capacity_refusal("no relay port free"))

    def _bind_even_pair(self, family: int) -> tuple[RelayEndpoint, RelayEndpoint]:
        """An even relay port plus the next one, held bound for the RESERVATION-TOKEN (RTP/RTCP)."""
        for port in self.ports.candidates(family, even=True, need_next=True):
            relay = self._bind_port(family, port)
            if relay is None:
                continue
            held = self._bind_port(family, port + 1)
            if held is not None:
                return relay, held
            self._close_relay(relay)
        raise _Refusal(*self._capacity_refusal("no even relay port pair free"))

    def _close_relay(self, relay: RelayEndpoint) -> None:
        self.ports.release(relay.family, relay.address[1])
        relay.close()

    def _lifetime(self, request: stun.Message, zero_deletes: bool = False) -> int:
        value = request.get(Attr.LIFETIME)
        if value is None:
            return self.limits.default_lifetime
        asked = stun.decode_lifetime(value)
        if asked == 0 and zero_deletes:
            return 0
        return max(self.limits.default_lifetime, min(asked, self.limits.max_lifetime))

    def _delete(self, allocation: Allocation, why: str) -> None:
        if self.allocations.get(allocation.client) is not allocation:
            return
        del self.allocations[allocation.client]
        allocation.client.allocation = None
        for name in _TRAFFIC:
            self._finished_traffic[name] += getattr(allocation, name)
        self.per_identity[allocation.identity] -= 1
        if self.per_identity[allocation.identity] <= 0:
            del self.per_identity[allocation.identity]
        if self.quota is not None:
            self.quota.release(allocation.identity)
        for relay in allocation.relays.values():
            self._close_relay(relay)
        log.debug("allocation for {identity} deleted: {why}", identity=allocation.identity, why=why)

    # Refresh, CreatePermission, ChannelBind -----------------------------------------

    def _require(self, existing: Allocation | None) -> Allocation:
        if existing is None:
            raise _Refusal(437)
        return existing

    def _refresh(self, link: ClientLink, request: stun.Message, creds: Credentials,
                 existing: Allocation | None) -> list[tuple[int, bytes]]:
        allocation = self._require(existing)
        requested = request.get(Attr.REQUESTED_ADDRESS_FAMILY)
        if requested is not None and _FAMILY_OF_CODE.get(stun.decode_address_family(requested)) not in allocation.relays:
            raise _Refusal(443)
        lifetime = self._lifetime(request, zero_deletes=True)
        if lifetime == 0:
            self._delete(allocation, "refreshed to 0")
        else:
            allocation.expires = self.now + lifetime
        return [(Attr.LIFETIME, stun.encode_lifetime(lifetime))]

    def _peer(self, request: stun.Message, value: bytes, allocation: Allocation) -> Address:
        host, port = stun.decode_xor_address(value, request.transaction_id)[:2]
        if (6 if ":" in host else 4) not in allocation.relays:
            raise _Refusal(443)
        if not self.policy.permits(host) or (port and not self.policy.permits_port(host, port)):
            self.stats["peer_denied"] += 1
            raise _Refusal(403, "Forbidden: peer address not allowed")
        return host, port

    def _create_permission(self, link: ClientLink, request: stun.Message, creds: Credentials,
                           existing: Allocation | None) -> list[tuple[int, bytes]]:
        allocation = self._require(existing)
        values = request.get_all(Attr.XOR_PEER_ADDRESS)
        if not values:
            raise _Refusal(400, "Bad Request: XOR-PEER-ADDRESS missing")
        hosts = [self._peer(request, value, allocation)[0] for value in values]  # all or none
        for host in hosts:
            allocation.permissions[host] = self.now + self.limits.permission_lifetime
        return []

    def _channel_bind(self, link: ClientLink, request: stun.Message, creds: Credentials,
                      existing: Allocation | None) -> list[tuple[int, bytes]]:
        allocation = self._require(existing)
        number_value, peer_value = request.get(Attr.CHANNEL_NUMBER), request.get(Attr.XOR_PEER_ADDRESS)
        if number_value is None or peer_value is None:
            raise _Refusal(400, "Bad Request: CHANNEL-NUMBER and XOR-PEER-ADDRESS required")
        number = stun.decode_channel_number(number_value)
        if not stun.CHANNEL_MIN <= number <= stun.CHANNEL_MAX_RFC5766:
            raise _Refusal(400, "Bad Request: channel number outside 0x4000-0x7FFF")
        peer = self._peer(request, peer_value, allocation)
        bound = allocation.channels.get(number)
        if bound is not None and bound[0] != peer:
            raise _Refusal(400, "Bad Request: channel bound to another peer")
        if allocation.peer_channels.get(peer, number) != number:
            raise _Refusal(400, "Bad Request: peer bound to another channel")
        relay = allocation.relays[6 if ":" in peer[0] else 4]
        allocation.channels[number] = (peer, self.now + self.limits.channel_lifetime, relay)
        allocation.peer_channels[peer] = number
        allocation.permissions[peer[0]] = self.now + self.limits.permission_lifetime
        return []
