"""MWI through a record-routing proxy (RFC 3261 §12, RFC 6665 §4.1.2): a phone subscribes through Kamailio,
the UM service's 200 carries Kamailio's Record-Route, and every NOTIFY goes back by that route set (Kamailio's
log shows it loose-routed; without the Route it would go around the proxy)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_TOOLS, serving
from tests.delivery.support import node_config
from tests.mwi.phone import Phone
from tests.sip import kamailio_proxy

needs_kamailio = pytest.mark.skipif(not shutil.which("kamailio") and not REQUIRE_TOOLS, reason="kamailio missing")


@needs_kamailio
def test_notify_follows_the_record_route(tmp_path: Path) -> None:
    files = node_config(tmp_path, {"mode": "off"})
    with serving(files, "--roles", "mailbox,worker"):
        proxy = kamailio_proxy.proxy(tmp_path / "kamailio", f"127.0.0.1:{files.port('mailbox', 'sip_tcp_port')}")
        proxy.start()
        try:
            async def scenario() -> None:
                phone = await Phone(proxy.port).start()  # SUBSCRIBE to the proxy, which relays it to umedge
                try:
                    answer = await phone.subscribe(120)
                    assert answer.status == 200
                    assert f"<sip:127.0.0.1:{proxy.port};transport=tcp;lr" in (answer.headers.get("Record-Route") or "")
                    first = await phone.listener.next(3.0, after=0)
                    assert first.summary["messages-waiting"] == "no"
                    assert first.request.headers.get("Record-Route") is None  # what Kamailio relayed: Route consumed
                finally:
                    await phone.close()

            asyncio.run(scenario())
        finally:
            proxy.stop()
        log = proxy.log_path.read_text()
    assert "RRTEST initial SUBSCRIBE" in log
    assert "RRTEST in-dialog NOTIFY loose-routed" in log, log[-2000:]
