"""RFC 5780 NAT behaviour discovery: coturn's turnutils_natdiscovery against a node with two addresses.

Loopback carries every 127/8 address, so 127.0.0.1 and 127.0.0.2 are the two addresses of one host here,
as two interfaces of an edge would be.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from edge import stun
from edge.stun import Attr
from edge.stun.discovery import DiscoveryAddresses, answer_binding
from tests.conftest import REQUIRE_TOOLS, ServeProcess, free_port, umedge, write_config

ADDRESSES = DiscoveryAddresses(("192.0.2.1", 3478), ("192.0.2.2", 3479))
CLIENT = ("203.0.113.9", 40000)


@pytest.mark.parametrize(("flags", "origin"), [
    (None, ("192.0.2.1", 3478)), (b"\0\0\0\0", ("192.0.2.1", 3478)), (b"\0\0\0\x02", ("192.0.2.1", 3479)),
    (b"\0\0\0\x04", ("192.0.2.2", 3478)), (b"\0\0\0\x06", ("192.0.2.2", 3479))])
def test_change_request_picks_the_origin(flags: bytes | None, origin: tuple[str, int]) -> None:
    request = stun.Message(stun.BINDING, stun.REQUEST, None, [] if flags is None else [(Attr.CHANGE_REQUEST, flags)])
    response, sent_from = answer_binding(request, CLIENT, ADDRESSES.primary, ADDRESSES)
    assert sent_from == origin and response.msg_class == stun.SUCCESS
    assert response.xor_address()[:2] == CLIENT
    assert stun.decode_address(response.get(Attr.RESPONSE_ORIGIN))[:2] == origin
    assert stun.decode_address(response.get(Attr.OTHER_ADDRESS))[:2] == ("192.0.2.2", 3479)


def test_other_address_differs_in_both_from_where_the_request_came() -> None:
    request = stun.Message(stun.BINDING, stun.REQUEST)
    for local, other in zip(ADDRESSES.all, reversed(ADDRESSES.all), strict=True):
        response, sent_from = answer_binding(request, CLIENT, local, ADDRESSES)
        assert sent_from == local and stun.decode_address(response.get(Attr.OTHER_ADDRESS))[:2] == other


def test_a_malformed_change_request_gets_400_from_where_it_came() -> None:
    request = stun.Message(stun.BINDING, stun.REQUEST, None, [(Attr.CHANGE_REQUEST, b"\x06")])
    response, sent_from = answer_binding(request, CLIENT, ADDRESSES.alternate, ADDRESSES)
    assert response.error_code()[0] == 400 and sent_from == ADDRESSES.alternate


@pytest.mark.parametrize(("edge", "key"), [
    ({"listen_address": "0.0.0.0", "alternate_address": "127.0.0.2"}, "[edge].listen_address"),
    ({"listen_address": "127.0.0.1", "alternate_address": "127.0.0.1"}, "[edge].alternate_address"),
    ({"listen_address": "127.0.0.1", "alternate_address": "::1"}, "[edge].alternate_address"),
    ({"listen_address": "127.0.0.1", "alternate_address": "127.0.0.2", "turn_udp_port": 40001,
      "turn_tcp_port": 40001, "alternate_port": 40001}, "[edge].alternate_port"),
])
def test_config_errors_name_the_key(tmp_path: Path, edge: dict[str, object], key: str) -> None:
    files = write_config(tmp_path, {"edge": edge})
    result = umedge("check-config", "--config", str(files.path))
    assert result.returncode == 2 and f"{key}" in result.stderr and "allowed:" in result.stderr


@pytest.mark.skipif(not shutil.which("turnutils_natdiscovery") and not REQUIRE_TOOLS,
                    reason="coturn's turnutils_natdiscovery is not installed")
def test_turnutils_natdiscovery_finds_mapping_and_filtering(tmp_path: Path) -> None:
    alternate_port = free_port()
    files = write_config(tmp_path, {"node": {"roles": ["edge"]}, "edge": {
        "listen_address": "127.0.0.1", "alternate_address": "127.0.0.2", "alternate_port": alternate_port}})
    process = ServeProcess(files.path)
    try:
        process.wait_ready()
        port = files.port("edge", "turn_udp_port")
        result = subprocess.run(["turnutils_natdiscovery", "-m", "-f", "-p", str(port), "127.0.0.1"],
                                capture_output=True, text=True, timeout=60)
        output = result.stdout + result.stderr
        assert "NAT with Endpoint Independent Mapping!" in output, output
        assert "NAT with Endpoint Independent Filtering!" in output, output
        assert f"Response origin: : 127.0.0.2:{alternate_port}" in output  # from the changed address and port
        assert f"Other addr: : 127.0.0.2:{alternate_port}" in output
        assert "Traceback" not in process.stderr()
    finally:
        process.kill()
