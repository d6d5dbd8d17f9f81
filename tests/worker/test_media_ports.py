"""Media ports by the rules (RFC 3550 §11, RFC 5761, RFC 3605): RTP on an even port and RTCP on the odd port
above it, bound as a pair; a=rtcp only when RTCP is elsewhere; a=rtcp-mux in an answer only when offered;
outbound offers carry both. ICE without rtcp-mux runs two components through the edge (aioice as the
caller, two components), and RTCP flows on component 2."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.tokens import mint
from tests.conftest import NodeFiles, ServeProcess, write_config
from tests.worker.caller import Caller, sdp_offer, sine_payloads, stored_message
from tests.worker.webauth import worker_status
from um.worker import sdp
from um.worker.rtp import RtpSender, rtcp_compound
from um.worker.store import VoicemailStore
from um.worker.transport import DirectTransport, PortRange

SECRET = "media-ports-edge-secret-0123456789abc"
OFFER = ("v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
         "m=audio 5004 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")


def answer_lines(offer: str, local: sdp.LocalMedia) -> list[str]:
    text, _ = sdp.answer(sdp.parse(offer), local)
    return text.split("\r\n")


def test_answer_names_rtcp_only_off_port_plus_one_and_mux_only_when_offered() -> None:
    plain = answer_lines(OFFER, sdp.LocalMedia("198.51.100.1", 40000, rtcp_port=40001))
    assert "m=audio 40000 RTP/AVP 0 101" in plain
    assert not [line for line in plain if line.startswith("a=rtcp")]
    elsewhere = answer_lines(OFFER, sdp.LocalMedia("198.51.100.1", 40000, rtcp_port=40017))
    assert "a=rtcp:40017 IN IP4 198.51.100.1" in elsewhere and "a=rtcp-mux" not in elsewhere
    muxed = answer_lines(OFFER + "a=rtcp-mux\r\n", sdp.LocalMedia("198.51.100.1", 40000, rtcp_port=40000))
    assert "a=rtcp-mux" in muxed and not [line for line in muxed if line.startswith("a=rtcp:")]
    _, agreed = sdp.answer(sdp.parse(OFFER + "a=rtcp:5010\r\n"), sdp.LocalMedia("198.51.100.1", 40000))
    assert agreed.remote_rtcp == ("192.0.2.10", 5010) and not agreed.rtcp_mux


def test_outbound_offer_offers_mux_and_lists_rtcp() -> None:
    lines = sdp.offer(sdp.LocalMedia("198.51.100.1", 40000, rtcp_port=40001)).split("\r\n")
    assert "a=rtcp-mux" in lines and "a=rtcp:40001 IN IP4 198.51.100.1" in lines
    # the answer decides: without rtcp-mux RTCP goes to the answerer's port + 1
    answer = OFFER.replace("m=audio 5004", "m=audio 6000")
    agreed = sdp.accept_answer(sdp.parse(answer), sdp.LocalMedia("198.51.100.1", 40000))
    assert agreed.remote_rtcp == ("192.0.2.10", 6001) and not agreed.rtcp_mux
    agreed = sdp.accept_answer(sdp.parse(answer + "a=rtcp-mux\r\n"), sdp.LocalMedia("198.51.100.1", 40000))
    assert agreed.remote_rtcp == ("192.0.2.10", 6000) and agreed.rtcp_mux


def test_port_range_binds_even_odd_pairs_and_skips_taken_ports() -> None:
    ports = PortRange(41001, 41011)  # odd bounds: pairs are (41002, 41003) ... (41010, 41011)
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", 41005))  # takes the RTCP half of 41004
    held = []
    try:
        for _ in range(4):
            rtp, rtcp = ports.bind_pair("127.0.0.1")
            assert rtcp is not None
            held += [rtp, rtcp]
            number = rtp.getsockname()[1]
            assert number % 2 == 0 and rtcp.getsockname()[1] == number + 1 and number != 41004
        with pytest.raises(OSError):
            ports.bind_pair("127.0.0.1")
        single, none = PortRange(41020, 41020).bind_pair("127.0.0.1", pair=False)
        assert none is None and single.getsockname()[1] == 41020
        single.close()
    finally:
        squatter.close()
        for sock in held:
            sock.close()


def test_direct_transport_receives_and_sends_rtcp_on_the_odd_port() -> None:
    async def run() -> tuple[int, int, list[bytes], list[tuple[bytes, Any]]]:
        ports = PortRange(41100, 41199)
        transport = await DirectTransport(ports, "127.0.0.1").open()
        got: list[bytes] = []
        transport.on_packet = got.append
        loop = asyncio.get_running_loop()
        peer_rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer_rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for sock in (peer_rtp, peer_rtcp):
            sock.bind(("127.0.0.1", 0))
            sock.setblocking(False)
        await transport.set_remote(peer_rtp.getsockname(), peer_rtcp.getsockname())
        report = rtcp_compound(RtpSender(0), None, time.time(), False)
        peer_rtcp.sendto(report, ("127.0.0.1", transport.rtcp_port))
        transport.send_rtcp(report)
        await asyncio.sleep(0.2)
        heard = [await loop.sock_recvfrom(peer_rtcp, 2048)]
        await transport.close()
        peer_rtp.close()
        peer_rtcp.close()
        return transport.local[1], transport.rtcp_port, got, heard

    port, rtcp_port, got, heard = asyncio.run(run())
    assert port % 2 == 0 and rtcp_port == port + 1
    assert got and got[0][1] in (200, 201)  # the RR reached the media session's callback
    assert heard[0][1][1] == rtcp_port  # and ours left from the odd port


@pytest.fixture
def edge_node(tmp_path: Path) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    files = write_config(tmp_path, {
        "worker": {"media_via_edge": True, "rtp_port_min": 43000, "rtp_port_max": 43999, "silence_timeout": 0},
        "edge": {"auth_secrets": [SECRET], "allowed_peer_networks": ["127.0.0.0/8"]}})
    node = ServeProcess(files.path, "--roles", "callrouter,mailbox,worker,edge,web")
    try:
        node.wait_ready()
        yield files, node
    finally:
        node.kill()


def _ice_offer(ice: Any) -> str:
    default = ice.get_default_candidate(1)
    text = sdp_offer(default.host, default.port, ice=ice, rtcp_mux=False)
    rtcp = ice.get_default_candidate(2)
    return text.replace("a=ptime:20\r\n", f"a=ptime:20\r\na=rtcp:{rtcp.port} IN IP4 {rtcp.host}\r\n")


def test_two_component_ice_offer_leaves_a_voicemail_with_rtcp_on_component_2(
        edge_node: tuple[NodeFiles, ServeProcess]) -> None:
    import aioice

    files, node = edge_node
    audio = sine_payloads(4.0, seed=3)

    async def call() -> tuple[str, list[int], Caller]:
        caller = Caller()
        token = mint(SECRET, "sip:caller@example.test", 600, time.time())
        ice = aioice.Connection(ice_controlling=True, components=2, use_ipv6=False,
                                turn_server=("127.0.0.1", files.port("edge", "turn_udp_port")),
                                turn_username=token.username, turn_password=token.password,
                                transport_policy=aioice.TransportPolicy.RELAY)
        await ice.gather_candidates()
        caller.ice = ice
        host, port = await caller.redirect(files.port("callrouter", "sip_tcp_port"), "5000", "1004")
        answer = await caller.call(port, "5000", "1004", _ice_offer(ice))
        assert answer.status == 200, answer.reason
        text = answer.body.decode()
        rtcp_components = await caller.two_component_ice_message(text, audio)
        await caller.close()
        return text, rtcp_components, caller

    answer_sdp, rtcp_components, caller = asyncio.run(call())
    lines = answer_sdp.split("\r\n")
    media = next(line for line in lines if line.startswith("m=audio"))
    port = int(media.split()[1])
    candidates = [line.split() for line in lines if line.startswith("a=candidate:")]
    assert port % 2 == 0 and "a=rtcp-mux" not in lines and not [x for x in lines if x.startswith("a=rtcp:")]
    assert {(c[1], int(c[5])) for c in candidates} == {("1", port), ("2", port + 1)}  # both relayed, a pair
    store = VoicemailStore(Path(files.path.parent / "state"))
    message = stored_message(store, "1004")
    assert message.duration >= 1.5
    [finished] = worker_status(files)["recent"]
    transport = finished["transport"]
    assert transport["kind"] == "ice" and transport["components"] == 2 and transport["rtcp_port"] == port + 1
    assert transport["rtcp_in"] >= 3  # our receiver reports arrived on component 2
    assert finished["rtcp_in"] >= 3 and rtcp_components  # and the worker's RTCP (its BYE at least) came back on 2
    assert len(caller.received) >= 50


def test_plain_caller_without_mux_gets_an_even_port_and_rtcp_on_port_plus_one(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"worker": {"rtp_port_min": 44001, "rtp_port_max": 44999,
                                               "silence_timeout": 0}})
    node = ServeProcess(files.path, "--roles", "callrouter,mailbox,worker,web")
    try:
        node.wait_ready()

        async def call(mux: bool) -> tuple[str, int]:
            caller = Caller()
            local = await caller.open_direct()
            host, port = await caller.redirect(files.port("callrouter", "sip_tcp_port"), "5000", "1004")
            answer = await caller.call(port, "5000", "1004", sdp_offer("127.0.0.1", local, rtcp_mux=mux))
            assert answer.status == 200
            await asyncio.sleep(0.2)
            assert (await caller.bye()).status == 200
            await caller.close()
            return answer.body.decode(), local

        for mux in (False, True):
            text, _ = asyncio.run(call(mux))
            lines = text.split("\r\n")
            port = int(next(line for line in lines if line.startswith("m=audio")).split()[1])
            assert port % 2 == 0 and 44002 <= port <= 44998
            assert ("a=rtcp-mux" in lines) is mux and not [x for x in lines if x.startswith("a=rtcp:")]
    finally:
        node.kill()
