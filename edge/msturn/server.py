"""Serving [MS-TURN] clients (Lync / Office Communicator) from the TURN engine.

Sans-I/O like the engine, and plugged into it as a dialect
(:class:`edge.turn.dialect.TurnDialect`): the composition root passes
``TurnEngine(dialects=[MsTurnServer()])``.  The engine hands it datagrams
that are not RFC STUN (``from_client``; :func:`edge.msturn.is_ms_turn`
picks ours), every datagram of the allocations it made (``claim``) and
peers' datagrams to frame for them (``data_indication``); it serves them
with the engine's rules (:class:`edge.turn.dialect.DialectHost`), so
allocations, quotas, lifetimes, the peer policy, bandwidth caps, expiry and
counters are the RFC server's.

What is served:

* **Allocate** (0x0003): a first request without credentials gets 401 with
  REALM and a stateless NONCE (the RFC server's nonces); the authenticated
  one gets MAPPED-ADDRESS = the relayed address (libnice reads the relay
  from MAPPED-ADDRESS in OC2007 mode), XOR-MAPPED-ADDRESS (0x8020) = the
  client's reflexive address, LIFETIME, MS-VERSION and MS-SEQUENCE-NUMBER
  (a connection id).  An Allocate on an existing allocation refreshes it
  (libnice's OC2007 refresh is an Allocate); LIFETIME 0 deletes it.
* **Send request** (0x0004) with DESTINATION-ADDRESS and DATA: installs the
  permission for the destination (MS-TURN has no CreatePermission), if the
  peer policy allows it, and relays DATA.  No response on success.
* **Set Active Destination** (0x0006) with DESTINATION-ADDRESS: checked and
  answered, the destination is remembered and permitted.  From then on any
  datagram from that client which is not an [MS-TURN] message is data for
  the active destination, relayed as it is (libnice's OC2007 socket sends
  unframed once the destination is set; STUN connectivity checks and
  anything starting like ChannelData included).  Data from peers is still
  framed as Data indications (libnice accepts them either way).
* **Data indications** (0x0115) with REMOTE-ADDRESS and DATA for datagrams
  from permitted peers.

Credentials.  On the wire the USERNAME and the password in the key are the
base64-*decoded* bytes of the MRAS ``<username>``/``<password>`` (libnice
socket/udp-turn.c: ``g_base64_decode (username ...)`` for OC2007).
umedge's MRAS currently hands out the TURN REST token texts, so the
USERNAME is accepted as the token username text as-is, and the key is
tried with the token password both as text and base64-decoded (what a
client that decodes it uses).  Key = MD5(username ":" realm ":" password)
(libnice stunhmac.c stun_hash_creds).  Send and Set Active Destination are
checked against the allocation's key (libnice: original clients send no
REALM there but use it in the key).
"""

from __future__ import annotations

import base64
import binascii
import secrets
import weakref
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.stun.constants import Attr
from edge.tokens import TokenError, candidate_passwords
from edge.turn.auth import Credentials
from edge.turn.refusal import ErrorCode, Refusal

from .constants import MS_KNOWN_ATTRIBUTES, MsAttr, MsType
from .message import (
    MsMessage,
    MsTurnDecodeError,
    decode,
    decode_address,
    decode_u32,
    encode_address,
    encode_error_code,
    encode_u32,
    encode_xor_address,
    is_ms_turn,
    long_term_key,
)

if TYPE_CHECKING:
    from edge.turn.allocation import Address, Allocation, ClientLink
    from edge.turn.dialect import DialectHost
    from edge.turn.engine import TurnEngine

__all__ = ["SERVER_MS_VERSION", "MsTurnServer", "dialect_of"]

#: The highest MS-VERSION this server echoes (SHA-256 integrity from 3 on).
SERVER_MS_VERSION = 3
_RESPONSE: dict[int, tuple[int, int]] = {
    MsType.ALLOCATE_REQUEST: (MsType.ALLOCATE_RESPONSE, MsType.ALLOCATE_ERROR),
    MsType.SET_ACTIVE_DESTINATION_REQUEST: (
        MsType.SET_ACTIVE_DESTINATION_RESPONSE,
        MsType.SET_ACTIVE_DESTINATION_ERROR,
    ),
    MsType.SEND_REQUEST: (MsType.SEND_RESPONSE, MsType.SEND_ERROR),
}
Attributes = list[tuple[int, bytes]]


@dataclass(eq=False)
class _MsState:
    """What the dialect adds to an allocation."""

    connection_id: bytes
    version: int
    active_destination: Address | None = None


class MsTurnServer:
    """The [MS-TURN] dialect (an edge.turn.dialect.TurnDialect): one per engine."""

    host: DialectHost  # set by attach(), called by the engine's constructor
    stats: Counter[str]

    def __init__(self) -> None:
        self._state: weakref.WeakKeyDictionary[Allocation, _MsState] = weakref.WeakKeyDictionary()

    def attach(self, host: DialectHost) -> None:
        if getattr(self, "host", None) is not None:
            raise RuntimeError("an MsTurnServer serves one engine")
        self.host = host
        self.stats = host.stats

    # --- entry points (edge.turn.dialect.TurnDialect) ------------------------------------

    def from_client(self, link: ClientLink, data: bytes) -> bool:
        """Serve one datagram; False if it is not [MS-TURN] (the engine counts it malformed)."""
        if not is_ms_turn(data):
            return False
        try:
            message = decode(data)
        except MsTurnDecodeError:
            return False
        self.stats["ms_turn_messages"] += 1
        kind = message.msg_type
        try:
            if kind == MsType.ALLOCATE_REQUEST:
                self._allocate(link, message)
            elif kind == MsType.SEND_REQUEST:
                self._send(link, message)
            elif kind == MsType.SET_ACTIVE_DESTINATION_REQUEST:
                self._set_active_destination(link, message)
            elif kind & 0x0110 == 0:  # another request
                self._answer(link, message, Refusal(ErrorCode.BAD_REQUEST, "Bad Request: unsupported method"))
        except MsTurnDecodeError as error:
            self._answer(link, message, Refusal(ErrorCode.BAD_REQUEST, f"Bad Request: {error}"))
        return True

    def claim(self, link: ClientLink, allocation: Allocation, data: bytes) -> bool:
        """Any datagram of this dialect's client that is not [MS-TURN] goes to its active destination."""
        state = self._state.get(allocation)
        if state is None or state.active_destination is None or is_ms_turn(data):
            return False
        peer = state.active_destination
        if self._permit(allocation, peer) and self.host.relay_to_peer(allocation, data, peer):
            self.stats["ms_turn_unframed_to_peer"] += 1
        else:
            self.stats["ms_turn_dropped_send"] += 1
        return True

    def raw_to_destination(self, link: ClientLink, data: bytes) -> bool:
        """Relay a datagram to the link's active destination (pseudo-TLS data frames); False if none."""
        allocation = link.allocation
        return allocation is not None and self.claim(link, allocation, data)

    def data_indication(self, allocation: Allocation, data: bytes, peer: Address) -> bytes:
        """A peer's datagram for the client, as a Data indication with REMOTE-ADDRESS."""
        return MsMessage(MsType.DATA_INDICATION, None, [
            (MsAttr.REMOTE_ADDRESS, encode_address(peer[0], peer[1])),
            (MsAttr.DATA, data),
        ]).encode()

    def state(self, allocation: Allocation) -> _MsState | None:
        return self._state.get(allocation)

    # --- answering ---------------------------------------------------------------------

    def _answer(self, link: ClientLink, request: MsMessage, outcome: Attributes | Refusal,
                key: bytes | None = None, sha256: bool = False) -> bytes:
        success, error = _RESPONSE.get(request.msg_type, (request.msg_type | 0x0100, request.msg_type | 0x0110))
        if isinstance(outcome, Refusal):
            self.stats[f"ms_turn_refused_{int(outcome.code)}"] += 1
            attributes = [(int(MsAttr.ERROR_CODE), encode_error_code(outcome.code, outcome.reason)),
                          *outcome.extra]
            response = MsMessage(error, request.transaction_id, attributes)
        else:
            response = MsMessage(success, request.transaction_id, outcome)
        wire = response.encode(key, sha256=sha256)
        link.send(wire)
        return wire

    @staticmethod
    def _translated(refusal: Refusal) -> Refusal:
        """The engine's Refusal in this dialect: its RFC attributes renumbered (ALTERNATE-SERVER is 0x000E)."""
        extra = [(int(MsAttr.ALTERNATE_SERVER), value) for kind, value in refusal.extra
                 if kind == Attr.ALTERNATE_SERVER]
        return Refusal(refusal.code, refusal.reason, extra)

    # --- authentication ----------------------------------------------------------------------

    def _challenge(self, link: ClientLink, request: MsMessage,
                   code: ErrorCode = ErrorCode.UNAUTHENTICATED) -> None:
        auth = self.host.auth
        self._answer(link, request, Refusal(code, None, [
            (MsAttr.REALM, auth.realm.encode()),
            (MsAttr.NONCE, auth.new_nonce(link.address).encode()),
        ]))

    def _authenticate(self, link: ClientLink, request: MsMessage) -> Credentials | None:
        """Long-term credentials on an Allocate; None when it has been answered with an error."""
        auth = self.host.auth
        mi = request.get(MsAttr.MESSAGE_INTEGRITY)
        username, realm, nonce = request.get(MsAttr.USERNAME), request.get(MsAttr.REALM), request.get(MsAttr.NONCE)
        if mi is None:
            self.stats["ms_turn_auth_missing"] += 1
            self._challenge(link, request)
            return None
        if username is None or realm is None or nonce is None:
            self._answer(link, request,
                         Refusal(ErrorCode.BAD_REQUEST, "Bad Request: USERNAME, REALM and NONCE required"))
            return None
        if not auth.nonce_is_fresh(nonce, link.address):
            self.stats["ms_turn_auth_stale_nonce"] += 1
            self._challenge(link, request, ErrorCode.STALE_NONCE)
            return None
        try:
            text = username.decode("utf-8")
            passwords = candidate_passwords(auth.secrets(), text, self.host.now)
        except (UnicodeDecodeError, TokenError):
            self.stats["ms_turn_auth_bad_token"] += 1
            self._challenge(link, request)
            return None
        for password in passwords:
            for secret in _password_forms(password):
                key = long_term_key(username, realm, secret)
                if request.verify_integrity(key):
                    return Credentials(text, text.split(":", 1)[1], key, len(mi) == 32)
        self.stats["ms_turn_auth_bad_token"] += 1
        self._challenge(link, request)
        return None

    def _allocation_of(self, link: ClientLink, request: MsMessage) -> tuple[Allocation, _MsState] | None:
        """The link's [MS-TURN] allocation, if `request` carries its key's integrity."""
        allocation = link.allocation
        state = self._state.get(allocation) if allocation is not None else None
        if allocation is None or state is None:
            return None
        if not request.verify_integrity(allocation.key):
            return None
        return allocation, state

    # --- Allocate ------------------------------------------------------------------------------

    def _lifetime(self, request: MsMessage) -> int | None:
        value = request.get(MsAttr.LIFETIME)
        return None if value is None else decode_u32(value)

    def _version(self, request: MsMessage) -> int:
        value = request.get(MsAttr.MS_VERSION)
        return min(decode_u32(value), SERVER_MS_VERSION) if value is not None else 0

    def _allocate(self, link: ClientLink, request: MsMessage) -> None:
        unknown = request.unknown_comprehension_required(MS_KNOWN_ATTRIBUTES)
        if unknown:
            listed = b"".join(t.to_bytes(2, "big") for t in unknown)
            self._answer(link, request,
                         Refusal(ErrorCode.UNKNOWN_ATTRIBUTE, None, [(MsAttr.UNKNOWN_ATTRIBUTES, listed)]))
            return
        creds = self._authenticate(link, request)
        if creds is None:
            return
        version = self._version(request)
        existing = link.allocation
        if existing is not None:
            self._refresh(link, request, creds, existing)
            return
        family = 4
        requested = request.get(MsAttr.REQUESTED_ADDRESS_TYPE)
        if requested is not None and len(requested) >= 1 and requested[0] == 2:
            family = 6
        try:
            decision = self.host.admit(link, creds.identity)
        except Refusal as refusal:
            self._answer(link, request, self._translated(refusal), creds.key, creds.sha256)
            return
        if decision is None:
            return  # a retransmission while the pool decides
        if decision is True:
            self._commit(link, request, creds, family, version)
            return

        def resumed(granted: bool) -> None:
            if granted:
                self._commit(link, request, creds, family, version)
            else:
                self._answer(link, request, Refusal(ErrorCode.ALLOCATION_QUOTA_REACHED), creds.key, creds.sha256)

        self.host.wait_for_quota(link, request.transaction_id, creds.identity, decision, resumed)

    def _commit(self, link: ClientLink, request: MsMessage, creds: Credentials, family: int, version: int) -> None:
        host = self.host
        try:
            relay = host.bind_relay(creds.identity, family)
        except Refusal as refusal:
            self._answer(link, request, self._translated(refusal), creds.key, creds.sha256)
            return
        lifetime = host.lifetime(self._lifetime(request))
        state = _MsState(secrets.token_bytes(20), version)
        allocation = host.install_allocation(link, creds, {family: relay}, lifetime, request.transaction_id,
                                             dialect=self)
        self._state[allocation] = state
        self.stats["ms_turn_allocations_created"] += 1
        attributes: Attributes = [
            (MsAttr.MAPPED_ADDRESS, encode_address(*host.advertised(relay))),
            (MsAttr.XOR_MAPPED_ADDRESS, encode_xor_address(link.address[0], link.address[1], request.transaction_id)),
            (MsAttr.LIFETIME, encode_u32(lifetime)),
            *self._session_attributes(state),
        ]
        allocation.created_response = self._answer(link, request, attributes, creds.key, creds.sha256)

    def _session_attributes(self, state: _MsState) -> Attributes:
        attributes: Attributes = [(MsAttr.MS_SEQUENCE_NUMBER, state.connection_id + encode_u32(0))]
        if state.version:
            attributes.insert(0, (MsAttr.MS_VERSION, encode_u32(state.version)))
        return attributes

    def _refresh(self, link: ClientLink, request: MsMessage, creds: Credentials, allocation: Allocation) -> None:
        state = self._state.get(allocation)
        if allocation.created_by == request.transaction_id and allocation.created_response:
            link.send(allocation.created_response)  # a retransmitted Allocate: the same answer
            return
        if state is None:  # an RFC allocation
            self._answer(link, request, Refusal(ErrorCode.ALLOCATION_MISMATCH), creds.key, creds.sha256)
            return
        if creds.username != allocation.username:
            self._answer(link, request, Refusal(ErrorCode.WRONG_CREDENTIALS), creds.key, creds.sha256)
            return
        lifetime = self.host.lifetime(self._lifetime(request), zero_deletes=True)
        if lifetime == 0:
            self.host.delete_allocation(allocation, "refreshed to 0")
        else:
            allocation.expires = self.host.now + lifetime
        self._answer(link, request, [(MsAttr.LIFETIME, encode_u32(lifetime))], creds.key, creds.sha256)

    # --- Send, Set Active Destination ---------------------------------------------------------

    def _destination(self, request: MsMessage) -> Address:
        value = request.get(MsAttr.DESTINATION_ADDRESS)
        if value is None:
            raise MsTurnDecodeError("DESTINATION-ADDRESS missing")
        return decode_address(value)

    def _permit(self, allocation: Allocation, peer: Address) -> bool:
        """The engine's peer check, then the permission ([MS-TURN] has no CreatePermission)."""
        try:
            self.host.check_peer(allocation, *peer)
        except Refusal:
            return False
        self.host.permit(allocation, peer[0])
        return True

    def _send(self, link: ClientLink, request: MsMessage) -> None:
        found = self._allocation_of(link, request)
        payload = request.get(MsAttr.DATA)
        if found is None or payload is None:
            self.stats["ms_turn_dropped_send"] += 1
            return
        allocation, _ = found
        try:
            peer = self._destination(request)
        except MsTurnDecodeError:
            self.stats["ms_turn_dropped_send"] += 1
            return
        if not self._permit(allocation, peer) or not self.host.relay_to_peer(allocation, payload, peer):
            self.stats["ms_turn_dropped_send"] += 1

    def _set_active_destination(self, link: ClientLink, request: MsMessage) -> None:
        found = self._allocation_of(link, request)
        if found is None:
            allocation = link.allocation
            if allocation is None or allocation not in self._state:
                self._answer(link, request, Refusal(ErrorCode.ALLOCATION_MISMATCH))
            else:
                self._challenge(link, request)
            return
        allocation, state = found
        key, sha256 = allocation.key, allocation.sha256
        peer = self._destination(request)
        if not self._permit(allocation, peer):
            forbidden = Refusal(ErrorCode.FORBIDDEN, "Forbidden: peer address not allowed")
            self._answer(link, request, forbidden, key, sha256)
            return
        state.active_destination = peer
        self._answer(link, request, [], key, sha256)


def dialect_of(engine: TurnEngine) -> MsTurnServer | None:
    """The engine's [MS-TURN] dialect; None when ms_turn is off."""
    return next((d for d in engine.dialects if isinstance(d, MsTurnServer)), None)


def _password_forms(password: str) -> list[bytes]:
    """The token password as text, and base64-decoded (what an MS client keys with)."""
    forms = [password.encode()]
    try:
        forms.append(base64.b64decode(password, validate=True))
    except (binascii.Error, ValueError):
        pass
    return forms
