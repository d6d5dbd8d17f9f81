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
from tests.sip.sipp_tools import (
    ANSWER_200,
    Gateway,
    follow_redirect,
    pause,
    recv,
    run_command,
    scenario,
    sdp_offer,
    sipp_command,
)

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


def write_scenario(path: Path, *, pilot: str = "5000", called: str = "1001", caller: str = "5550177",
                   srtp: bool = False, worker_hangs_up: bool = False) -> Path:
    """`srtp`: an RTP/SAVP offer with an SDES key (what a secured dial plan requires); `worker_hangs_up`:
    SIPp waits for the worker's BYE and answers it instead of sending its own."""
    gateway = Gateway("SIPp behind an SBC", caller, rport=True)
    crypto = ["a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"] if srtp else []
    steps = follow_redirect(
        gateway, pilot=pilot, called=called,
        sdp=sdp_offer("[local_ip]", session="1 1", proto="RTP/SAVP" if srtp else "RTP/AVP", formats="0",
                      attributes=["a=rtpmap:0 PCMU/8000", *crypto]),
        contact_ereg='<ereg regexp="&lt;(sip:[^>]+)>" search_in="hdr" header="Contact:" check_it="true"'
                     ' assign_to="contact,worker"/>',
        setdest=False, worker_uri="[$worker]", ack_uri="[next_url]", routes=True, answer='response="200" rrs="true"',
        answer_actions=['<ereg regexp=".*" search_in="hdr" header="Record-Route:" check_it="true"'
                        ' assign_to="record_route"/>', '<log message="RECORD-ROUTE [$record_route]"/>'])
    if worker_hangs_up:  # (media_timeout: SIPp sends no RTP): its BYE must reach SIPp through the proxy
        steps += recv('request="BYE" timeout="12000"') + ANSWER_200
    else:
        steps += pause(1500) + gateway.request("BYE", "[next_url]", 3, via=gateway.via("[branch-5]"), routes=True)
        steps += recv('response="200" crlf="true"')
    path.write_text(scenario("umedge call through a record-routing proxy", steps, "contact"))
    return path


def run(scenario: Path, proxy_port: int, media_port: int, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    command = sipp_command(scenario, f"127.0.0.1:{proxy_port}", timeout=timeout, recv_timeout_ms=15000,
                           options=["-mp", str(media_port), "-max_socket", "100", "-trace_msg", "-trace_logs"])
    return run_command(command, scenario.parent, timeout)
