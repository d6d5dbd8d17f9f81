"""Dialects plug into the engine: who is asked about which datagram, and the engine's rules they share."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import pytest

from edge import stun
from edge.stun import Attr
from edge.turn.allocation import Address, Allocation, ClientLink
from edge.turn.auth import Credentials
from edge.turn.dialect import DialectHost
from edge.turn.policy import Limits
from edge.turn.refusal import ErrorCode, Refusal
from tests.turn.test_engine import FakeLink, Harness, code

PEER = ("203.0.113.5", 7000)
ALLOCATE = b"\x03fake-allocate"  # not STUN, not ChannelData: offered to the dialects
EDGE_TURN = Path(__file__).resolve().parents[2] / "edge" / "turn"


class FakeDialect:
    """Allocates on ALLOCATE, relays b"RAW..." to PEER, frames peer data as b"IND" + data."""

    def __init__(self) -> None:
        self.host: DialectHost | None = None
        self.seen: list[bytes] = []  # what from_client was offered
        self.claimed: list[bytes] = []  # what claim was offered

    def attach(self, host: DialectHost) -> None:
        self.host = host

    def from_client(self, link: ClientLink, data: bytes) -> bool:
        self.seen.append(data)
        if data != ALLOCATE:
            return False
        assert self.host is not None
        creds = Credentials("user", "sip:fake@example.test", b"k" * 16, False)
        assert self.host.admit(link, creds.identity) is True
        relay = self.host.bind_relay(creds.identity, 4)
        allocation = self.host.install_allocation(link, creds, {4: relay}, self.host.lifetime(None), b"t" * 12,
                                                  dialect=self)
        self.host.check_peer(allocation, *PEER)
        self.host.permit(allocation, PEER[0])
        return True

    def claim(self, link: ClientLink, allocation: Allocation, data: bytes) -> bool:
        self.claimed.append(data)
        if not data.startswith(b"RAW"):
            return False
        assert self.host is not None
        return self.host.relay_to_peer(allocation, data, PEER)

    def data_indication(self, allocation: Allocation, data: bytes, peer: Address) -> bytes:
        return b"IND" + data


def _with_dialect(limits: Limits | None = None) -> tuple[Harness, FakeDialect, FakeLink]:
    dialect = FakeDialect()
    h = Harness(limits, dialects=[dialect])
    assert dialect.host is h.engine  # attached by the constructor
    fake = FakeLink(("192.0.2.50", 5000))
    h.engine.from_client(fake, ALLOCATE)
    assert fake.allocation is not None and fake.allocation.dialect is dialect
    return h, dialect, fake


def test_rfc_traffic_never_reaches_the_dialect() -> None:
    h, dialect, _ = _with_dialect()
    assert h.allocate().msg_class == stun.SUCCESS
    assert h.engine.allocations[h.link].dialect is None
    assert h.bind_channel(0x4001, *PEER).msg_class == stun.SUCCESS
    rfc_relay = h.relays[-1]
    for _ in range(3):
        h.engine.from_client(h.link, stun.encode_channel_data(0x4001, b"rtp"))
    h.engine.from_client(h.link, stun.encode_channel_data(0x4002, b"unbound"))
    h.engine.from_client(h.link, b"\x40\x01\x00\x09short")
    assert [data for data, _ in rfc_relay.sent] == [b"rtp"] * 3
    assert h.engine.stats["dropped_no_channel"] == 2
    rfc_relay.receiver(b"back", PEER)
    assert stun.decode_channel_data(h.link.inbox[-1]) == (0x4001, b"back")
    assert dialect.claimed == [] and len(dialect.seen) == 1  # only its own Allocate


def test_the_dialects_allocation_is_its_own() -> None:
    h, dialect, fake = _with_dialect()
    relay = h.relays[-1]
    h.engine.from_client(fake, b"RAW-1")
    h.engine.from_client(fake, b"\x40\x01\x00\x00")  # looks like ChannelData: still the dialect's
    assert dialect.claimed == [b"RAW-1", b"\x40\x01\x00\x00"]
    assert relay.sent == [(b"RAW-1", PEER)]
    assert h.engine.stats["dropped_no_channel"] == 1  # the dialect declined it
    relay.receiver(b"back", PEER)
    assert fake.inbox[-1] == b"INDback"
    h.engine.from_client(fake, stun.Message(stun.BINDING, stun.REQUEST).encode())  # STUN Binding: the engine's
    assert fake.last().msg_class == stun.SUCCESS and dialect.claimed[-1][:2] == b"\x00\x01"


def test_rfc_request_on_a_dialect_allocation_is_a_mismatch() -> None:
    h, _, fake = _with_dialect()
    # the harness's token user owns this one, so authentication passes and the dialect check answers
    allocation = h.engine.allocations[fake]
    allocation.username = h.token.username
    tid = b"c" * 12
    reply = h.request(stun.CHANNEL_BIND, [(Attr.CHANNEL_NUMBER, stun.encode_channel_number(0x4001)),
                                          h.peer_attr(*PEER, tid)], fake, tid=tid)
    assert code(reply) == 437 and not allocation.channels
    assert h.engine.stats["refused_437"] == 1


def test_unknown_datagrams_are_offered_to_dialects_then_malformed() -> None:
    h, dialect, _ = _with_dialect()
    h.engine.from_client(FakeLink(("192.0.2.60", 1)), b"\x01\x02garbage")
    assert dialect.seen[-1] == b"\x01\x02garbage" and h.engine.stats["malformed"] == 1


def test_the_rules_the_dialect_shares() -> None:
    h, _, fake = _with_dialect(Limits(default_lifetime=600, max_lifetime=3600))
    engine, allocation = h.engine, h.engine.allocations[fake]
    assert [engine.lifetime(a) for a in (None, 10, 1200, 99999, 0)] == [600, 600, 1200, 3600, 600]
    assert engine.lifetime(0, zero_deletes=True) == 0
    with pytest.raises(Refusal) as mismatch:
        engine.check_peer(allocation, "2001:db8::5", 1)
    assert mismatch.value.code is ErrorCode.PEER_ADDRESS_FAMILY_MISMATCH
    with pytest.raises(Refusal) as denied:
        engine.check_peer(allocation, "127.0.0.1", 1)
    assert denied.value.code is ErrorCode.FORBIDDEN and engine.stats["peer_denied"] == 1
    engine.permit(allocation, "203.0.113.9")
    assert allocation.permitted("203.0.113.9", h.clock.now)
    assert engine.advertised(h.relays[-1]) == h.relays[-1].address


def test_draining_refuses_new_allocations_in_every_dialect() -> None:
    h, _, _ = _with_dialect()
    h.engine.accepting = False
    with pytest.raises(Refusal) as refusal:
        h.engine.admit(FakeLink(("192.0.2.70", 1)), "sip:x@example.test")
    assert refusal.value.code is ErrorCode.INSUFFICIENT_CAPACITY
    assert code(h.allocate()) == 508


def test_a_refused_relay_gives_the_pool_quota_back() -> None:
    class Pool:
        released: list[str] = []

        def acquire(self, identity: str) -> bool:
            return True

        def release(self, identity: str) -> None:
            self.released.append(identity)

    h = Harness()
    h.engine.quota = pool = Pool()
    with pytest.raises(Refusal) as refusal:
        h.engine.bind_relay("sip:x@example.test", 6)  # no IPv6 relay address here
    assert refusal.value.code is ErrorCode.ADDRESS_FAMILY_NOT_SUPPORTED
    assert pool.released == ["sip:x@example.test"]


def test_quota_wait_is_one_rule() -> None:
    loop = asyncio.new_event_loop()
    try:
        h = Harness()
        link, gone = FakeLink(("192.0.2.80", 1)), FakeLink(("192.0.2.81", 1))
        answers: list[bool] = []
        first, second = loop.create_future(), loop.create_future()
        h.engine.wait_for_quota(link, b"a" * 12, "sip:a@example.test", first, answers.append)
        h.engine.wait_for_quota(gone, b"b" * 12, "sip:b@example.test", second, answers.append)
        assert h.engine.admit(link, "sip:a@example.test") is None  # a retransmission meanwhile
        gone.connected = False  # type: ignore[attr-defined]
        first.set_result(True)
        second.set_result(True)
        loop.run_until_complete(asyncio.sleep(0))
        assert answers == [True] and not h.engine._pending
    finally:
        loop.close()


def test_no_module_of_edge_turn_imports_edge_msturn() -> None:
    for path in EDGE_TURN.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            assert not any(name.startswith("edge.msturn") for name in names), f"{path.name} imports {names}"
