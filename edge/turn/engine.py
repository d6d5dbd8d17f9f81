"""The TURN allocation engine (RFC 8656, RFC 6156 address families): requests and relaying.

It owns allocations, permissions, channels and quotas. It reaches clients
through ClientLink objects and peers through RelayEndpoint objects that the
I/O layer provides, and reads time from an injected clock, so every rule is
testable with fakes. The per-packet paths (ChannelData both ways, Send and
Data indications) do dictionary lookups and one send, nothing more.

Other TURN dialects ([MS-TURN]) are injected (edge.turn.dialect); an
allocation records the dialect that made it, and only that allocation's
datagrams are shown to the dialect, so RFC ChannelData never pays for one.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar

from twisted.logger import Logger

from edge import stun
from edge.stun import Attr, StunDecodeError, split_channel_data
from edge.turn.allocation import Address, Allocation, ClientLink, RelayEndpoint
from edge.turn.auth import Authenticator, Credentials, Rejection
from edge.turn.dialect import BindingResponder, TurnDialect
from edge.turn.offload import RelayOffload
from edge.turn.policy import Limits, PeerPolicy
from edge.turn.ports import PortPool
from edge.turn.refusal import ErrorCode, Refusal

__all__ = ["QuotaGate", "Refusal", "RelayAddresses", "RelayBinder", "TurnEngine"]

log = Logger(namespace="umedge.turn")
SOFTWARE = stun.encode_software("umedge 0.1")
_CHANNEL_HEADER = struct.Struct("!HH")
_FAMILY_OF_CODE = {stun.FAMILY_IPV4: 4, stun.FAMILY_IPV6: 6}
_TRAFFIC = ("packets_to_peer", "bytes_to_peer", "packets_to_client", "bytes_to_client")
_OFFLOADED = tuple(f"offloaded_{name}" for name in _TRAFFIC)
_AUTHENTICATED = (stun.ALLOCATE, stun.REFRESH, stun.CREATE_PERMISSION, stun.CHANNEL_BIND)
_T = TypeVar("_T")

RelayBinder = Callable[[int, int, str], "RelayEndpoint | None"]  # (family, port, ip) -> bound relay
Attributes = list[tuple[int, bytes]]


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


class TurnEngine:
    def __init__(self, authenticator: Authenticator, limits: Limits, policy: PeerPolicy,
                 relay_addresses: RelayAddresses, ports: PortPool, bind_relay: RelayBinder,
                 clock: Callable[[], float], alternates: Sequence[Address] | Callable[[], Sequence[Address]] = (),
                 quota: QuotaGate | None = None, dialects: Sequence[TurnDialect] = (),
                 binding: BindingResponder | None = None, offload: RelayOffload | None = None) -> None:
        self.auth = authenticator
        self.limits = limits
        self.policy = policy
        self.relay_addresses = relay_addresses
        self.ports = ports
        self._binder = bind_relay
        self._clock = clock
        self._alternates = alternates if callable(alternates) else (lambda: list(alternates))
        self.quota = quota  # pool-wide quotas; None: this node's count is the whole story
        self._pending: dict[ClientLink, bytes] = {}  # Allocates waiting for the pool's quota answer
        self.allocations: dict[object, Allocation] = {}
        # RESERVATION-TOKEN -> (the bound odd relay it holds, expiry): RFC 8656 §7.2
        self._reserved: dict[bytes, tuple[RelayEndpoint, float]] = {}
        self.per_identity: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self._finished_traffic: Counter[str] = Counter({name: 0 for name in _TRAFFIC + _OFFLOADED})
        self.now = clock()
        self.accepting = True  # False while draining: no new allocations
        self.dialects = tuple(dialects)  # e.g. Lync's [MS-TURN] on the same ports
        self.binding = binding  # e.g. RFC 5780 behaviour discovery (edge.turn.discovery)
        self.offload = offload  # a fast path for bound channels (edge.offload: kernel or native); told every change
        for dialect in self.dialects:
            dialect.attach(self)

    # --- entry points from the I/O layer -------------------------------------------

    def from_client(self, link: ClientLink, data: bytes) -> None:
        """One datagram (UDP) or one frame (TCP/TLS) from a client."""
        if data and 0x40 <= data[0] < 0x80:  # ChannelData (RFC 8656 and RFC 5766 ranges): the hot path, inline
            allocation = link.allocation
            if allocation is None:
                self.stats["dropped_no_channel"] += 1
                return
            try:
                number, payload = split_channel_data(data)
                peer, expiry, relay = allocation.channels[number]
            except (StunDecodeError, KeyError):  # short or unbound
                self._not_channel_data(link, allocation, data)
                return
            now = self.now
            permission = allocation.permissions.get(peer[0])
            if expiry < now or permission is None or permission < now:
                self.stats["dropped_no_channel"] += 1
            elif not self.limits.bandwidth_bytes_per_second or self._spend(allocation, len(payload)):
                if relay.sendto(payload, peer):
                    allocation.packets_to_peer += 1
                    allocation.bytes_to_peer += len(payload)
            return
        allocation = link.allocation
        if allocation is not None and allocation.dialect is not None \
                and allocation.dialect.claim(link, allocation, data):
            return
        try:
            message = stun.decode(data)
        except StunDecodeError:
            classic = stun.classic_binding(data, link.address)
            if classic is not None:  # RFC 3489 client (RFC 8489 §12)
                self.stats["classic_bindings"] += 1
                if classic.response is not None:
                    link.send(classic.response)
                return
            for dialect in self.dialects:
                if dialect.from_client(link, data):
                    return
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
            self.delete_allocation(allocation, "connection closed")

    def tick(self) -> None:
        """Called about once a second: expire what ran out, refill bandwidth budgets."""
        now = self.now = self._clock()
        budget = self.limits.bandwidth_bytes_per_second
        offload = self.offload
        for allocation in list(self.allocations.values()):
            if allocation.expires < now:
                self.delete_allocation(allocation, "expired")
                self.stats["allocations_expired"] += 1
                continue
            changed = allocation.expire_entries(now)
            if offload is not None:
                used = offload.collect(allocation)
                if budget and used > budget and not allocation.offload_refused:
                    # Over the cap in the kernel: user space relays it from now on and enforces the cap.
                    allocation.offload_refused = True
                    offload.remove(allocation)
                    self.stats["offload_bandwidth_refusals"] += 1
                elif changed:
                    self._offload(allocation)
            allocation.budget = budget
        if offload is not None:
            for name, total in offload.counters().items():  # the kernel's running totals (not increments)
                self.stats[name] = total
        for token in [t for t, (_, until) in self._reserved.items() if until < now]:
            self._close_relay(self._reserved.pop(token)[0])

    def close_all(self) -> None:
        for allocation in list(self.allocations.values()):
            self.delete_allocation(allocation, "server stopping")
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

    def _not_channel_data(self, link: ClientLink, allocation: Allocation, data: bytes) -> None:
        """No channel for it: a dialect's client (whose allocation binds none) may mean something else."""
        dialect = allocation.dialect
        if dialect is None or not dialect.claim(link, allocation, data):
            self.stats["dropped_no_channel"] += 1

    def _send_indication(self, link: ClientLink, message: stun.Message) -> None:
        allocation = link.allocation
        peer_value, payload = message.get(Attr.XOR_PEER_ADDRESS), message.get(Attr.DATA)
        if allocation is None or peer_value is None or payload is None:
            self.stats["dropped_send"] += 1
            return
        try:
            peer = stun.decode_xor_address(peer_value, message.transaction_id)
        except StunDecodeError:
            return
        if not self.relay_to_peer(allocation, payload, (peer[0], peer[1])):
            self.stats["dropped_send"] += 1

    def from_peer(self, allocation: Allocation, data: bytes, peer: Address) -> None:
        """A datagram arrived on one of `allocation`'s relays from `peer`."""
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
        elif allocation.dialect is not None:
            frame = allocation.dialect.data_indication(allocation, data, peer)
        else:
            tid = secrets.token_bytes(12)
            frame = stun.Message(stun.DATA, stun.INDICATION, tid, [
                (Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(peer[0], peer[1], tid)),
                (Attr.DATA, data),
            ]).encode()
        client.send(frame)
        allocation.packets_to_client += 1
        allocation.bytes_to_client += size

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

    def traffic(self) -> dict[str, int]:
        """Relayed packets and bytes by direction, over live and finished allocations: the totals (user
        space and kernel fast path), and `offloaded_*` the kernel's part of them."""
        totals = dict(self._finished_traffic)
        for allocation in self.allocations.values():
            for name in _TRAFFIC + _OFFLOADED:
                totals[name] += getattr(allocation, name)
        for name in _TRAFFIC:
            totals[name] += totals[f"offloaded_{name}"]
        return totals

    def _offload(self, allocation: Allocation) -> None:
        """Tell the fast path (if any) what the allocation may relay now."""
        if self.offload is not None and not allocation.offload_refused:
            self.offload.update(allocation, self.now)

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
            if self.binding is not None and self.binding.answer(link, request):
                return
            change = request.get(Attr.CHANGE_REQUEST)
            if change is not None and len(change) != 4:
                self._respond(link, stun.make_error(request, ErrorCode.BAD_REQUEST, "Bad Request: CHANGE-REQUEST"))
                return
            if change is not None and any(stun.decode_change_request(change)):
                # Behaviour discovery (RFC 5780) needs a second address; without one, say so (RFC 5780 §6.1).
                self._respond(link, stun.make_unknown_attributes_error(request, [Attr.CHANGE_REQUEST]))
                return
            mapped = stun.encode_xor_address(link.address[0], link.address[1], request.transaction_id)
            self._respond(link, stun.make_success(request, [(Attr.XOR_MAPPED_ADDRESS, mapped)]))
            return
        if request.method not in _AUTHENTICATED:
            self._respond(link, stun.make_error(request, ErrorCode.BAD_REQUEST, "Bad Request: unsupported method"))
            return
        existing = link.allocation
        outcome = self.auth.check(request, link.address, existing.username if existing else None)
        if isinstance(outcome, Rejection):
            # The first 401 and a 438 are the protocol's normal steps, not failures.
            kind = "auth_challenged" if outcome.reason in ("missing", "stale_nonce") else "auth_failed"
            self.stats[f"{kind}_{outcome.reason}"] += 1
            self._respond(link, outcome.response)
            return
        if existing is not None and existing.username != outcome.username and request.method != stun.ALLOCATE:
            self._respond(link, stun.make_error(request, ErrorCode.WRONG_CREDENTIALS), outcome.key, outcome.sha256)
            return
        handlers: dict[int, Callable[[ClientLink, stun.Message, Credentials, Allocation | None],
                                     Attributes | None]] = {
            stun.ALLOCATE: self._allocate, stun.REFRESH: self._refresh,
            stun.CREATE_PERMISSION: self._create_permission, stun.CHANNEL_BIND: self._channel_bind}
        handler = handlers[request.method]
        self._finish(link, request, outcome, lambda: handler(link, request, outcome, existing))

    def _finish(self, link: ClientLink, request: stun.Message, creds: Credentials,
                work: Callable[[], Attributes | None]) -> None:
        """Run a request's work and answer it: success, or the error it raised."""
        try:
            attributes = work()
        except Refusal as refusal:
            self.stats[f"refused_{int(refusal.code)}"] += 1
            self._respond(link, stun.make_error(request, refusal.code, refusal.reason, refusal.extra),
                          creds.key, creds.sha256)
            return
        except StunDecodeError as error:
            self._respond(link, stun.make_error(request, ErrorCode.BAD_REQUEST, f"Bad Request: {error}"),
                          creds.key, creds.sha256)
            return
        if attributes is None:
            return  # answered already, or to be answered when the pool decides
        wire = self._respond(link, stun.make_success(request, attributes), creds.key, creds.sha256)
        allocation = link.allocation
        if request.method == stun.ALLOCATE and allocation is not None \
                and allocation.created_by == request.transaction_id:
            allocation.created_response = wire

    # Allocate ----------------------------------------------------------------------

    def _families(self, request: stun.Message) -> tuple[int, int | None]:
        """(primary family, additional family or None) as REQUESTED/ADDITIONAL-ADDRESS-FAMILY ask."""
        requested = request.get(Attr.REQUESTED_ADDRESS_FAMILY)
        additional = request.get(Attr.ADDITIONAL_ADDRESS_FAMILY)
        if requested is not None and additional is not None:
            raise Refusal(ErrorCode.BAD_REQUEST, "Bad Request: both REQUESTED- and ADDITIONAL-ADDRESS-FAMILY")
        if additional is not None:
            if stun.decode_address_family(additional) != stun.FAMILY_IPV6:
                raise Refusal(ErrorCode.BAD_REQUEST, "Bad Request: ADDITIONAL-ADDRESS-FAMILY must be IPv6")
            return 4, 6
        if requested is None:
            return 4, None
        family = _FAMILY_OF_CODE.get(stun.decode_address_family(requested))
        if family is None:
            raise Refusal(ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED)
        return family, None

    def _allocate(self, link: ClientLink, request: stun.Message, creds: Credentials,
                  existing: Allocation | None) -> Attributes | None:
        if existing is not None:
            if existing.created_by == request.transaction_id and existing.created_response:
                link.send(existing.created_response)  # a retransmission: same answer
                return None
            raise Refusal(ErrorCode.ALLOCATION_MISMATCH)
        transport = request.get(Attr.REQUESTED_TRANSPORT)
        if transport is None:
            raise Refusal(ErrorCode.BAD_REQUEST, "Bad Request: REQUESTED-TRANSPORT missing")
        if stun.decode_requested_transport(transport) != stun.TRANSPORT_UDP:
            raise Refusal(ErrorCode.UNSUPPORTED_TRANSPORT_PROTOCOL)
        even = request.get(Attr.EVEN_PORT)
        token = request.get(Attr.RESERVATION_TOKEN)
        if token is not None and (even is not None or request.get(Attr.REQUESTED_ADDRESS_FAMILY) is not None
                                  or request.get(Attr.ADDITIONAL_ADDRESS_FAMILY) is not None):
            raise Refusal(ErrorCode.BAD_REQUEST,
                          "Bad Request: RESERVATION-TOKEN with EVEN-PORT or an address family")
        family, additional = self._families(request)
        if family not in self.relay_addresses.bind:
            raise Refusal(ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED)
        decision = self.admit(link, creds.identity)
        if decision is None:
            return None  # a retransmission while the pool quota is being checked

        def commit() -> Attributes:
            return self._granted(creds.identity, lambda: self._create_allocation(
                link, request, creds, family, additional, even, token))

        if decision is True:
            return commit()
        self.wait_for_quota(link, request.transaction_id, creds.identity, decision,
                            lambda granted: self._finish(link, request, creds, commit if granted else _quota_refused))
        return None

    def _create_allocation(self, link: ClientLink, request: stun.Message, creds: Credentials, family: int,
                           additional: int | None, even: bytes | None, token: bytes | None) -> Attributes:
        relays: dict[int, RelayEndpoint] = {}
        reservation: bytes | None = None
        try:
            if token is not None:
                claimed = self._reserved.pop(stun.decode_reservation_token(token), None)
                if claimed is None or claimed[1] < self.now:
                    if claimed is not None:
                        self._close_relay(claimed[0])
                    raise Refusal(ErrorCode.INSUFFICIENT_CAPACITY,
                                  "Insufficient Capacity: unknown or expired RESERVATION-TOKEN")
                family = claimed[0].family
                relays[family] = claimed[0]
            elif even is not None and stun.decode_even_port(even):
                relays[family], held = self._bind_even_pair(family)
                reservation = secrets.token_bytes(8)
                self._reserved[reservation] = (held, self.now + self.limits.reservation_lifetime)
            else:
                relays[family] = self._bind_any(family, even is not None)
            address_error: Attributes = []
            if additional is not None:
                if additional in self.relay_addresses.bind:
                    relays[additional] = self._bind_any(additional, False)
                else:
                    address_error = [(Attr.ADDRESS_ERROR_CODE, stun.encode_address_error_code(
                        stun.FAMILY_IPV6, ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED))]
            if request.get(Attr.DONT_FRAGMENT) is not None:
                if not all(relay.set_dont_fragment() for relay in relays.values()):
                    raise Refusal(ErrorCode.UNKNOWN_ATTRIBUTE, None, [
                        (Attr.UNKNOWN_ATTRIBUTES, stun.encode_unknown_attributes([Attr.DONT_FRAGMENT]))])
        except Refusal:
            for relay in relays.values():
                self._close_relay(relay)
            if reservation is not None:
                self._close_relay(self._reserved.pop(reservation)[0])
            raise
        lifetime = self.lifetime(_requested_lifetime(request))
        self.install_allocation(link, creds, relays, lifetime, request.transaction_id, reservation)
        attributes = [(Attr.XOR_RELAYED_ADDRESS, stun.encode_xor_address(
            *self.advertised(relay), request.transaction_id)) for relay in relays.values()]
        attributes += [(Attr.LIFETIME, stun.encode_lifetime(lifetime)),
                       (Attr.XOR_MAPPED_ADDRESS, stun.encode_xor_address(
                           link.address[0], link.address[1], request.transaction_id))]
        if reservation is not None:
            attributes.append((Attr.RESERVATION_TOKEN, stun.encode_reservation_token(reservation)))
        return attributes + address_error

    # --- the rules, once: RFC requests and dialects (edge.turn.dialect.DialectHost) ---

    def admit(self, link: ClientLink, identity: str) -> Literal[True] | asyncio.Future[bool] | None:
        """A new allocation's capacity and quota checks: True, a future (the pool decides), None (waiting).

        Raises Refusal (300 or 508 when draining or full, 486 over the identity's quota).
        """
        if not self.accepting:
            raise self._capacity_refusal("draining")
        if self.per_identity[identity] >= self.limits.max_allocations_per_user:
            raise Refusal(ErrorCode.ALLOCATION_QUOTA_REACHED)
        if len(self.allocations) >= self.limits.max_allocations:
            raise self._capacity_refusal("allocation limit")
        if link in self._pending:
            return None
        if len(self._pending) >= self.limits.max_pending:
            raise Refusal(ErrorCode.INSUFFICIENT_CAPACITY,
                          "Insufficient Capacity: too many allocations waiting for the pool")
        decision = self.quota.acquire(identity) if self.quota is not None else True
        if decision is False:
            raise Refusal(ErrorCode.ALLOCATION_QUOTA_REACHED)
        return decision

    def holds(self, link: ClientLink) -> bool:
        """Whether `link` has an allocation, or an Allocate waiting for the pool's quota answer."""
        return link.allocation is not None or link in self._pending

    def wait_for_quota(self, link: ClientLink, transaction_id: bytes, identity: str,
                       decision: asyncio.Future[bool], then: Callable[[bool], None]) -> None:
        """Park an admitted Allocate until the pool answers; `then(granted)` if the link is still there."""
        self._pending[link] = transaction_id

        def settled(done: asyncio.Future[bool]) -> None:
            granted = done.result()
            self._pending.pop(link, None)
            if not getattr(link, "connected", True):  # a TCP/TLS client gone, or a UDP link evicted, meanwhile
                if granted and self.quota is not None:
                    self.quota.release(identity)
                return
            then(granted)

        decision.add_done_callback(settled)

    def _granted(self, identity: str, work: Callable[[], _T]) -> _T:
        """Run an admitted Allocate's `work`; if it is refused, the pool quota it was granted goes back."""
        try:
            return work()
        except Refusal:
            if self.quota is not None:
                self.quota.release(identity)
            raise

    def bind_relay(self, identity: str, family: int) -> RelayEndpoint:
        """A relay on any free port of `family` for an admitted Allocate; Refusal (440, 508/300) if none."""
        def bind() -> RelayEndpoint:
            if family not in self.relay_addresses.bind:
                raise Refusal(ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED)
            return self._bind_any(family, False)

        return self._granted(identity, bind)

    def install_allocation(self, link: ClientLink, creds: Credentials, relays: dict[int, RelayEndpoint],
                           lifetime: int, created_by: bytes, reservation: bytes | None = None,
                           dialect: TurnDialect | None = None) -> Allocation:
        """Register a new allocation over bound relays (quota already granted); `dialect` None is RFC 8656."""
        allocation = Allocation(link, creds.username, creds.identity, creds.key, creds.sha256, relays,
                                self.now + lifetime, created_by, budget=self.limits.bandwidth_bytes_per_second,
                                reservation=reservation, dialect=dialect, created=self.now)
        receiver = self._receiver(allocation)
        for relay in relays.values():
            relay.receiver = receiver
        self.allocations[link] = allocation
        link.allocation = allocation
        self.per_identity[creds.identity] += 1
        self.stats["allocations_created"] += 1
        self.stats[f"allocations_created_{link.kind}"] += 1
        log.info("allocated {relays} for {identity} via {transport} (lifetime {lifetime}s, pid {pid})",
                 relays=",".join(f"{r.address[0]}:{r.address[1]}" for r in relays.values()),
                 identity=creds.identity, transport=link.kind, lifetime=lifetime, pid=os.getpid())
        return allocation

    def advertised(self, relay: RelayEndpoint) -> Address:
        """The relayed address the client is told (the external address behind a 1:1 NAT)."""
        return self.relay_addresses.advertised(relay.family, relay.address[1])

    def delete_allocation(self, allocation: Allocation, why: str) -> None:
        if self.allocations.get(allocation.client) is not allocation:
            return
        del self.allocations[allocation.client]
        allocation.client.allocation = None
        if self.offload is not None:
            self.offload.remove(allocation)  # its entries go first, with their last counts
        for name in _TRAFFIC + _OFFLOADED:
            self._finished_traffic[name] += getattr(allocation, name)
        self.per_identity[allocation.identity] -= 1
        if self.per_identity[allocation.identity] <= 0:
            del self.per_identity[allocation.identity]
        if self.quota is not None:
            self.quota.release(allocation.identity)
        for relay in allocation.relays.values():
            self._close_relay(relay)
        log.debug("allocation for {identity} deleted: {why}", identity=allocation.identity, why=why)

    def lifetime(self, asked: int | None, zero_deletes: bool = False) -> int:
        """The lifetime granted for `asked` seconds (None: the default); 0 stays 0 on a refresh."""
        if asked is None:
            return self.limits.default_lifetime
        if asked == 0 and zero_deletes:
            return 0
        return max(self.limits.default_lifetime, min(asked, self.limits.max_lifetime))

    def check_peer(self, allocation: Allocation, host: str, port: int) -> None:
        """Refusal unless a relay of `allocation` may talk to (host, port): 443 no relay of its family,
        403 the peer policy says no (port 0: the host alone, as for CreatePermission)."""
        if (6 if ":" in host else 4) not in allocation.relays:
            raise Refusal(ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH)
        if not self.policy.permits(host) or (port and not self.policy.permits_port(host, port)):
            self.stats["peer_denied"] += 1
            raise Refusal(ErrorCode.FORBIDDEN, "Forbidden: peer address not allowed")

    def permit(self, allocation: Allocation, host: str) -> None:
        """Install or refresh the permission for `host` (checked with check_peer first)."""
        allocation.permissions[host] = self.now + self.limits.permission_lifetime

    # --- relays ---------------------------------------------------------------------

    def _capacity_refusal(self, why: str) -> Refusal:
        alternates = self._alternates()
        if alternates:
            host, port = alternates[0]
            return Refusal(ErrorCode.TRY_ALTERNATE, None, [(Attr.ALTERNATE_SERVER, stun.encode_address(host, port))])
        return Refusal(ErrorCode.INSUFFICIENT_CAPACITY, f"Insufficient Capacity: {why}")

    def _receiver(self, allocation: Allocation) -> Callable[[bytes, Address], None]:
        from_peer = self.from_peer

        def receive(data: bytes, peer: Address) -> None:
            from_peer(allocation, data, peer)

        return receive

    def _bind_port(self, family: int, port: int) -> RelayEndpoint | None:
        relay = self._binder(family, port, self.relay_addresses.bind[family])
        if relay is not None:
            self.ports.take(family, port)
        return relay

    def _bind_any(self, family: int, even: bool) -> RelayEndpoint:
        for port in self.ports.candidates(family, even):
            relay = self._bind_port(family, port)
            if relay is not None:
                return relay
        self.stats["relay_ports_exhausted"] += 1
        raise self._capacity_refusal("no relay port free")

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
        self.stats["relay_ports_exhausted"] += 1
        raise self._capacity_refusal("no even relay port pair free")

    def _close_relay(self, relay: RelayEndpoint) -> None:
        self.ports.release(relay.family, relay.address[1])
        relay.close()

    # Refresh, CreatePermission, ChannelBind -----------------------------------------

    def _require(self, existing: Allocation | None) -> Allocation:
        """The link's RFC 8656 allocation: 437 if there is none, or it is another dialect's."""
        if existing is None or existing.dialect is not None:
            raise Refusal(ErrorCode.ALLOCATION_MISMATCH)
        return existing

    def _refresh(self, link: ClientLink, request: stun.Message, creds: Credentials,
                 existing: Allocation | None) -> Attributes:
        allocation = self._require(existing)
        requested = request.get(Attr.REQUESTED_ADDRESS_FAMILY)
        if requested is not None \
                and _FAMILY_OF_CODE.get(stun.decode_address_family(requested)) not in allocation.relays:
            raise Refusal(ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH)
        lifetime = self.lifetime(_requested_lifetime(request), zero_deletes=True)
        if lifetime == 0:
            self.delete_allocation(allocation, "refreshed to 0")
        else:
            allocation.expires = self.now + lifetime
            self._offload(allocation)
        return [(Attr.LIFETIME, stun.encode_lifetime(lifetime))]

    def _peer(self, request: stun.Message, value: bytes, allocation: Allocation) -> Address:
        host, port = stun.decode_xor_address(value, request.transaction_id)[:2]
        self.check_peer(allocation, host, port)
        return host, port

    def _create_permission(self, link: ClientLink, request: stun.Message, creds: Credentials,
                           existing: Allocation | None) -> Attributes:
        allocation = self._require(existing)
        values = request.get_all(Attr.XOR_PEER_ADDRESS)
        if not values:
            raise Refusal(ErrorCode.BAD_REQUEST, "Bad Request: XOR-PEER-ADDRESS missing")
        hosts = [self._peer(request, value, allocation)[0] for value in values]  # all or none
        for host in hosts:
            self.permit(allocation, host)
        self._offload(allocation)
        return []

    def _channel_bind(self, link: ClientLink, request: stun.Message, creds: Credentials,
                      existing: Allocation | None) -> Attributes:
        allocation = self._require(existing)
        number_value, peer_value = request.get(Attr.CHANNEL_NUMBER), request.get(Attr.XOR_PEER_ADDRESS)
        if number_value is None or peer_value is None:
            raise Refusal(ErrorCode.BAD_REQUEST, "Bad Request: CHANNEL-NUMBER and XOR-PEER-ADDRESS required")
        number = stun.decode_channel_number(number_value)
        if not stun.CHANNEL_MIN <= number <= stun.CHANNEL_MAX_RFC5766:
            raise Refusal(ErrorCode.BAD_REQUEST, "Bad Request: channel number outside 0x4000-0x7FFF")
        peer = self._peer(request, peer_value, allocation)
        bound = allocation.channels.get(number)
        if bound is not None and bound[0] != peer:
            raise Refusal(ErrorCode.BAD_REQUEST, "Bad Request: channel bound to another peer")
        if allocation.peer_channels.get(peer, number) != number:
            raise Refusal(ErrorCode.BAD_REQUEST, "Bad Request: peer bound to another channel")
        relay = allocation.relays[6 if ":" in peer[0] else 4]
        allocation.channels[number] = (peer, self.now + self.limits.channel_lifetime, relay)
        allocation.peer_channels[peer] = number
        self.permit(allocation, peer[0])
        self._offload(allocation)  # before the success goes out: the client's next ChannelData may take it
        return []


def _requested_lifetime(request: stun.Message) -> int | None:
    value = request.get(Attr.LIFETIME)
    return None if value is None else stun.decode_lifetime(value)


def _quota_refused() -> Attributes:
    """The work of an Allocate the pool refused."""
    raise Refusal(ErrorCode.ALLOCATION_QUOTA_REACHED)
