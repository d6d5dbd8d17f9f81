"""Worker slots are OS processes (issue 16): each slot's SIP ports belong to its own child process of the
node; `umedge worker recycle` during a SIPp run moves new calls to a fresh process on the other slot and
drops no call; kill -9 of the active worker loses only its own calls (their audio so far is kept), the
other slot takes new calls at once and the killed slot is back within seconds."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REQUIRE_TOOLS, NodeFiles, ServeProcess, umedge, write_config
from tests.sip.sipp_tools import sipp_available
from tests.worker.caller import Caller, free_udp_port, sdp_offer, sine_payloads, wait_for
from tests.worker.sipp_media import run_voicemail_sipp, write_rtp_pcap, write_voicemail_scenario
from um.worker.store import VoicemailStore

needs_sipp = pytest.mark.skipif(not sipp_available() and not REQUIRE_TOOLS, reason="sipp (Debian sip-tester) missing")
ROLES = ("--roles", "callrouter,mailbox,worker,web")
RTP_RANGE = (47000, 47999)


def node_config(tmp_path: Path) -> NodeFiles:
    return write_config(tmp_path, {"worker": {"rtp_port_min": RTP_RANGE[0], "rtp_port_max": RTP_RANGE[1],
                                              "silence_timeout": 0, "max_calls_per_source": 500}})


def worker_cli(files: NodeFiles, action: str) -> dict[str, Any]:
    result = umedge("worker", action, "--config", str(files.path))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def listening_pids(ports: list[int]) -> dict[int, int]:
    """`ss -ltnp`: the pid that owns each listening TCP port."""
    output = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, timeout=10).stdout
    owners = {}
    for line in output.splitlines():
        for port in ports:
            if re.search(rf":{port}\s", line):
                found = re.search(r"pid=(\d+)", line)
                if found:
                    owners[port] = int(found.group(1))
    return owners


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


@needs_sipp
def test_slot_ports_belong_to_two_child_processes_and_a_recycle_during_sipp_drops_no_call(tmp_path: Path) -> None:
    files = node_config(tmp_path)
    slot_ports = [int(p) for p in files.values["worker"]["sip_ports"]]  # type: ignore[union-attr]
    pcap = write_rtp_pcap(tmp_path / "gateway.pcap", sine_payloads(1.5))
    # Each call: the greeting and the tone (2.5 s), 1.5 s of audio, BYE; about 80 calls at once at 20/s.
    scenario = write_voicemail_scenario(tmp_path / "voicemail.xml", pcap, called="1002", wait_ms=2500, talk_ms=2000)
    media = free_udp_port()
    while RTP_RANGE[0] <= media <= RTP_RANGE[1]:
        media = free_udp_port()
    process = ServeProcess(files.path, *ROLES)
    try:
        process.wait_ready()
        owners = listening_pids(slot_ports)
        one, two = owners[slot_ports[0]], owners[slot_ports[1]]
        assert one != two and parent_of(one) == parent_of(two) == process.proc.pid  # two children of the node
        before = worker_cli(files, "status")
        assert [s["pid"] for s in before["slots"]] == [one, two] and before["active_slot"] == 1
        # 200 voicemail calls at 20/s through the call router (about 50 at once); a recycle 3 s in.
        results: list[subprocess.CompletedProcess[str]] = []
        runner = threading.Thread(target=lambda: results.append(run_voicemail_sipp(
            scenario, files.port("callrouter", "sip_tcp_port"), media, calls=200, rate=20, limit=200, timeout=50)))
        runner.start()
        time.sleep(3)
        recycled = worker_cli(files, "recycle")
        runner.join(90)
        [result] = results
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        assert re.search(r"Successful call\s*\|\s*\d+\s*\|\s*200", result.stdout), result.stdout[-3000:]
        assert re.search(r"Failed call\s*\|\s*\d+\s*\|\s*0\b", result.stdout)
        new = recycled["slots"][1]
        assert recycled["active_slot"] == 2 and new["state"] == "active" and new["pid"] not in (one, two)
        assert recycled["slots"][0]["pid"] == one and recycled["slots"][0]["state"] == "draining"
        assert listening_pids([slot_ports[1]])[slot_ports[1]] == new["pid"]  # a fresh process took slot 2
        assert wait_for(lambda: not alive(one), 15)  # the old worker left once its calls ended
        after = wait_for(lambda: (s := worker_cli(files, "status"))["slots"][0]["state"] == "idle" and s, 10)
        assert after["active_slot"] == 2 and after["slots"][1]["pid"] == new["pid"]
        assert after["slots"][0]["pid"] not in (one, two, new["pid"]) and after["slots"][0]["recycles"] == 1
        assert sum(s["calls_total"] for s in after["slots"]) == 200 and after["crashes"] == 0
        store = VoicemailStore(Path(files.path.parent / "state"))
        messages = wait_for(lambda: len(store.messages("1002")) == 200 and store.messages("1002"), 5)
        assert messages, f"{len(store.messages('1002'))} messages of 200"  # every call left its message
        assert all(1.0 <= m.duration <= 1.6 for m in messages)
        assert "finished its calls and exited" in process.stderr()
    finally:
        process.kill()


def test_kill_9_of_the_active_worker_loses_only_its_calls(tmp_path: Path) -> None:
    files = node_config(tmp_path)
    slot_ports = [int(p) for p in files.values["worker"]["sip_ports"]]  # type: ignore[union-attr]
    router = files.port("callrouter", "sip_tcp_port")
    process = ServeProcess(files.path, *ROLES)
    audio = sine_payloads(7.0, seed=5)
    try:
        process.wait_ready()
        status = worker_cli(files, "status")
        victim = status["slots"][0]["pid"]
        assert status["active_slot"] == 1

        async def one_call(port: int, mailbox: str, seconds: float) -> tuple[int, int | None]:
            caller = Caller()
            rtp = await caller.open_direct()
            answer = await caller.call(port, "5000", mailbox, sdp_offer("127.0.0.1", rtp))
            if answer.status != 200:
                await caller.close()
                return answer.status, None
            await caller.send_audio(audio[:int(seconds * 50)])
            try:
                bye = (await asyncio.wait_for(caller.bye(), 5)).status
            except (TimeoutError, ConnectionError, OSError):
                bye = None
            await caller.close()
            return answer.status, bye

        async def scenario() -> tuple[list[Any], list[Any], float, tuple[int, int | None]]:
            # 25 voicemail calls on each slot (a gateway may call either slot's port), audio for 6 s.
            doomed = [asyncio.ensure_future(one_call(slot_ports[0], "1005", 6)) for _ in range(25)]
            spared = [asyncio.ensure_future(one_call(slot_ports[1], "1006", 6)) for _ in range(25)]
            await asyncio.sleep(4)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            await asyncio.sleep(0.2)
            host, port = await Caller().redirect(router, "5000", "1007")  # the UM service's 302: the other slot
            assert port == slot_ports[1]
            fresh = await one_call(port, "1007", 2)
            delay = time.monotonic() - killed
            return (await asyncio.gather(*doomed, return_exceptions=True), await asyncio.gather(*spared),
                    delay, fresh)

        doomed, spared, delay, fresh = asyncio.run(scenario())
        assert process.proc.poll() is None  # the node stayed up
        assert spared == [(200, 200)] * 25  # the other slot's calls ran to their BYE
        assert fresh == (200, 200)
        assert all(result[1] != 200 for result in doomed if isinstance(result, tuple))  # they died with it
        assert delay < 4.5  # the new call was answered at once (its 2 s of audio included)
        back = wait_for(lambda: (s := worker_cli(files, "status"))["slots"][0]["state"] == "idle" and s, 10)
        assert back, "slot 1 not back within 10 s"
        assert back["slots"][0]["pid"] not in (None, victim) and back["slots"][0]["crashes"] == 1
        assert back["crashes"] == 1 and back["active_slot"] == 2
        shown = umedge("status", "--config", str(files.path)).stdout  # the operator's view of the slots
        assert re.search(rf"worker slot 1: idle, pid {back['slots'][0]['pid']}, calls 0 .* crashes 1", shown), shown
        assert re.search(r"worker slot 2 \(takes new calls\): active, pid \d+, calls 0 \(total 26\), age \d+s, "
                         r"RSS [1-9]\d* MB", shown), shown
        store = VoicemailStore(Path(files.path.parent / "state"))
        assert wait_for(lambda: len(store.messages("1006")) == 25, 5)
        interrupted = store.messages("1005")  # finished from the dead worker's partial audio by its successor
        assert len(interrupted) >= 20 and all(m.reason == "interrupted" and 0 < m.duration < 6 for m in interrupted)
        with urllib.request.urlopen(f"http://127.0.0.1:{files.port('web', 'http_port')}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        assert "umedge_worker_crashes_total 1.0" in metrics
        assert re.search(r'umedge_worker_process_resident_bytes\{slot="2"\} [1-9]', metrics)
        assert "died (signal 9)" in process.stderr()
    finally:
        process.kill()


def test_the_active_worker_recycles_itself_after_recycle_after_calls(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"worker": {"rtp_port_min": RTP_RANGE[0], "rtp_port_max": RTP_RANGE[1],
                                               "recycle_after_calls": 2}})
    router = files.port("callrouter", "sip_tcp_port")
    process = ServeProcess(files.path, *ROLES)
    try:
        process.wait_ready()
        first = worker_cli(files, "status")["slots"][0]["pid"]

        async def call() -> int:
            caller = Caller()
            rtp = await caller.open_direct()
            host, port = await caller.redirect(router, "5000", "1008")
            assert (await caller.call(port, "5000", "1008", sdp_offer("127.0.0.1", rtp))).status == 200
            await asyncio.sleep(0.3)
            await caller.bye()
            await caller.close()
            return port

        ports = [asyncio.run(call()) for _ in range(2)]
        assert ports == [int(files.values["worker"]["sip_ports"][0])] * 2  # type: ignore[index]
        after = wait_for(lambda: (s := worker_cli(files, "status"))["active_slot"] == 2 and
                           s["slots"][0]["state"] == "idle" and s, 15)
        assert after and after["recycles"] == 1 and after["slots"][0]["pid"] != first and not alive(first)
        assert "worker recycle (2 calls)" in process.stderr()
    finally:
        process.kill()


def test_503_only_while_both_workers_are_down(tmp_path: Path) -> None:
    files = node_config(tmp_path)
    router = files.port("callrouter", "sip_tcp_port")
    process = ServeProcess(files.path, *ROLES)
    try:
        process.wait_ready()
        pids = [slot["pid"] for slot in worker_cli(files, "status")["slots"]]
        for pid in pids:
            os.kill(pid, signal.SIGKILL)

        async def redirect() -> str:
            caller = Caller()
            await caller._connect(router)
            assert caller.sip is not None
            caller.sip.transport.write(caller._invite(f"sip:5000@127.0.0.1:{router}", "1001",
                                                      sdp_offer("127.0.0.1", 9), "both-down@test", "t1"))
            answer = await caller._final()
            await caller.close()
            return f"{answer.status} {answer.reason}"

        time.sleep(0.2)
        assert asyncio.run(redirect()).startswith("503")  # nobody to take the call: the router says so
        back = wait_for(lambda: (s := worker_cli(files, "status"))["slots"][0]["state"] in ("active", "idle") and
                          s["slots"][1]["state"] in ("active", "idle") and s, 10)
        assert back and back["crashes"] == 2 and not {s["pid"] for s in back["slots"]} & set(pids)
        assert asyncio.run(redirect()).startswith("302")
        assert process.proc.poll() is None
    finally:
        process.kill()


def test_a_draining_node_keeps_its_worker_calls_and_refuses_new_ones(tmp_path: Path) -> None:
    files = node_config(tmp_path)
    slot1 = int(files.values["worker"]["sip_ports"][0])  # type: ignore[index]
    process = ServeProcess(files.path, *ROLES)
    try:
        process.wait_ready()

        async def scenario() -> tuple[int, int]:
            first = Caller()
            rtp = await first.open_direct()
            assert (await first.call(slot1, "5000", "1009", sdp_offer("127.0.0.1", rtp))).status == 200
            process.proc.send_signal(signal.SIGTERM)  # drain: calls run on, none is taken
            await asyncio.sleep(0.6)
            late = Caller()
            refused = (await late.call(slot1, "5000", "1009", sdp_offer("127.0.0.1", rtp))).status
            await late.close()
            await first.send_audio(sine_payloads(0.5))
            bye = (await first.bye()).status
            await first.close()
            return refused, bye

        refused, bye = asyncio.run(scenario())
        assert refused == 503 and bye == 200
        assert process.proc.wait(10) == 0  # the last call ended: the node and its workers stopped
        assert "draining" in process.stderr()
    finally:
        process.kill()


@pytest.mark.parametrize(("key", "value", "why"), [("recycle_memory_mb", 1, "resident memory"),
                                                   ("recycle_after_hours", 0.0005, "0.0005 hours")])
def test_the_active_worker_recycles_itself_past_its_memory_or_age(tmp_path: Path, key: str, value: float,
                                                                  why: str) -> None:
    files = write_config(tmp_path, {"worker": {"rtp_port_min": RTP_RANGE[0], "rtp_port_max": RTP_RANGE[1],
                                               key: value}})
    process = ServeProcess(files.path, *ROLES)
    try:
        process.wait_ready()
        first = worker_cli(files, "status")["slots"][0]["pid"]
        after = wait_for(lambda: (s := worker_cli(files, "status"))["recycles"] >= 1 and s, 15)
        assert after and after["active_slot"] == 2 and after["slots"][1]["pid"] != first
        assert f"worker recycle ({why}" in process.stderr()
    finally:
        process.kill()
