"""SIPp as an IPv6-only UM IP gateway: the call router's 302, the worker's 200, ACK, a G.711 pcap
played with play_pcap_audio, BYE; every SIP and RTP packet on ::1."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

# SIPp writes [local_ip] and [media_ip] of an IPv6 socket with brackets ([::1]): right in SIP,
# wrong in SDP, so the SDP names the media address as a literal.
SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="umedge voicemail from an IPv6 gateway">
  <send>
    <![CDATA[
      INVITE sip:{pilot}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/TCP [local_ip]:[local_port];branch=[branch];rport
      From: "SIPp v6" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      To: <sip:{called}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port];transport=tcp>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=gateway 53655765 2353687637 IN IP6 {media_host}
      s=-
      c=IN IP6 {media_host}
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="302">
    <action>
      <ereg regexp="sip:[0-9]+@(\\[([0-9a-f:]+)\\]):([0-9]+);transport=tcp" search_in="hdr" header="Contact:"
            check_it="true" assign_to="contact,worker_uri_host,worker_host,worker_port"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      ACK sip:{pilot}@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: "SIPp v6" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
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
      INVITE sip:{pilot}@[$worker_uri_host]:[$worker_port];transport=tcp SIP/2.0
      Via: SIP/2.0/TCP [local_ip]:[local_port];branch=[branch];rport
      From: "SIPp v6" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      To: <sip:{called}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port];transport=tcp>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=gateway 53655765 2353687638 IN IP6 {media_host}
      s=-
      c=IN IP6 {media_host}
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200" rtd="true">
    <action>
      <ereg regexp="c=IN IP6 ([0-9a-f:]+)" search_in="body" check_it="true" assign_to="c,worker_media"/>
      <ereg regexp="m=audio ([0-9]+)" search_in="body" check_it="true" assign_to="m,worker_rtp"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      ACK sip:{pilot}@[$worker_uri_host]:[$worker_port];transport=tcp SIP/2.0
      Via: SIP/2.0/TCP [local_ip]:[local_port];branch=[branch-9];rport
      From: "SIPp v6" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
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
      BYE sip:worker@[$worker_uri_host]:[$worker_port];transport=tcp SIP/2.0
      Via: SIP/2.0/TCP [local_ip]:[local_port];branch=[branch-5];rport
      From: "SIPp v6" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
  <Reference variables="contact,worker_uri_host,c,m,worker_rtp,worker_media"/>
</scenario>
"""


def write_scenario(path: Path, pcap: Path, *, pilot: str = "5000", called: str = "1001", caller: str = "5550106",
                   wait_ms: int = 2500, talk_ms: int = 5000, media_host: str = "::1") -> Path:
    path.write_text(SCENARIO.format(pilot=pilot, called=called, caller=caller, wait_ms=wait_ms, talk_ms=talk_ms,
                                    pcap=pcap.name, media_host=media_host))
    return path


def run(scenario: Path, router_port: int, media_port: int, *, timeout: float = 40) -> subprocess.CompletedProcess[str]:
    """One call from ::1 to the router on [::1]; SIPp's own exit code says whether it completed."""
    command = ["sipp", "-sf", str(scenario), "-t", "tn", f"[::1]:{router_port}", "-i", "::1", "-mi", "::1",
               "-mp", str(media_port), "-max_socket", "100", "-m", "1", "-r", "1", "-nostdin", "-trace_err",
               "-trace_msg", "-timeout", f"{int(timeout)}s", "-timeout_error", "-recv_timeout", "20000"]
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 30, cwd=str(scenario.parent),
                            stdin=subprocess.DEVNULL)
    result.elapsed = time.monotonic() - started  # type: ignore[attr-defined]
    return result
