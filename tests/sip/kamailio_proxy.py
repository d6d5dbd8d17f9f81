"""Kamailio as a record-routing SBC between a SIPp gateway and umedge, and the SIPp scenario that calls
through it: INVITE to the pilot (the router's 302 comes back through the proxy), INVITE to the worker's
Contact through the proxy, then ACK and BYE sent by the route set the worker's 200 OK gave back
(SIPp's [routes] and [next_url], rrs="true"). Kamailio logs each request with the tag RRTEST; an
in-dialog request without a route set through it gets 404 from it, so a 200 without Record-Route
fails the call."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.conftest import free_port
from tests.mediation.kamailio import Kamailio

ROUTE = """request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            xlog("L_NOTICE", "RRTEST in-dialog $rm loose-routed to $ru\\n");
            t_relay();
            exit;
        }}
        if (is_method("ACK")) {{
            t_check_trans();
            exit;
        }}
        xlog("L_NOTICE", "RRTEST in-dialog $rm without a route set\\n");
        sl_send_reply("404", "Not Here - no route set through this proxy");
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    t_check_trans();
    record_route();
    if (uri == myself) {{
        $du = "sip:ROUTER;transport=tcp";
    }}
    xlog("L_NOTICE", "RRTEST initial $rm to $ru\\n");
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}
"""


TLS_CONFIG = """[server:default]
method = TLSv1.2+
verify_certificate = no
require_certificate = no
private_key = {key}
certificate = {crt}

[client:default]
method = TLSv1.2+
verify_certificate = yes
require_certificate = yes
private_key = {key}
certificate = {crt}
ca_list = {ca}
"""


def proxy(directory: Path, router: str, tls: tuple[Path, Path, Path] | None = None) -> Kamailio:
    """A record-routing Kamailio on 127.0.0.1 that sends requests for itself to `router` ("host:port").

    With `tls` (certificate, key, CA) its leg to umedge is MTLS: a TLS socket too, requests for itself
    go to `router` over TLS, and Kamailio record-routes twice when it switches transports (r2=on).
    """
    extra = 'modparam("rr", "append_fromtag", 1)\n'
    route = ROUTE.replace("ROUTER", router)
    modules: tuple[str, ...] = ("rr",)
    if tls is not None:
        crt, key, ca = tls
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "tls.cfg").write_text(TLS_CONFIG.format(crt=crt, key=key, ca=ca))
        extra += f'modparam("tls", "config", "{directory / "tls.cfg"}")\n'
        route = route.replace(";transport=tcp", ";transport=tls")
        modules = ("tls", "rr")
        head = f"enable_tls=yes\nlisten=tls:127.0.0.1:{free_port()}\n"
        return Kamailio(directory, route=route, modules=modules, extra=extra, head=head)
    return Kamailio(directory, route=route, modules=modules, extra=extra)


SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="umedge call through a record-routing proxy">
  <send>
    <![CDATA[
      INVITE sip:{pilot}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/TCP [local_ip]:[local_port];branch=[branch];rport
      From: "SIPp behind an SBC" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      To: <sip:{called}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port];transport=tcp>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=gateway 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0
      m=audio [media_port] {proto} 0
      a=rtpmap:0 PCMU/8000
{crypto}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="302">
    <action>
      <ereg regexp="&lt;(sip:[^>]+)>" search_in="hdr" header="Contact:" check_it="true" assign_to="contact,worker"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      ACK sip:{pilot}@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      From: "SIPp behind an SBC" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      [last_To:]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <send>
    <![CDATA[
      INVITE [$worker] SIP/2.0
      Via: SIP/2.0/TCP [local_ip]:[local_port];branch=[branch];rport
      From: "SIPp behind an SBC" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      To: <sip:{called}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 2 INVITE
      Contact: <sip:{caller}@[local_ip]:[local_port];transport=tcp>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=gateway 1 2 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0
      m=audio [media_port] {proto} 0
      a=rtpmap:0 PCMU/8000
{crypto}
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="200" rrs="true">
    <action>
      <ereg regexp=".*" search_in="hdr" header="Record-Route:" check_it="true" assign_to="record_route"/>
      <log message="RECORD-ROUTE [$record_route]"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/TCP [local_ip]:[local_port];branch=[branch-9];rport
      From: "SIPp behind an SBC" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: 2 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
{ending}
  <Reference variables="contact"/>
</scenario>
"""
CALLER_HANGS_UP = """  <pause milliseconds="1500"/>
  <send>
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/TCP [local_ip]:[local_port];branch=[branch-5];rport
      From: "SIPp behind an SBC" <sip:{caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      [last_To:]
      [routes]
      Call-ID: [call_id]
      CSeq: 3 BYE
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>"""
# The worker hangs up (media_timeout: SIPp sends no RTP): its BYE must reach SIPp through the proxy.
WORKER_HANGS_UP = """  <recv request="BYE" timeout="12000"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>"""


def write_scenario(path: Path, *, pilot: str = "5000", called: str = "1001", caller: str = "5550177",
                   srtp: bool = False, worker_hangs_up: bool = False) -> Path:
    """`srtp`: an RTP/SAVP offer with an SDES key (what a secured dial plan requires); `worker_hangs_up`:
    SIPp waits for the worker's BYE and answers it instead of sending its own."""
    crypto = "      a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk" + "\n"
    path.write_text(SCENARIO.format(pilot=pilot, called=called, caller=caller, proto="RTP/SAVP" if srtp else "RTP/AVP",
                                    crypto=crypto if srtp else "",
                                    ending=WORKER_HANGS_UP if worker_hangs_up else
                                    CALLER_HANGS_UP.replace("{caller}", caller)))
    return path


def run(scenario: Path, proxy_port: int, media_port: int, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    command = ["sipp", "-sf", str(scenario), "-t", "tn", f"127.0.0.1:{proxy_port}", "-i", "127.0.0.1",
               "-mp", str(media_port), "-max_socket", "100", "-m", "1", "-r", "1", "-nostdin", "-trace_err",
               "-trace_msg", "-trace_logs", "-timeout", f"{int(timeout)}s", "-timeout_error",
               "-recv_timeout", "15000"]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout + 30, cwd=str(scenario.parent),
                          stdin=subprocess.DEVNULL)
