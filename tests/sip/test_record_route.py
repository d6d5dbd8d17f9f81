"""RFC 3261 §12 with a real SBC in the path: a record-routing Kamailio between a SIPp gateway and umedge.
The worker's 200 OK carries Kamailio's Record-Route unchanged, so the gateway's ACK and BYE go through
the proxy by the route set (Kamailio's log shows them loose-routed; without the Record-Route it answers
them 404 and the call fails)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from certs import pki
from tests.conftest import REQUIRE_TOOLS, serving, write_config
from tests.sip import kamailio_proxy
from tests.sip.sipp_tools import sipp_available
from tests.sip.um_nodes import SECURE_PLANS
from tests.worker.caller import free_udp_port

needs_tools = pytest.mark.skipif((not sipp_available() or not shutil.which("kamailio")) and not REQUIRE_TOOLS,
                                 reason="sipp (sip-tester) or kamailio missing")


@needs_tools
@pytest.mark.parametrize("leg", ["tcp", "tls"])
def test_ack_and_bye_follow_the_record_route_through_kamailio(tmp_path: Path, leg: str) -> None:
    """`tls`: Kamailio reaches umedge over MTLS (its own pool certificate) on a secured dial plan with SRTP,
    and record-routes twice (TCP in, TLS out): the 200 OK carries both, in Kamailio's order."""
    overrides: dict[str, dict[str, object]] = {
        "worker": {"rtp_port_min": 43000, "rtp_port_max": 43099, "silence_timeout": 0}}
    if leg == "tls":
        overrides["callrouter"] = dict(SECURE_PLANS)
    files = write_config(tmp_path, overrides)
    with serving(files, "--roles", "callrouter,mailbox,worker") as process:
        tls = None
        if leg == "tls":
            pki.issue(files.certs_dir, "sbc1", [])
            tls = (*pki.paths(files.certs_dir, "sbc1"), files.certs_dir / "ca.crt")
        router = files.port("callrouter", "sip_tls_port" if leg == "tls" else "sip_tcp_port")
        proxy = kamailio_proxy.proxy(tmp_path / "kamailio", f"127.0.0.1:{router}", tls)
        proxy.start()
        try:
            scenario = kamailio_proxy.write_scenario(tmp_path / "rr.xml", pilot="6000" if leg == "tls" else "5000",
                                                     srtp=leg == "tls")
            result = kamailio_proxy.run(scenario, proxy.port, free_udp_port())
        finally:
            proxy.stop()
        kamailio_log = proxy.log_path.read_text()
        assert result.returncode == 0, result.stdout[-1500:] + kamailio_log[-1500:]
        sipp_logs = "".join(p.read_text() for p in tmp_path.glob("rr_*_logs.log"))
        messages = "".join(p.read_text() for p in tmp_path.glob("rr_*_messages.log"))
        stderr = process.stderr()
    # The worker's 200 OK, as it reached SIPp through Kamailio, carries Kamailio's Record-Route values.
    ok = next(block for block in messages.split("\n\n") if "SIP/2.0 200 OK" in block and "CSeq: 2 INVITE" in block)
    routes = [value.strip() for line in re.findall(r"^Record-Route: (.*)$", ok, re.M) for value in line.split(",")]
    assert "RECORD-ROUTE <sip:127.0.0.1:" in sipp_logs.replace("  ", " ")  # SIPp's own check (check_it) saw it
    ftag = _ftag(messages)
    if leg == "tcp":
        assert routes == [f"<sip:127.0.0.1:{proxy.port};transport=tcp;lr;ftag={ftag}>"]
    else:  # double record-routing: the TLS side (towards umedge) on top, then the TCP side (towards SIPp)
        assert len(routes) == 2, routes
        assert re.fullmatch(rf"<sip:127\.0\.0\.1:\d+;transport=tls;r2=on;lr;ftag={ftag}>", routes[0]), routes
        assert routes[1] == f"<sip:127.0.0.1:{proxy.port};transport=tcp;r2=on;lr;ftag={ftag}>", routes
        assert ";transport=tls>" in ok.split("Contact:")[1].split("\n")[0]  # sip-tls: mirrored from the URI
    # ACK and BYE traversed the proxy by the route set, to the worker's Contact.
    for method in ("ACK", "BYE"):
        assert re.search(rf"RRTEST in-dialog {method} loose-routed to sip:worker\d@127\.0\.0\.1:\d+;transport={leg}",
                         kamailio_log), \
            kamailio_log[-2000:]
    assert "without a route set" not in kamailio_log
    assert "Timer H" not in stderr


def _ftag(messages: str) -> str:
    match = re.search(r"From: .*;tag=(\S+)", messages)
    assert match
    return match.group(1)


@needs_tools
def test_the_workers_bye_follows_the_route_set_through_kamailio(tmp_path: Path) -> None:
    """The worker hangs up (no RTP for media_timeout): its BYE carries the route set (Route: Kamailio's
    Record-Route, in order, as the UAS keeps it) and Kamailio loose-routes it to the gateway's Contact."""
    files = write_config(tmp_path, {"worker": {"rtp_port_min": 43100, "rtp_port_max": 43199, "silence_timeout": 0,
                                               "media_timeout": 2}})
    with serving(files, "--roles", "callrouter,mailbox,worker") as process:
        proxy = kamailio_proxy.proxy(tmp_path / "kamailio", f"127.0.0.1:{files.port('callrouter', 'sip_tcp_port')}")
        proxy.start()
        try:
            scenario = kamailio_proxy.write_scenario(tmp_path / "rr.xml", worker_hangs_up=True)
            result = kamailio_proxy.run(scenario, proxy.port, free_udp_port())
        finally:
            proxy.stop()
        kamailio_log = proxy.log_path.read_text()
        assert result.returncode == 0, result.stdout[-1500:] + kamailio_log[-1500:]
        stderr = process.stderr()
    to_gateway = r"RRTEST in-dialog BYE loose-routed to sip:5550177@127\.0\.0\.1:\d+;transport=tcp"
    assert re.search(to_gateway, kamailio_log), kamailio_log[-2000:]
    assert "without a route set" not in kamailio_log and "Traceback" not in stderr
