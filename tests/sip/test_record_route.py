"""RFC 3261 §12 with a real SBC in the path: a record-routing Kamailio between a SIPp gateway and umedge.
The worker's 200 OK carries Kamailio's Record-Route unchanged, so the gateway's ACK and BYE go through
the proxy by the route set (Kamailio's log shows them loose-routed; without the Record-Route it answers
them 404 and the call fails)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_TOOLS, serving, write_config
from tests.sip import kamailio_proxy
from tests.sip.sipp_tools import sipp_available
from tests.worker.caller import free_udp_port

needs_tools = pytest.mark.skipif((not sipp_available() or not shutil.which("kamailio")) and not REQUIRE_TOOLS,
                                 reason="sipp (sip-tester) or kamailio missing")


@needs_tools
def test_ack_and_bye_follow_the_record_route_through_kamailio(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"worker": {"rtp_port_min": 43000, "rtp_port_max": 43099, "silence_timeout": 0}})
    with serving(files, "--roles", "callrouter,mailbox,worker") as process:
        proxy = kamailio_proxy.proxy(tmp_path / "kamailio", f"127.0.0.1:{files.port('callrouter', 'sip_tcp_port')}")
        proxy.start()
        try:
            scenario = kamailio_proxy.write_scenario(tmp_path / "rr.xml")
            result = kamailio_proxy.run(scenario, proxy.port, free_udp_port())
        finally:
            proxy.stop()
        kamailio_log = proxy.log_path.read_text()
        assert result.returncode == 0, result.stdout[-1500:] + kamailio_log[-1500:]
        sipp_logs = "".join(p.read_text() for p in tmp_path.glob("rr_*_logs.log"))
        messages = "".join(p.read_text() for p in tmp_path.glob("rr_*_messages.log"))
        stderr = process.stderr()
    [record_route] = re.findall(r"RECORD-ROUTE (.*)", sipp_logs)
    assert record_route.strip() == f"<sip:127.0.0.1:{proxy.port};transport=tcp;lr;ftag={_ftag(messages)}>"
    # Kamailio's Record-Route is in the INVITE it relayed and, the same, in the worker's 200 OK.
    ok = next(block for block in messages.split("\n\n") if "SIP/2.0 200 OK" in block and "CSeq: 2 INVITE" in block)
    assert f"Record-Route: {record_route.strip()}" in ok
    # ACK and BYE traversed the proxy by the route set, to the worker's Contact.
    for method in ("ACK", "BYE"):
        assert re.search(rf"RRTEST in-dialog {method} loose-routed to sip:worker\d@127\.0\.0\.1:\d+", kamailio_log), \
            kamailio_log[-2000:]
    assert "without a route set" not in kamailio_log
    assert "Timer H" not in stderr


def _ftag(messages: str) -> str:
    match = re.search(r"From: .*;tag=(\S+)", messages)
    assert match
    return match.group(1)
