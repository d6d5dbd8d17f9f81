"""Serving [MS-TURN] clients (Lync / Office Communicator) from the TURN engine.

Sans-I/O like the engine: it is handed datagrams by ``TurnEngine.from_client``
(anything that is not RFC STUN and passes :func:`edge.msturn.is_ms_turn`)
and uses the engine's hooks, so allocations, quotas, the peer policy,
bandwidth caps, expiry and counters are the RFC server's.

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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.stun.constants import Attr
from edge.tokens import TokenError, candidate_passwords
from edge.turn.auth import Credentials

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
    from edge.turn.engine import TurnEngine

__all__ = ["SERVER_MS_VERSION", "MsTurnServer"]

#: The highest MS-VERSION this server echoes (SHA-256 integrity from 3 on).
SERVER_MS_VERSION = 3
_RESPONSE = {
    MsType.ALLOCATE_REQUEST: (MsType.ALLOCATE_RESPONSE, MsType.ALLOCATE_ERROR),
    MsType.SET_ACTIVE_DESTINATION_REQUEST: (
        MsType.SET_ACTIVE_DESTINATION_RESPONSE,
        MsType.SET_ACTIVE_DESTINATION_ERROR,
    ),
    MsType.SEND_REQUEST: (MsType.SEND_RESPONSE, MsType.SEND_ERROR),
}


@dataclass(eq=False)
class _MsState:
    """What the dialect adds to an allocation."""

    connection_id: bytes
    version: int
    active_destination: Address | None = None


class _Fail(Exception):
    def __init__(
        self,
        code: int,
        reason: str | None = None,
        extra: list[tuple[int, bytes]] | None = None,
    ):
        super().__init__(code)
        self.code, self.reason, self.extra = code, reason, extra or []


class MsTurnServer:
    def __init__(self, engine: TurnEngine) -> None:
        self.engine = engine
        self.stats = engine.stats
        self._state: weakref.WeakKeyDictionary[Allocation, _MsState] = (
            weakref.WeakKeyDictionary()
        )
        # Unframed data after Set Active Destination must be seen before the
        # engine's own parsing (it may look like STUN or ChannelData), so the
        # engine's entry point is wrapped on this engine instance.

    # --- entry points ----------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Whether any allocation has an active destination (the engine checks this per datagram)."""
        return bool(self._state)

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
                self._answer(
                    link, message, _Fail(400, "Bad Request: unsupported method")
                )
        except MsTurnDecodeError as error:
            self._answer(link, message, _Fail(400, f"Bad Request: {error}"))
        return True

    def state(self, allocation: Allocation) -> _MsState | None:
        return self._state.get(allocation)

    # --- answering ---------------------------------------------------------------------

    def _answer(
        self,
        link: ClientLink,
        request: MsMessage,
        outcome: list[tuple[int, bytes]] | _Fail,
        key: bytes | None = None,
        sha256: bool = False,
    ) -> bytes:
        success, error = _RESPONSE.get(
            request.msg_type, (request.msg_type | 0x0100, request.msg_type | 0x0110)
        )
        if isinstance(outcome, _Fail):
            self.stats[f"ms_turn_refused_{outcome.code}"] += 1
            attributes = [
                (MsAttr.ERROR_CODE, encode_error_code(outcome.code, outcome.reason)),
                *outcome.extra,
            ]
            response = MsMessage(error, request.transaction_id, attributes)
        else:
            response = MsMessage(success, request.transaction_id, outcome)
        wire = response.encode(key, sha256=sha256)
        link.send(wire)
        return wire

    def _refusal(self, refusal: Exception) -> _Fail:
        """The engine's Refusal in this dialect (ALTERNATE-SERVER is 0x000E here)."""
        extra = [
            (MsAttr.ALTERNATE_SERVER, value)
            for kind, value in getattr(refusal, "extra", [])
            if kind == Attr.ALTERNATE_SERVER
        ]
        return _Fail(refusal.code, refusal.reason, extra)  # type: ignore[attr-defined]

    # --- authentication ----------------------------------------------------------------------

    def _challenge(self, link: ClientLink, request: MsMessage, code: int = 401) -> None:
        auth = self.engine.auth
        self._answer(
            link,
            request,
            _Fail(
                code,
                None,
                [
                    (MsAttr.REALM, auth.realm.encode()),
                    (MsAttr.NONCE, auth.new_nonce(link.address).encode()),
                ],
            ),
        )

    def _authenticate(self, link: ClientLink, request: MsMessage) -> Credentials | None:
        """Long-term credentials on an Allocate; None when it has been answered with an error."""
        auth = self.engine.auth
        mi = request.get(MsAttr.MESSAGE_INTEGRITY)
        username, realm, nonce = (
            request.get(MsAttr.USERNAME),
            request.get(MsAttr.REALM),
            request.get(MsAttr.NONCE),
        )
        if mi is None:
            self.stats["ms_turn_auth_missing"] += 1
            self._challenge(link, request)
            return None
        if username is None or realm is None or nonce is None:
            self._answer(
                link,
                request,
                _Fail(400, "Bad Request: USERNAME, REALM and NONCE required"),
            )
            return None
        if not auth.nonce_is_fresh(nonce, link.address):
            self.stats["ms_turn_auth_stale_nonce"] += 1
            self._challenge(link, request, 438)
            return None
        try:
            text = username.decode("utf-8")
            passwords = candidate_passwords(auth.secrets(), text, self.engine.now)
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

    def _allocation_of(
        self, link: ClientLink, request: MsMessage
    ) -> tuple[Allocation, _MsState] | None:
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
        engine = self.engine
        unknown = request.unknown_comprehension_required(MS_KNOWN_ATTRIBUTES)
        if unknown:
            self._answer(
                link,
                request,
                _Fail(
                    420,
                    None,
                    [
                        (
                            MsAttr.UNKNOWN_ATTRIBUTES,
                            b"".join(t.to_bytes(2, "big") for t in unknown),
                        )
                    ],
                ),
            )
            return
        creds = self._authenticate(link, request)
        if creds is None:
            return
        version = self._version(request)
        existing = link.allocation
        if existing is not None:
            self._refresh(link, request, creds, existing)
            return
        if not engine.accepting:
            self._answer(
                link,
                request,
                self._refusal(engine.Refusal(508, "Insufficient Capacity: draining")),
            )
            return
        family = 4
        requested = request.get(MsAttr.REQUESTED_ADDRESS_TYPE)
        if requested is not None and len(requested) >= 1 and requested[0] == 2:
            family = 6
        try:
            decision = engine.admit(link, creds.identity)
        except engine.Refusal as refusal:
            self._answer(link, request, self._refusal(refusal), creds.key, creds.sha256)
            return
        if decision is None:
            return  # a retransmission while the pool decides
        commit = lambda: self._commit(link, request, creds, family, version)
        if decision is True:
            commit()
            return

        def resumed(granted: bool) -> None:
            if granted:
                commit()
            else:
                self._answer(link, request, _Fail(486), creds.key, creds.sha256)

        engine.wait_for_quota(
            link, request.transaction_id, creds.identity, decision, resumed
        )

    def _commit(
        self,
        link: ClientLink,
        request: MsMessage,
        creds: Credentials,
        family: int,
        version: int,
    ) -> None:
        engine = self.engine
        try:
            relay = engine.bind_relay(family)
        except engine.Refusal as refusal:
            engine.release_quota(creds.identity)
            self._answer(link, request, self._refusal(refusal), creds.key, creds.sha256)
            return
        lifetime = engine.clamp_lifetime(self._lifetime(request))
        state = _MsState(secrets.token_bytes(20), version)
        allocation = engine.install_allocation(
            link,
            creds,
            {family: relay},
            lifetime,
            request.transaction_id,
            data_indication=self._framer,
        )
        self._state[allocation] = state
        self.stats["ms_turn_allocations_created"] += 1
        relayed = engine.relay_addresses.advertised(family, relay.address[1])
        attributes = [
            (MsAttr.MAPPED_ADDRESS, encode_address(*relayed)),
            (
                MsAttr.XOR_MAPPED_ADDRESS,
                encode_xor_address(
                    link.address[0], link.address[1], request.transaction_id
                ),
            ),
            (MsAttr.LIFETIME, encode_u32(lifetime)),
            *self._session_attributes(state),
        ]
        allocation.created_response = self._answer(
            link, request, attributes, creds.key, creds.sha256
        )

    def _session_attributes(self, state: _MsState) -> list[tuple[int, bytes]]:
        attributes = [(MsAttr.MS_SEQUENCE_NUMBER, state.connection_id + encode_u32(0))]
        if state.version:
            attributes.insert(0, (MsAttr.MS_VERSION, encode_u32(state.version)))
        return attributes

    def _refresh(
        self,
        link: ClientLink,
        request: MsMessage,
        creds: Credentials,
        allocation: Allocation,
    ) -> None:
        state = self._state.get(allocation)
        if (
            allocation.created_by == request.transaction_id
            and allocation.created_response
        ):
            link.send(
                allocation.created_response
            )  # a retransmitted Allocate: the same answer
            return
        if state is None:
            self._answer(
                link, request, _Fail(437), creds.key, creds.sha256
            )  # an RFC allocation
            return
        if creds.username != allocation.username:
            self._answer(link, request, _Fail(441), creds.key, creds.sha256)
            return
        asked = self._lifetime(request)
        if asked == 0:
            self.engine.delete_allocation(allocation, "refreshed to 0")
            lifetime = 0
        else:
            lifetime = self.engine.clamp_lifetime(asked)
            allocation.expires = self.engine.now + lifetime
        self._answer(
            link,
            request,
            [(MsAttr.LIFETIME, encode_u32(lifetime))],
            creds.key,
            creds.sha256,
        )

    # --- Send, Set Active Destination, Data --------------------------------------------------

    def _destination(self, request: MsMessage) -> Address:
        value = request.get(MsAttr.DESTINATION_ADDRESS)
        if value is None:
            raise MsTurnDecodeError("DESTINATION-ADDRESS missing")
        return decode_address(value)

    def _permit(self, allocation: Allocation, peer: Address) -> bool:
        engine = self.engine
        if (
            6 if ":" in peer[0] else 4
        ) not in allocation.relays or not engine.check_peer(*peer):
            return False
        allocation.permissions[peer[0]] = engine.now + engine.limits.permission_lifetime
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
        if not self._permit(allocation, peer) or not self.engine.relay_to_peer(
            allocation, payload, peer
        ):
            self.stats["ms_turn_dropped_send"] += 1

    def _set_active_destination(self, link: ClientLink, request: MsMessage) -> None:
        found = self._allocation_of(link, request)
        if found is None:
            allocation = link.allocation
            if allocation is None or allocation not in self._state:
                self._answer(link, request, _Fail(437))
            else:
                self._challenge(link, request)
            return
        allocation, state = found
        key, sha256 = allocation.key, allocation.sha256
        peer = self._destination(request)
        if not self._permit(allocation, peer):
            self._answer(
                link,
                request,
                _Fail(403, "Forbidden: peer address not allowed"),
                key,
                sha256,
            )
            return
        state.active_destination = peer
        self._answer(link, request, [], key, sha256)

    def raw_to_destination(self, link: ClientLink, data: bytes) -> bool:
        """Relay a non-[MS-TURN] datagram to the link's active destination; False if there is none."""
        allocation = link.allocation
        if allocation is None:
            return False
        state = self._state.get(allocation)
        if state is None or state.active_destination is None or is_ms_turn(data):
            return False
        peer = state.active_destination
        if self._permit(allocation, peer) and self.engine.relay_to_peer(
            allocation, data, peer
        ):
            self.stats["ms_turn_unframed_to_peer"] += 1
        else:
            self.stats["ms_turn_dropped_send"] += 1
        return True

    def _framer(self, allocation: Allocation) -> Callable[[bytes, Address], bytes]:
        """The engine's from_peer frames datagrams for this allocation with this."""

        def data_indication(data: bytes, peer: Address) -> bytes:
            return MsMessage(
                MsType.DATA_INDICATION,
                None,
                [
                    (MsAttr.REMOTE_ADDRESS, encode_address(peer[0], peer[1])),
                    (MsAttr.DATA, data),
                ],
            ).encode()

        return data_indication


def _password_forms(password: str) -> list[bytes]:
    """The token password as text, and base64-decoded (what an MS client keys with)."""
    forms = [password.encode()]
    try:
        forms.append(base64.b64decode(password, validate=True))
    except (binascii.Error, ValueError):
        pass
    return forms
