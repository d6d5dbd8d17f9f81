"""[callrouter] mailbox_servers given as IPv6 literals: accepted with and without brackets, probed and asked
over IPv6 (URIs bracketed), and an IPv6 gateway's call routed by a router on one node to the worker of a
mailbox server on another, all on ::1."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_TOOLS, ServeProcess, umedge, write_config
from tests.ipv6 import sipp6
from tests.sip.sipp_tools import sipp_available
from tests.worker.caller import free_udp_port, sine_payloads
from tests.worker.sipp_media import write_rtp_pcap
from um.directory import DirectoryError, parse_servers

needs_sipp = pytest.mark.skipif(not sipp_available() and not REQUIRE_TOOLS, reason="sipp (Debian sip-tester) missing")


@pytest.mark.parametrize("given,stored", [("::1", "::1"), ("[::1]", "::1"), ("[2001:DB8::0:1]", "2001:db8::1"),
                                          ("2001:db8::1", "2001:db8::1"), ("192.0.2.20", "192.0.2.20"),
                                          ("mbx2.example.test", "mbx2.example.test")])
def test_server_addresses_accept_ipv6_literals(given: str, stored: str) -> None:
    [server] = parse_servers([{"name": "mbx2", "address": given}])
    assert server.address == stored


@pytest.mark.parametrize("bad", ["[mbx2.example.test]", "[::1", "::1]", "2001:db8::zz", "[]"])
def test_bad_server_addresses_are_refused_naming_what_is_allowed(bad: str) -> None:
    with pytest.raises(DirectoryError, match="IPv6 with or without"):
        parse_servers([{"name": "mbx2", "address": bad}])


@needs_sipp
@pytest.mark.parametrize("address", ["::1", "[::1]"])
def test_a_router_sends_an_ipv6_call_to_a_mailbox_server_given_as_an_ipv6_literal(tmp_path: Path,
                                                                                  address: str) -> None:
    v6 = {"listen_address": "::1"}
    mailbox_node = write_config(tmp_path, {"node": {"name": "mbx-b", "state_dir": "state-b", **v6},
                                           "mailbox": {"call_routers": ["::1"]},
                                           "worker": {"silence_timeout": 0}}, name="b.toml")
    router_node = write_config(tmp_path, {
        "node": {"name": "cr-a", "state_dir": "state-a", **v6},
        "callrouter": {"gateways": [{"address": "::1", "name": "gateway-v6"}],
                       "mailboxes": [{"extension": "1000-1009", "server": "mbx-b"}],
                       "mailbox_servers": [{"name": "mbx-b", "address": address,
                                            "tcp_port": mailbox_node.port("mailbox", "sip_tcp_port")}]}},
        name="a.toml")
    payloads = sine_payloads(1.2)
    scenario = sipp6.write_scenario(tmp_path / "remote-v6.xml", write_rtp_pcap(tmp_path / "gw.pcap", payloads),
                                    called="1004", wait_ms=2500, talk_ms=1800)
    b = ServeProcess(mailbox_node.path, "--roles", "mailbox,worker")
    a = None
    try:
        b.wait_ready()
        a = ServeProcess(router_node.path, "--roles", "callrouter")
        a.wait_ready()
        result = sipp6.run(scenario, router_node.port("callrouter", "sip_tcp_port"), free_udp_port())
        assert result.returncode == 0, result.stdout[-2000:] + a.stderr()[-2000:]
        messages = "".join(p.read_text() for p in tmp_path.glob("remote-v6_*_messages.log"))
        worker_port = mailbox_node.values["worker"]["sip_ports"][0]  # type: ignore[index]
        assert f"Contact: <sip:5000@[::1]:{worker_port};transport=tcp>" in messages  # mailbox server B's worker
        listed: list[dict[str, object]] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not listed:
            listed = json.loads(umedge("voicemail", "list", "--json", "--config", str(mailbox_node.path)).stdout)
            time.sleep(0.1)
        assert [m["mailbox"] for m in listed] == ["1004"]
        assert "is down" not in a.stderr()
    finally:
        b.kill()
        if a is not None:
            a.kill()
