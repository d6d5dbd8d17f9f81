"""SIPp as a plain UM IP gateway (no ICE): a scenario that follows the call router's 302 to the worker
and plays a G.711 pcap with play_pcap_audio, and a pure-Python pcap writer for RTP streams."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

from tests.sip import sipp_tools as sipp

PCAP_HEADER = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # Ethernet link type


def _checksum(data: bytes) -> int:
    if len(data) & 1:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_rtp_pcap(path: Path, payloads: list[bytes], pt: int = 0, ssrc: int = 0x1234ABCD, seq: int = 1000,
                   timestamp: int = 160000, src: tuple[str, int] = ("127.0.0.1", 6000),
                   dst: tuple[str, int] = ("127.0.0.1", 7000), ptime: float = 0.02) -> Path:
    """A pcap of one RTP stream (Ethernet/IPv4/UDP), one packet per payload every `ptime` seconds."""
    import socket

    records = [PCAP_HEADER]
    start = 1_700_000_000.0
    for index, payload in enumerate(payloads):
        rtp = struct.pack("!BBHII", 0x80, (0x80 if index == 0 else 0) | pt, (seq + index) & 0xFFFF,
                          (timestamp + 160 * index) & 0xFFFFFFFF, ssrc) + payload
        udp_len = 8 + len(rtp)
        pseudo = socket.inet_aton(src[0]) + socket.inet_aton(dst[0]) + struct.pack("!BBH", 0, 17, udp_len)
        udp = struct.pack("!HHHH", src[1], dst[1], udp_len, 0) + rtp
        udp = udp[:6] + struct.pack("!H", _checksum(pseudo + udp) or 0xFFFF) + udp[8:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, index & 0xFFFF, 0, 64, 17, 0,
                         socket.inet_aton(src[0]), socket.inet_aton(dst[0]))
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        when = start + index * ptime
        records.append(struct.pack("<IIII", int(when), int(round((when % 1) * 1e6)) % 1000000, len(frame),
                                   len(frame)) + frame)
    path.write_bytes(b"".join(records))
    return path


GATEWAY_CALLER = "5550100"


def voicemail_call(*, pilot: str = "5000", called: str = "1001", caller: str = GATEWAY_CALLER) -> str:
    """The gateway's steps up to the worker's answer: follow the 302 over TCP, offer PCMU and telephone-event
    without rtcp-mux and check that the answer keeps RTP on an even port with RTCP on the next one."""
    gateway = sipp.Gateway("SIPp gateway", caller)
    return sipp.follow_redirect(
        gateway, pilot=pilot, called=called, sdp=sipp.sdp_offer("[media_ip]"),
        contact_ereg='<ereg regexp="sip:[0-9]+@([0-9.]+):([0-9]+);transport=tcp" search_in="hdr" header="Contact:"'
                     ' check_it="true" assign_to="contact,worker_host,worker_port"/>',
        pilot_ack_via=gateway.via("[branch-1]"),
        worker_uri=f"sip:{pilot}@[$worker_host]:[$worker_port];transport=tcp", answer='response="200" rtd="true"',
        answer_actions=[
            "<!-- no rtcp-mux offered: no a=rtcp-mux, RTP on an even port, RTCP on port + 1 (no a=rtcp naming it) -->",
            '<ereg regexp="a=rtcp" search_in="body" check_it_inverse="true" assign_to="m"/>',
            '<ereg regexp="m=audio ([0-9]*[02468]) " search_in="body" check_it="true" assign_to="m,worker_rtp"/>'])


def write_voicemail_scenario(path: Path, pcap: Path, *, pilot: str = "5000", called: str = "1001",
                             caller: str = GATEWAY_CALLER, wait_ms: int = 2500, talk_ms: int = 5000) -> Path:
    """The voicemail call: wait for the greeting, play `pcap` as the message, hang up."""
    gateway = sipp.Gateway("SIPp gateway", caller)
    steps = voicemail_call(pilot=pilot, called=called, caller=caller)
    steps += sipp.leave_message(gateway, "sip:worker@[$worker_host]:[$worker_port];transport=tcp", pcap,
                                wait_ms=wait_ms, talk_ms=talk_ms)
    path.write_text(sipp.scenario("umedge voicemail from a plain gateway", steps, "contact,m,worker_rtp"))
    return path


def run_voicemail_sipp(scenario: Path, router_port: int, media_port: int, *, calls: int = 1, rate: int = 1,
                       limit: int | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = sipp.sipp_command(scenario, f"127.0.0.1:{router_port}", calls=calls, rate=rate, timeout=timeout,
                                recv_timeout_ms=20000, limit=limit,
                                options=["-mi", "127.0.0.1", "-mp", str(media_port), "-max_socket", "1000",
                                         *sipp.BUSY])
    return sipp.run_command(command, scenario.parent, timeout)
