"""SIPp as an IPv6-only UM IP gateway: the call router's 302, the worker's 200, ACK, a G.711 pcap
played with play_pcap_audio, BYE; every SIP and RTP packet on ::1."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.sip import sipp_tools as sipp


def write_scenario(path: Path, pcap: Path, *, pilot: str = "5000", called: str = "1001", caller: str = "5550106",
                   wait_ms: int = 2500, talk_ms: int = 5000, media_host: str = "::1") -> Path:
    # SIPp writes [local_ip] and [media_ip] of an IPv6 socket with brackets ([::1]): right in SIP,
    # wrong in SDP, so the SDP names the media address as a literal.
    gateway = sipp.Gateway("SIPp v6", caller, rport=True)
    worker = "[$worker_uri_host]:[$worker_port];transport=tcp"
    steps = sipp.follow_redirect(
        gateway, pilot=pilot, called=called, sdp=sipp.sdp_offer(media_host, family="IP6"),
        contact_ereg='<ereg regexp="sip:[0-9]+@(\\[([0-9a-f:]+)\\]):([0-9]+);transport=tcp" search_in="hdr"'
                     ' header="Contact:" check_it="true" assign_to="contact,worker_uri_host,worker_host,worker_port"/>',
        worker_uri=f"sip:{pilot}@{worker}", answer='response="200" rtd="true"',
        answer_actions=['<ereg regexp="c=IN IP6 ([0-9a-f:]+)" search_in="body" check_it="true"'
                        ' assign_to="c,worker_media"/>',
                        '<ereg regexp="m=audio ([0-9]+)" search_in="body" check_it="true" assign_to="m,worker_rtp"/>'])
    steps += sipp.leave_message(gateway, f"sip:worker@{worker}", pcap, wait_ms=wait_ms, talk_ms=talk_ms)
    path.write_text(sipp.scenario("umedge voicemail from an IPv6 gateway", steps,
                                  "contact,worker_uri_host,c,m,worker_rtp,worker_media"))
    return path


def run(scenario: Path, router_port: int, media_port: int, *, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    """One call from ::1 to the router on [::1]; SIPp's own exit code says whether it completed."""
    command = sipp.sipp_command(scenario, f"[::1]:{router_port}", local_ip="::1", timeout=timeout,
                                recv_timeout_ms=20000,
                                options=["-mi", "::1", "-mp", str(media_port), "-max_socket", "100", "-trace_msg"])
    return sipp.run_command(command, scenario.parent, timeout)
