"""`umedge calls list` shows a SIPp gateway's call on the worker with its media path, and `umedge calls hangup`
ends it with a BYE carrying the operator's reason (SIPp checks the Reason header); the hang-up is logged."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE_TOOLS, serving, umedge, write_config
from tests.sip.sipp_tools import ANSWER_200, pause, play_pcap, recv, sipp_available, sipp_command
from tests.sip.sipp_tools import scenario as sipp_scenario
from tests.worker.caller import free_udp_port, sine_payloads
from tests.worker.sipp_media import voicemail_call, write_rtp_pcap

needs_sipp = pytest.mark.skipif(not sipp_available() and not REQUIRE_TOOLS, reason="sipp (Debian sip-tester) missing")
RTP_RANGE = (42000, 42999)
REASON = "maintenance window"

# The gateway's side: follow the 302, call the worker, talk, then wait for the worker's BYE and check its Reason.
BYE_REASON = (f'<ereg regexp="cause=200;text=&quot;{REASON}&quot;" search_in="hdr" header="Reason:" check_it="true"'
              ' assign_to="reason"/>')


def scenario(path: Path, pcap: Path) -> Path:
    steps = voicemail_call(called="1003") + pause(300) + play_pcap(pcap)
    steps += recv('request="BYE" timeout="30000"', [BYE_REASON]) + ANSWER_200
    path.write_text(sipp_scenario("umedge voicemail from a plain gateway", steps, "contact,m,worker_rtp,reason"))
    return path


def calls(config: Path) -> dict[str, Any]:
    done = umedge("calls", "list", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


@needs_sipp
def test_calls_list_shows_a_sipp_call_and_hangup_ends_it_with_a_bye(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"worker": {"rtp_port_min": RTP_RANGE[0], "rtp_port_max": RTP_RANGE[1],
                                               "silence_timeout": 0}})
    pcap = write_rtp_pcap(tmp_path / "gateway.pcap", sine_payloads(3.0))
    xml = scenario(tmp_path / "hangup.xml", pcap)
    media = free_udp_port()
    while RTP_RANGE[0] <= media <= RTP_RANGE[1] or media >= 50000:
        media = free_udp_port()
    with serving(files, "--roles", "callrouter,mailbox,worker,web") as process:
        sipp = subprocess.Popen(
            sipp_command(xml, f"127.0.0.1:{files.port('callrouter', 'sip_tcp_port')}", timeout=40,
                         recv_timeout_ms=35000, options=["-mi", "127.0.0.1", "-mp", str(media), "-max_socket", "100"]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 15
            listed: list[dict[str, Any]] = []
            while time.monotonic() < deadline:
                listed = calls(files.path)["calls"]
                if listed and listed[0]["packets_in"] > 20:
                    break
                time.sleep(0.3)
            if not listed:
                sipp.kill()
                out, err = sipp.communicate()
                pytest.fail(f"no call listed; SIPp: {out[-1500:]} {err[-1500:]}; node: {process.stderr()[-3000:]}")
            [call] = listed
            assert call["id"].startswith("node1/") and call["node"] == "node1" and call["slot"] == 1
            assert call["caller"].startswith("sip:5550100@") and call["mailbox"] == "1003"
            assert call["media"] == "direct" and call["codec"] == "PCMU" and call["srtp"] is False
            assert call["duration"] > 0 and call["packets_lost"] == 0 and call["jitter_ms"] >= 0
            table = umedge("calls", "list", "--config", str(files.path)).stdout
            assert call["id"][:40] in table and "1 call(s) on node1" in table

            done = umedge("calls", "hangup", call["id"], "--reason", REASON, "--config", str(files.path))
            assert done.returncode == 0 and "hung up" in done.stdout, done.stderr
            out, err = sipp.communicate(timeout=30)
            assert sipp.returncode == 0, out[-2000:] + err[-2000:]  # SIPp got the BYE, with our Reason
            deadline = time.monotonic() + 5
            while calls(files.path)["calls"] and time.monotonic() < deadline:
                time.sleep(0.2)
            assert calls(files.path)["calls"] == []
            assert umedge("calls", "hangup", call["id"], "--config", str(files.path)).returncode == 1  # gone
            assert "admin: cert:node1@admin (operator " in process.stderr()
            assert f"hung up call {call['id']} ({REASON})" in process.stderr()
        finally:
            if sipp.poll() is None:
                sipp.kill()
                sipp.wait()
