"""Offers whose connection address is not an address of its family get 488 with a Warning, never 200 and
then a failing media tick (issue 21: the mutation fuzzer's `c=IN IP4 a.b.c.d`, `-1.0.0.1`, `999.1.1.1`)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.conftest import NodeFiles, ServeProcess, write_config
from tests.worker.caller import Caller, sdp_offer

BAD_ADDRESSES = ["IN IP4 a.b.c.d", "IN IP4 -1.0.0.1", "IN IP4 999.1.1.1", "IN IP4 10.0.0.\u00e9",
                 "IN IP4 2001:db8::1", "IN IP6 192.0.2.1", "IN IP4 gateway.example.test"]


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    files = write_config(tmp_path_factory.mktemp("bad-sdp"), {"worker": {"rtp_port_min": 45000,
                                                                         "rtp_port_max": 45099}})
    process = ServeProcess(files.path, "--roles", "mailbox,worker")
    try:
        process.wait_ready()
        yield files, process
    finally:
        process.kill()


@pytest.mark.parametrize("connection", BAD_ADDRESSES)
def test_a_bad_connection_address_gets_488_with_a_warning(worker: tuple[NodeFiles, ServeProcess],
                                                          connection: str) -> None:
    files, process = worker
    offer = sdp_offer("127.0.0.1", 4000).replace("c=IN IP4 127.0.0.1", f"c={connection}")

    async def invite() -> tuple[int, str]:
        caller = Caller()
        try:
            response = await caller.call(int(files.values["worker"]["sip_ports"][0]), "5000", "1001", offer)  # type: ignore[index]
            return response.status, response.headers.get("Warning") or ""
        finally:
            await caller.close()

    status, warning = asyncio.run(invite())
    assert status == 488 and warning.startswith("399 ") and "address literal" in warning
    log = process.stderr()
    assert "Traceback" not in log and "critical" not in log
