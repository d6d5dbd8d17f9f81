"""Unframed data after Set Active Destination (what libnice's OC2007 socket sends)."""

from __future__ import annotations

from edge import stun
from edge.msturn import MsType
from tests.msturn.test_server import PEER, MsClient, MsHarness
from tests.turn.test_engine import FakeLink, Harness


def _active(h: Harness) -> MsClient:
    c = MsClient(h)
    c.allocate()
    assert (
        c.set_active_destination(PEER).msg_type
        == MsType.SET_ACTIVE_DESTINATION_RESPONSE
    )
    return c


def test_unframed_datagrams_go_to_the_active_destination() -> None:
    h = MsHarness()
    c = _active(h)
    relay = h.relays[-1]
    replies = len(h.link.inbox)
    rtp = b"\x80\x00\x00\x01" + b"\0" * 16
    looks_like_channel_data = b"umedge-libnice-a"  # 0x75: in the ChannelData range
    binding = stun.Message(
        stun.BINDING, stun.REQUEST, b"t" * 12
    ).encode()  # a peer's ICE check
    for payload in (rtp, looks_like_channel_data, binding):
        h.engine.from_client(h.link, payload)
    assert relay.sent == [(rtp, PEER), (looks_like_channel_data, PEER), (binding, PEER)]
    assert len(h.link.inbox) == replies  # nothing answered by the server itself
    assert h.engine.stats["ms_turn_unframed_to_peer"] == 3
    assert h.engine.stats["malformed"] == 0
    # [MS-TURN] messages are still the server's: a Set Active Destination is answered.
    assert (
        c.set_active_destination(PEER).msg_type
        == MsType.SET_ACTIVE_DESTINATION_RESPONSE
    )
    assert len(relay.sent) == 3


def test_without_active_destination_nothing_is_forwarded_unframed() -> None:
    h = MsHarness()
    c = MsClient(h)
    c.allocate()
    relay = h.relays[-1]
    h.engine.from_client(h.link, b"\x80\x00\x00\x01rtp")
    assert relay.sent == []
    assert h.engine.stats["malformed"] == 1
    other = FakeLink(("192.0.2.77", 4000))  # another client: no allocation at all
    h.engine.from_client(other, b"\x80\x00\x00\x01rtp")
    assert relay.sent == []
