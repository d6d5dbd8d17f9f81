"""[MS-TURN] served by the TURN engine, with the engine suite's fake sockets and clock."""

from __future__ import annotations

import asyncio
import base64

from edge import stun
from edge.msturn import (
    MsAttr,
    MsMessage,
    MsType,
    decode,
    decode_address,
    decode_error_code,
    decode_u32,
    decode_xor_address,
    encode_address,
    encode_u32,
    long_term_key,
)
from edge.msturn.server import MsTurnServer
from edge.turn.policy import Limits
from tests.turn.test_engine import REALM, FakeLink, Harness

PEER = ("203.0.113.5", 6000)


class MsHarness(Harness):
    """The engine suite's harness with the [MS-TURN] dialect plugged in, as the composition root does."""

    def __init__(self, limits: Limits | None = None, alternates: tuple[tuple[str, int], ...] = ()) -> None:
        self.ms = MsTurnServer()
        super().__init__(limits, alternates=alternates, dialects=[self.ms])


class MsClient:
    """A Lync-like client: text USERNAME, key from the base64-decoded password."""

    def __init__(
        self,
        h: Harness,
        link: FakeLink | None = None,
        version: int = 1,
        text_password: bool = False,
    ):
        self.h, self.link, self.version = h, link or h.link, version
        password = (
            h.token.password.encode()
            if text_password
            else base64.b64decode(h.token.password)
        )
        self.key = long_term_key(h.token.username.encode(), REALM.encode(), password)
        self.nonce = b""

    def last(self) -> MsMessage:
        return decode(self.link.inbox[-1])

    def send(
        self, message: MsMessage, key: bytes | None = None, sha256: bool = False
    ) -> None:
        self.h.engine.from_client(self.link, message.encode(key, sha256=sha256))

    def allocate(
        self,
        extra: list[tuple[int, bytes]] | None = None,
        tid: bytes | None = None,
        key: bytes | None = None,
        sha256: bool = False,
    ) -> MsMessage:
        base = [(MsAttr.MS_VERSION, encode_u32(self.version))] + (extra or [])
        if not self.nonce:
            self.send(MsMessage(MsType.ALLOCATE_REQUEST, None, base))
            challenge = self.last()
            assert challenge.msg_type == MsType.ALLOCATE_ERROR
            self.nonce = challenge.get(MsAttr.NONCE) or b""
        attrs = base + [
            (MsAttr.USERNAME, self.h.token.username.encode()),
            (MsAttr.REALM, REALM.encode()),
            (MsAttr.NONCE, self.nonce),
        ]
        self.send(
            MsMessage(MsType.ALLOCATE_REQUEST, tid, attrs), key or self.key, sha256
        )
        return self.last()

    def send_data(
        self, peer: tuple[str, int], payload: bytes, key: bytes | None = None
    ) -> None:
        attrs = [
            (MsAttr.DESTINATION_ADDRESS, encode_address(*peer)),
            (MsAttr.DATA, payload),
            (MsAttr.USERNAME, self.h.token.username.encode()),
        ]
        self.send(MsMessage(MsType.SEND_REQUEST, None, attrs), key or self.key)

    def set_active_destination(self, peer: tuple[str, int]) -> MsMessage:
        attrs = [
            (MsAttr.DESTINATION_ADDRESS, encode_address(*peer)),
            (MsAttr.USERNAME, self.h.token.username.encode()),
        ]
        self.send(
            MsMessage(MsType.SET_ACTIVE_DESTINATION_REQUEST, None, attrs), self.key
        )
        return self.last()


def test_unauthenticated_allocate_is_challenged_in_the_dialect() -> None:
    h = MsHarness()
    c = MsClient(h)
    c.send(
        MsMessage(MsType.ALLOCATE_REQUEST, None, [(MsAttr.MS_VERSION, encode_u32(1))])
    )
    r = c.last()
    assert r.msg_type == MsType.ALLOCATE_ERROR
    assert r.attributes[0][0] == MsAttr.MAGIC_COOKIE
    assert decode_error_code(r.get(MsAttr.ERROR_CODE))[0] == 401
    assert r.get(MsAttr.REALM) == REALM.encode()  # 0x0015 in [MS-TURN]
    assert r.get(MsAttr.NONCE)  # 0x0014
    assert h.engine.stats["malformed"] == 0


def test_allocate_success() -> None:
    h = MsHarness()
    c = MsClient(h)
    r = c.allocate()
    assert r.msg_type == MsType.ALLOCATE_RESPONSE, decode_error_code(
        r.get(MsAttr.ERROR_CODE) or b"\0\0\5\0"
    )
    assert r.verify_integrity(c.key)
    relay = h.relays[-1]
    assert decode_address(r.get(MsAttr.MAPPED_ADDRESS)) == relay.address
    assert (
        decode_xor_address(r.get(MsAttr.XOR_MAPPED_ADDRESS), r.transaction_id)
        == h.link.address
    )
    assert decode_u32(r.get(MsAttr.LIFETIME)) == 600
    assert decode_u32(r.get(MsAttr.MS_VERSION)) == 1
    assert len(r.get(MsAttr.MS_SEQUENCE_NUMBER)) == 24
    assert h.engine.allocations[h.link].identity == "sip:alice@example.test"
    assert h.engine.stats["ms_turn_allocations_created"] == 1


def test_allocate_with_text_password_and_retransmission() -> None:
    h = MsHarness()
    c = MsClient(h, text_password=True)
    tid = bytes(range(16))
    first = c.allocate(tid=tid)
    assert first.msg_type == MsType.ALLOCATE_RESPONSE
    wire = h.link.inbox[-1]
    again = c.allocate(tid=tid)
    assert h.link.inbox[-1] == wire and again == first
    assert len(h.engine.allocations) == 1


def test_wrong_password_and_stale_nonce() -> None:
    h = MsHarness()
    c = MsClient(h)
    r = c.allocate(key=long_term_key(b"x", REALM.encode(), b"y"))
    assert decode_error_code(r.get(MsAttr.ERROR_CODE))[0] == 401
    assert not h.engine.allocations
    h.clock.now += 700
    r = c.allocate()
    assert decode_error_code(r.get(MsAttr.ERROR_CODE))[0] == 438
    c.nonce = r.get(MsAttr.NONCE)
    assert c.allocate().msg_type == MsType.ALLOCATE_RESPONSE


def test_sha256_integrity_when_version_3() -> None:
    h = MsHarness()
    c = MsClient(h, version=3)
    r = c.allocate(sha256=True)
    assert r.msg_type == MsType.ALLOCATE_RESPONSE
    assert len(r.get(MsAttr.MESSAGE_INTEGRITY)) == 32
    assert decode_u32(r.get(MsAttr.MS_VERSION)) == 3
    assert r.verify_integrity(c.key)


def test_send_permits_and_relays_then_data_indication_back() -> None:
    h = MsHarness()
    c = MsClient(h)
    c.allocate()
    replies = len(h.link.inbox)
    c.send_data(PEER, b"rtp")
    relay = h.relays[-1]
    assert relay.sent == [(b"rtp", PEER)]
    assert len(h.link.inbox) == replies  # no response to a successful Send
    allocation = h.engine.allocations[h.link]
    assert allocation.permitted(PEER[0], h.clock.now)
    relay.receiver(b"back", PEER)
    ind = c.last()
    assert ind.msg_type == MsType.DATA_INDICATION == 0x0115
    assert decode_address(ind.get(MsAttr.REMOTE_ADDRESS)) == PEER
    assert ind.get(MsAttr.DATA) == b"back"
    assert allocation.packets_to_peer == 1 and allocation.packets_to_client == 1
    relay.receiver(b"nope", ("203.0.113.99", 1))  # no permission
    assert c.last().get(MsAttr.DATA) == b"back"
    assert h.engine.stats["dropped_from_peer"] == 1


def test_send_refused_for_denied_peer_bad_key_or_no_allocation() -> None:
    h = MsHarness()
    c = MsClient(h)
    c.send_data(PEER, b"early")  # no allocation yet
    c.allocate()
    relay = h.relays[-1]
    c.send_data(("127.0.0.1", 6000), b"x")  # loopback
    c.send_data(("198.51.100.2", 6000), b"x")  # one of the node's addresses
    c.send_data(PEER, b"x", key=b"wrong")
    assert relay.sent == []
    assert h.engine.stats["ms_turn_dropped_send"] == 4


def test_set_active_destination() -> None:
    h = MsHarness()
    c = MsClient(h)
    c.allocate()
    r = c.set_active_destination(PEER)
    assert r.msg_type == MsType.SET_ACTIVE_DESTINATION_RESPONSE
    assert r.verify_integrity(c.key)
    allocation = h.engine.allocations[h.link]
    assert h.ms.state(allocation).active_destination == PEER
    assert allocation.permitted(PEER[0], h.clock.now)
    r = c.set_active_destination(("127.0.0.1", 5))
    assert r.msg_type == MsType.SET_ACTIVE_DESTINATION_ERROR
    assert decode_error_code(r.get(MsAttr.ERROR_CODE))[0] == 403


def test_set_active_destination_without_allocation() -> None:
    h = MsHarness()
    c = MsClient(h)
    r = c.set_active_destination(PEER)
    assert decode_error_code(r.get(MsAttr.ERROR_CODE))[0] == 437


def test_refresh_and_delete_by_allocate() -> None:
    h = MsHarness()
    c = MsClient(h)
    c.allocate()
    allocation = h.engine.allocations[h.link]
    h.clock.now += 100
    h.engine.tick()
    r = c.allocate([(MsAttr.LIFETIME, encode_u32(1200))])
    assert decode_u32(r.get(MsAttr.LIFETIME)) == 1200
    assert allocation.expires == h.clock.now + 1200
    r = c.allocate([(MsAttr.LIFETIME, encode_u32(0))])
    assert decode_u32(r.get(MsAttr.LIFETIME)) == 0
    assert not h.engine.allocations and h.relays[-1].closed


def test_expiry_through_the_engine_tick() -> None:
    h = MsHarness()
    c = MsClient(h)
    c.allocate()
    h.clock.now += 601
    h.engine.tick()
    assert not h.engine.allocations and h.relays[-1].closed


def test_quota_per_identity() -> None:
    h = MsHarness(Limits(max_allocations_per_user=1))
    MsClient(h).allocate()
    other = MsClient(h, FakeLink(("192.0.2.11", 40000)))
    r = other.allocate()
    assert r.msg_type == MsType.ALLOCATE_ERROR
    assert decode_error_code(r.get(MsAttr.ERROR_CODE))[0] == 486
    assert r.verify_integrity(other.key)


def test_a_draining_node_redirects_ms_turn_clients_like_rfc_ones() -> None:
    """Issue 14: MS-TURN answered a bare 508 while draining; now it names the alternate server too."""
    h = MsHarness(alternates=(("198.51.100.77", 3478),))
    h.engine.accepting = False  # SIGTERM: draining
    client = MsClient(h)
    r = client.allocate()
    assert r.msg_type == MsType.ALLOCATE_ERROR
    assert decode_error_code(r.get(MsAttr.ERROR_CODE))[0] == 300
    assert r.get(MsAttr.ALTERNATE_SERVER) is not None
    assert not h.engine.allocations


class PoolQuota:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop, self.futures, self.released = loop, [], []

    def acquire(self, identity: str) -> asyncio.Future[bool]:
        future = self.loop.create_future()
        self.futures.append(future)
        return future

    def release(self, identity: str) -> None:
        self.released.append(identity)


def _settle(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[bool], granted: bool
) -> None:
    future.set_result(granted)
    loop.run_until_complete(asyncio.sleep(0))


def test_pool_quota_async_for_both_dialects() -> None:
    loop = asyncio.new_event_loop()
    try:
        h = MsHarness()
        quota = PoolQuota(loop)
        h.engine.quota = quota
        c = MsClient(h)
        c.allocate()
        assert not h.engine.allocations and len(quota.futures) == 1
        _settle(loop, quota.futures[0], True)
        assert c.last().msg_type == MsType.ALLOCATE_RESPONSE and h.engine.allocations
        # an MS client refused by the pool
        c2 = MsClient(h, FakeLink(("192.0.2.12", 1)))
        c2.allocate()
        _settle(loop, quota.futures[1], False)
        assert decode_error_code(c2.last().get(MsAttr.ERROR_CODE))[0] == 486
        # the RFC path still parks and resumes the same way (refactored hook)
        rfc = FakeLink(("192.0.2.13", 2))
        h.allocate(link=rfc)
        _settle(loop, quota.futures[2], True)
        assert rfc.last().msg_class == stun.SUCCESS and len(h.engine.allocations) == 2
        # a link gone while waiting gives the quota back
        gone = FakeLink(("192.0.2.14", 3))
        h.nonce = b""  # nonces are bound to the client address
        h.allocate(link=gone)
        gone.connected = False  # type: ignore[attr-defined]
        _settle(loop, quota.futures[3], True)
        assert quota.released == ["sip:alice@example.test"]
    finally:
        loop.close()


def test_rfc_clients_unaffected_and_garbage_still_malformed() -> None:
    h = MsHarness()
    assert h.allocate().msg_class == stun.SUCCESS
    # (A cookie-less Binding with a zero-length body would be a classic RFC 3489 request, which is answered.)
    h.engine.from_client(FakeLink(("192.0.2.20", 1)), b"\x00\x01\x00\x03" + bytes(16))
    assert h.engine.stats["malformed"] == 1
    MsClient(h, FakeLink(("192.0.2.21", 1))).allocate()
    assert h.engine.stats["malformed"] == 1 and len(h.engine.allocations) == 2


def test_ms_turn_can_be_switched_off() -> None:
    h = Harness()  # the engine without the dialect, as with [edge] ms_turn = false
    c = MsClient(h)
    c.send(MsMessage(MsType.ALLOCATE_REQUEST, None, []))
    assert not h.link.inbox and h.engine.stats["malformed"] == 1


def test_unknown_comprehension_required_attribute() -> None:
    h = MsHarness()
    c = MsClient(h)
    c.send(MsMessage(MsType.ALLOCATE_REQUEST, None, [(0x0030, b"")]))
    r = c.last()
    assert decode_error_code(r.get(MsAttr.ERROR_CODE))[0] == 420
    assert r.get(MsAttr.UNKNOWN_ATTRIBUTES) == b"\x00\x30"
