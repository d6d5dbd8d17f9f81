"""SIPp as a plain UM IP gateway (no ICE): a scenario that follows the call router's 302 to the worker
and plays a G.711 pcap with play_pcap_audio, and a pure-Python pcap writer for RTP streams."""

from __future__ import annotations

import struct
import subprocess
import time
from pathlib import Path

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


VOICEMAIL_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="umedge voicemail from a plain gateway">
  <send>
    <![CDATA[
      INVITE sip:{pilot}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/TCP [local_ip]:[local_port];branch=[branch]
      From: "SIPp gateway" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      To: <sip:{called}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port];transport=tcp>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=gateway 53655765 2353687637 IN IP4 [media_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="302">
    <action>
      <ereg regexp="sip:[0-9]+@([0-9.]+):([0-9]+);transport=tcp" search_in="hdr" header="Contact:"
            check_it="true" assign_to="contact,worker_host,worker_port"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      ACK sip:{pilot}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/TCP [local_ip]:[local_port];branch=[branch-1]
      From: "SIPp gateway" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop>
    <action>
      <setdest host="[$worker_host]" port="[$worker_port]" protocol="tcp"/>
    </action>
  </nop>
  <send>
    <![CDATA[
      INVITE sip:{pilot}@[$worker_host]:[$worker_port];transport=tcp SIP/2.0
      Via: SIP/2.0/TCP [local_ip]:[local_port];branch=[branch]
      From: "SIPp gateway" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      To: <sip:{called}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port];transport=tcp>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=gateway 53655765 2353687638 IN IP4 [media_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200" rtd="true">
    <action>
      <!-- no rtcp-mux offered: no a=rtcp-mux, RTP on an even port, RTCP on port + 1 (no a=rtcp naming it) -->
      <ereg regexp="a=rtcp" search_in="body" check_it_inverse="true" assign_to="m"/>
      <ereg regexp="m=audio ([0-9]*[02468]) " search_in="body" check_it="true" assign_to="m,worker_rtp"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      ACK sip:{pilot}@[$worker_host]:[$worker_port];transport=tcp SIP/2.0
      Via: SIP/2.0/TCP [local_ip]:[local_port];branch=[branch-9]
      From: "SIPp gateway" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="{wait_ms}"/>
  <nop>
    <action>
      <exec play_pcap_audio="{pcap}"/>
    </action>
  </nop>
  <pause milliseconds="{talk_ms}"/>
  <send>
    <![CDATA[
      BYE sip:worker@[$worker_host]:[$worker_port];transport=tcp SIP/2.0
      Via: SIP/2.0/TCP [local_ip]:[local_port];branch=[branch-5]
      From: "SIPp gateway" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
  <Reference variables="contact,m,worker_rtp"/>
</scenario>
"""


def write_voicemail_scenario(path: Path, pcap: Path, *, pilot: str = "5000", called: str = "1001",
                             caller: str = "5550100", wait_ms: int = 2500, talk_ms: int = 5000) -> Path:
    path.write_text(VOICEMAIL_SCENARIO.format(pilot=pilot, called=called, caller=caller, wait_ms=wait_ms,
                                              talk_ms=talk_ms, pcap=pcap.name))
    return path


def run_voicemail_sipp(scenario: Path, router_port: int, media_port: int, *, calls: int = 1, rate: int = 1,
                       limit: int | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    command = ["sipp", "-sf", str(scenario), "-t", "tn", f"127.0.0.1:{router_port}", "-i", "127.0.0.1",
               "-mi", "127.0.0.1", "-mp", str(media_port), "-m", str(calls), "-r", str(rate), "-nostdin",
               "-trace_err", "-max_socket", "1000", "-timeout", f"{int(timeout)}s", "-timeout_error",
               "-recv_timeout", "20000",
               "-max_recv_loops", "100000", "-max_sched_loops", "100000"]
    if limit is not None:
        command += ["-l", str(limit)]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 30, cwd=str(scenario.parent),
                            stdin=subprocess.DEVNULL)
    result.elapsed = time.monotonic() - started  # type: ignore[attr-defined]
    return result
