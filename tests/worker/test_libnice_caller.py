"""libnice as the caller's ICE agent with two components and no rtcp-mux (baresip's default): the worker
answers with two relay candidates on its edge (RTP even, RTCP the odd port above), both components
connect, the voicemail is stored, and RTCP flows on component 2 both ways."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from tests.conftest import ServeProcess, write_config
from tests.msturn.libnice_driver import SYSTEM_PYTHON, needs_libnice, system_env
from tests.worker.caller import Caller, stored_message
from tests.worker.webauth import worker_status
from um.worker.store import VoicemailStore

DRIVER = Path(__file__).with_name("libnice_caller.py")


pytestmark = needs_libnice


def offer(local: dict[str, object]) -> str:
    candidates = [str(c) for c in local["candidates"]]  # type: ignore[attr-defined]
    rtp = next(c for c in candidates if c.split()[1] == "1")
    rtcp = next(c for c in candidates if c.split()[1] == "2")
    host, rtp_port, rtcp_port = rtp.split()[4], rtp.split()[5], rtcp.split()[5]
    lines = ["v=0", f"o=libnice 1 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
             f"m=audio {rtp_port} RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000",
             "a=fmtp:101 0-16", "a=ptime:20", f"a=rtcp:{rtcp_port} IN IP4 {host}",
             f"a=ice-ufrag:{local['ufrag']}", f"a=ice-pwd:{local['pwd']}",
             *[f"a=candidate:{c}" for c in candidates], "a=sendrecv"]
    return "\r\n".join(lines) + "\r\n"


def test_libnice_two_components_without_mux_leave_a_voicemail_through_the_edge(tmp_path: Path) -> None:
    files = write_config(tmp_path, {
        "worker": {"media_via_edge": True, "rtp_port_min": 45000, "rtp_port_max": 45999, "silence_timeout": 0},
        "edge": {"allowed_peer_networks": ["127.0.0.0/8"]}})
    node = ServeProcess(files.path, "--roles", "callrouter,mailbox,worker,edge,web")
    driver = None
    try:
        node.wait_ready()
        driver = subprocess.Popen([SYSTEM_PYTHON, str(DRIVER), "--seconds", "9"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=system_env())
        assert driver.stdin is not None and driver.stdout is not None
        local = json.loads(driver.stdout.readline())

        async def call() -> str:
            caller = Caller()
            host, port = await caller.redirect(files.port("callrouter", "sip_tcp_port"), "5000", "1002")
            answer = await caller.call(port, "5000", "1002", offer(local))
            assert answer.status == 200, answer.reason
            text = answer.body.decode()
            remote = {"candidates": [line[2:] for line in text.split("\r\n") if line.startswith("a=candidate:")]}
            for line in text.split("\r\n"):
                if line.startswith(("a=ice-ufrag:", "a=ice-pwd:")):
                    remote["ufrag" if "ufrag" in line else "pwd"] = line.split(":", 1)[1]  # type: ignore[assignment]
            assert driver is not None and driver.stdin is not None
            driver.stdin.write(json.dumps(remote) + "\n")
            driver.stdin.flush()
            await asyncio.sleep(6.5)  # greeting, tone, then about three seconds recorded
            assert (await caller.bye()).status == 200
            await caller.close()
            return text

        answer = asyncio.run(call())
        result = json.loads(driver.stdout.readline())
        lines = answer.split("\r\n")
        port = int(next(line for line in lines if line.startswith("m=audio")).split()[1])
        candidates = [line.split() for line in lines if line.startswith("a=candidate:")]
        assert port % 2 == 0 and "a=rtcp-mux" not in lines and not [x for x in lines if x.startswith("a=rtcp:")]
        assert {(c[1], int(c[5]), c[7]) for c in candidates} == {("1", port, "relay"), ("2", port + 1, "relay")}
        assert set(result["states"]) == {"1", "2"} and set(result["states"].values()) <= {"connected", "ready"}
        assert result["ok"] and result["received"]["1"] >= 50 and result["received"]["2"] >= 1, result  # RTCP on 2
        store = VoicemailStore(Path(files.path.parent / "state"))
        message = stored_message(store, "1002")
        assert message.duration >= 1.0
        [finished] = worker_status(files)["recent"]
        transport = finished["transport"]
        assert transport["kind"] == "ice" and transport["components"] == 2 and transport["rtcp_in"] >= 5
    finally:
        if driver is not None:
            driver.kill()
            driver.wait()
        node.kill()
