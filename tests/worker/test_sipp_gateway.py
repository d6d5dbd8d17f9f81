"""SIPp as a plain UM IP gateway (no ICE) through the call router: a G.711 pcap played with
play_pcap_audio leaves a voicemail of the right length, bit for bit; with `[worker] media_via_edge`
every RTP packet of the worker crosses the edge's TURN relay (seen on the loopback interface and in
the edge's counters). `umedge voicemail list/export` read the store."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_TOOLS, ServeProcess, umedge, write_config
from tests.sip.sipp_tools import sipp_available
from tests.worker.caller import free_udp_port, sine_payloads
from tests.worker.sipp_media import run_voicemail_sipp, write_rtp_pcap, write_voicemail_scenario
from tests.worker.sniff import LoopbackUdp
from tests.worker.webauth import worker_status
from um.worker import wav

needs_sipp = pytest.mark.skipif(not sipp_available() and not REQUIRE_TOOLS, reason="sipp (Debian sip-tester) missing")
ROLES = ("--roles", "callrouter,mailbox,worker,edge,web")
RTP_RANGE = (41000, 41999)
AUDIO_SECONDS = 4.0


def web_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        return json.loads(answer.read())


@needs_sipp
@pytest.mark.parametrize("media_via_edge", [False, True], ids=["direct", "via-edge"])
def test_sipp_pcap_leaves_a_voicemail_of_the_right_length(tmp_path: Path, media_via_edge: bool) -> None:
    files = write_config(tmp_path, {
        "worker": {"rtp_port_min": RTP_RANGE[0], "rtp_port_max": RTP_RANGE[1], "silence_timeout": 0,
                   "media_via_edge": media_via_edge},
        "edge": {"allowed_peer_networks": ["127.0.0.0/8"]}})  # the gateway is on loopback here
    payloads = sine_payloads(AUDIO_SECONDS)
    pcap = write_rtp_pcap(tmp_path / "gateway.pcap", payloads)
    scenario = write_voicemail_scenario(tmp_path / "voicemail.xml", pcap, called="1003", wait_ms=2500,
                                        talk_ms=int(AUDIO_SECONDS * 1000) + 800)
    sipp_media = free_udp_port()
    while RTP_RANGE[0] <= sipp_media <= RTP_RANGE[1] or sipp_media >= 50000:
        sipp_media = free_udp_port()
    process = ServeProcess(files.path, *ROLES)
    sniffing = media_via_edge and LoopbackUdp.available()
    try:
        process.wait_ready()
        web = files.port("web", "http_port")
        before = web_json(web, "/v1/status")
        sniffer = LoopbackUdp()
        if sniffing:
            sniffer.__enter__()
        try:
            result = run_voicemail_sipp(scenario, files.port("callrouter", "sip_tcp_port"), sipp_media, timeout=40)
        finally:
            if sniffing:
                sniffer.__exit__(None)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        deadline = time.monotonic() + 5
        listed = []
        while time.monotonic() < deadline and not listed:
            listed = json.loads(umedge("voicemail", "list", "--json", "--config", str(files.path)).stdout)
            time.sleep(0.1)
        [message] = listed
        assert message["mailbox"] == "1003" and message["codec"] == "PCMU" and message["reason"] == "bye"
        assert message["caller"].startswith("sip:5550100@") and message["caller_name"] == "SIPp gateway"
        assert message["duration"] == pytest.approx(AUDIO_SECONDS, abs=0.06)
        exported = tmp_path / "exported.wav"
        out = umedge("voicemail", "export", message["id"], str(exported), "--config", str(files.path))
        assert out.returncode == 0, out.stderr
        stored = wav.read(exported)
        assert stored.codec == "PCMU" and stored.rate == 8000
        assert stored.data == b"".join(payloads)  # bit-exact: the gateway's G.711 payload, in order, no gaps
        table = umedge("voicemail", "list", "--mailbox", "1003", "--config", str(files.path)).stdout
        assert message["id"] in table and "4.00s" in table
        worker = worker_status(files)  # the live calls: admin over HTTPS
        [call] = worker["recent"]
        transport = call["transport"]
        assert RTP_RANGE[0] <= transport["host_port"] <= RTP_RANGE[1]
        assert call["lost"] == 0 and call["received"] >= len(payloads)
        after = web_json(web, "/v1/status")
        relayed = {k: after["relayed"][k] - before["relayed"].get(k, 0) for k in after["relayed"]}
        turn_port = files.port("edge", "turn_udp_port")
        if media_via_edge:
            assert transport["kind"] == "relay" and 50000 <= transport["local"][1] <= 59999  # the SDP named the relay
            assert worker["tokens"]["mras"] == 1  # token over MRAS with the node certificate
            assert relayed["packets_to_client"] >= len(payloads)  # the gateway's RTP, relayed to the worker
            assert relayed["packets_to_peer"] >= 50  # greeting and tone, relayed to the gateway
            stderr = process.stderr()
            assert "allocated 127.0.0.1:" in stderr and "for sip:umworker-node1@example.test" in stderr
            if sniffing:
                host_port = transport["host_port"]
                worker_flows = [f for f in sniffer.flows if host_port in f[:2]]
                assert len(worker_flows) >= len(payloads)
                # The worker's host port only ever talks to the edge's TURN port...
                assert all(turn_port in (sport, dport) for sport, dport, _ in worker_flows)
                # ...and the gateway only gets media from relay ports.
                to_gateway = [sport for sport, dport, _ in sniffer.flows if dport == sipp_media]
                assert to_gateway and all(50000 <= sport <= 59999 for sport in to_gateway)
        else:
            assert transport["kind"] == "direct" and transport["local"][1] == transport["host_port"]
            assert relayed.get("packets_to_client", 0) == 0
    finally:
        process.kill()
