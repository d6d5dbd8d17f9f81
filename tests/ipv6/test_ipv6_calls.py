"""IPv6 end to end, on ::1 only: SIPp as an IPv6 UM IP gateway follows the call router's 302 to the worker
(ACK, BYE, 0 failed calls) and leaves a voicemail, bit for bit; with media via the edge the worker fetches its
token over MRAS on [::1] and asks the edge for an IPv6 relay (REQUESTED-ADDRESS-FAMILY), so the gateway's
RTP crosses an IPv6 relay. An IPv6-only offer to a worker whose RTP is IPv4 gets 488 with a Warning naming
the family, and nothing critical is logged."""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import ssl
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE_TOOLS, NodeFiles, ServeProcess, umedge, write_config
from tests.ipv6 import sipp6
from tests.sip.sipp_tools import sipp_available
from tests.worker.caller import Caller, free_udp_port, sdp_offer, sine_payloads
from tests.worker.sipp_media import write_rtp_pcap
from tests.worker.webauth import admin_token
from um.worker import wav

needs_sipp = pytest.mark.skipif(not sipp_available() and not REQUIRE_TOOLS, reason="sipp (Debian sip-tester) missing")
ROLES = ("--roles", "callrouter,mailbox,worker,edge,web")
RTP_RANGE = (42000, 42999)
AUDIO_SECONDS = 2.0


def worker_status_v6(files: NodeFiles, path: str = "/v1/worker") -> dict[str, Any]:
    """GET `path` over HTTPS on [::1] with an admin token (the pool CA verifies the node)."""
    context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
    context.check_hostname = False  # the node certificate names 127.0.0.1 and the node, not ::1
    connection = http.client.HTTPSConnection("::1", files.port("web", "http_port"), context=context, timeout=30)
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {admin_token(files)}"})
        answer = connection.getresponse()
        body = json.loads(answer.read())
        assert answer.status == 200, body
        return body  # type: ignore[no-any-return]
    finally:
        connection.close()


def ipv6_node(media_via_edge: bool) -> dict[str, dict[str, object]]:
    """Every role on ::1; the edge relays IPv4 on 127.0.0.1 and IPv6 on ::1."""
    return {
        "node": {"listen_address": "::1"},
        "callrouter": {"gateways": [{"address": "::1", "status": "enabled", "name": "gateway-v6"}]},
        "edge": {"listen_address": "::1", "relay_address": "127.0.0.1", "relay_address_v6": "::1",
                 "allowed_peer_networks": ["::1/128"]},
        "worker": {"silence_timeout": 0, "media_via_edge": media_via_edge, "rtp_port_min": RTP_RANGE[0],
                   "rtp_port_max": RTP_RANGE[1]},
    }


@needs_sipp
@pytest.mark.parametrize("media_via_edge", [False, True], ids=["direct", "via-edge"])
def test_ipv6_gateway_call_through_the_302_leaves_a_voicemail(tmp_path: Path, media_via_edge: bool) -> None:
    files = write_config(tmp_path, ipv6_node(media_via_edge))
    payloads = sine_payloads(AUDIO_SECONDS)
    pcap = write_rtp_pcap(tmp_path / "gateway.pcap", payloads)
    scenario = sipp6.write_scenario(tmp_path / "v6.xml", pcap, called="1003", wait_ms=2500,
                                    talk_ms=int(AUDIO_SECONDS * 1000) + 800)
    media_port = free_udp_port()
    while RTP_RANGE[0] <= media_port <= RTP_RANGE[1] or media_port >= 50000:
        media_port = free_udp_port()
    process = ServeProcess(files.path, *ROLES)
    try:
        process.wait_ready()
        result = sipp6.run(scenario, files.port("callrouter", "sip_tcp_port"), media_port)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "Successful call        |        0                  |        1" in result.stdout
        assert "Failed call            |        0                  |        0" in result.stdout
        listed: list[dict[str, object]] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not listed:
            listed = json.loads(umedge("voicemail", "list", "--json", "--config", str(files.path)).stdout)
            time.sleep(0.1)
        [message] = listed
        assert message["mailbox"] == "1003" and message["reason"] == "bye"
        assert str(message["caller"]).startswith("sip:5550106@[::1]")
        exported = tmp_path / "exported.wav"
        out = umedge("voicemail", "export", str(message["id"]), str(exported), "--config", str(files.path))
        assert out.returncode == 0, out.stderr
        assert wav.read(exported).data == b"".join(payloads)  # bit-exact over IPv6
        [call] = worker_status_v6(files)["recent"]
        transport = call["transport"]
        assert transport["local"][0] == "::1" and call["lost"] == 0
        stderr = process.stderr()
        assert "Timer H" not in stderr and "critical" not in stderr
        if media_via_edge:
            assert transport["kind"] == "relay" and 50000 <= transport["local"][1] <= 59999  # an IPv6 relay
            assert worker_status_v6(files)["tokens"]["mras"] == 1  # MRAS over [::1]
            assert re.search(r"allocated \[?::1\]?:\d+", stderr) and not re.search(r"\b443 Peer Address Family", stderr)
            # The IPv6 relay's ChannelData went through the native forwarder (counts collected once a second).
            deadline, relayed = time.monotonic() + 3, {}
            while time.monotonic() < deadline:
                status = worker_status_v6(files, "/v1/status")
                relayed = status["relayed"]
                if relayed["offloaded_packets_to_client"] >= 0.9 * relayed["packets_to_client"] > 0:
                    break
                time.sleep(0.3)
            assert status["kernel_offload"]["native"]["active"], status["kernel_offload"]
            assert relayed["offloaded_packets_to_client"] >= 0.9 * relayed["packets_to_client"] > 0, relayed
            assert relayed["offloaded_packets_to_peer"] >= 0.9 * relayed["packets_to_peer"] > 0, relayed
        else:
            assert transport["kind"] == "direct"
    finally:
        process.kill()


def test_ipv6_only_offer_to_an_ipv4_worker_gets_488_naming_the_family(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"worker": {"rtp_port_min": RTP_RANGE[0], "rtp_port_max": RTP_RANGE[1]}})
    process = ServeProcess(files.path, "--roles", "mailbox,worker")
    try:
        process.wait_ready()
        async def invite(offer: str) -> tuple[int, str]:
            caller = Caller()
            try:
                response = await caller.call(int(files.values["worker"]["sip_ports"][0]),  # type: ignore[index]
                                             "5000", "1001", offer)
                return response.status, response.headers.get("Warning") or ""
            finally:
                await caller.close()

        for offer in ipv6_offers():  # plain, and ICE with IPv6 candidates only
            status, warning = asyncio.run(invite(offer))
            assert status == 488
            assert warning.startswith("399 ") and "IPv6" in warning and "IPv4 only" in warning
        # The same offer in IPv4 is answered: the refusal is about the family, not the offer.
        ok, _ = asyncio.run(_ipv4_call(files.values["worker"]["sip_ports"][0]))  # type: ignore[index]
        assert ok == 200
        time.sleep(0.3)
        stderr = process.stderr()
        assert "critical" not in stderr and "family mismatch" not in stderr and "Traceback" not in stderr
    finally:
        process.kill()


def ipv6_offers() -> list[str]:
    """An IPv6-only offer, plain and with ICE (two components, IPv6 host candidates only)."""
    plain = sdp_offer("127.0.0.1", 4000, rtcp_mux=False).replace("IN IP4 127.0.0.1", "IN IP6 2001:db8::5")
    ice = plain.replace("a=sendrecv", "a=ice-ufrag:v6only\r\na=ice-pwd:v6only-password-0123456789\r\n"
                        "a=candidate:1 1 udp 2130706431 2001:db8::5 4000 typ host\r\n"
                        "a=candidate:1 2 udp 2130706430 2001:db8::5 4001 typ host\r\na=sendrecv")
    return [plain, ice]


async def _ipv4_call(port: int) -> tuple[int, str]:
    caller = Caller()
    try:
        response = await caller.call(port, "5000", "1001", sdp_offer("127.0.0.1", 4000))
        if response.status == 200:
            await caller.bye()
        return response.status, response.headers.get("Warning") or ""
    finally:
        await caller.close()


def test_ipv6_offer_when_the_edge_has_no_ipv6_relay_gets_488_naming_the_family(tmp_path: Path) -> None:
    """Media via the edge: the worker asks for an IPv6 relay (REQUESTED-ADDRESS-FAMILY); an edge without
    `relay_address_v6` answers 440, and the caller gets 488 with a Warning instead of a 503 or a dead call."""
    files = write_config(tmp_path, {"worker": {"rtp_port_min": RTP_RANGE[0], "rtp_port_max": RTP_RANGE[1],
                                               "media_via_edge": True},
                                    "edge": {"allowed_peer_networks": ["127.0.0.0/8"]}})
    process = ServeProcess(files.path, "--roles", "mailbox,worker,edge")
    try:
        process.wait_ready()
        async def invite(offer: str) -> tuple[int, str, str]:
            caller = Caller()
            try:
                response = await caller.call(int(files.values["worker"]["sip_ports"][0]),  # type: ignore[index]
                                             "5000", "1001", offer)
                return response.status, response.reason, response.headers.get("Warning") or ""
            finally:
                await caller.close()

        for offer in ipv6_offers():  # plain (a relay transport), and ICE with IPv6 candidates only (ICE relays)
            status, reason, warning = asyncio.run(invite(offer))
            assert status == 488 and "IPv6" in reason, (status, reason)
            assert warning.startswith("399 ") and "no IPv6 relay" in warning
        stderr = process.stderr()
        assert "critical" not in stderr and "Traceback" not in stderr
    finally:
        process.kill()
