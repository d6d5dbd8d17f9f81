"""A worker killed (SIGKILL) while it records, or while it stores, leaves no message or whole ones:
never a torn WAV or JSON in a mailbox. The next start removes the leftovers of the recording."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import NodeFiles, ServeProcess, umedge, write_config
from tests.worker.caller import Caller, sdp_offer, sine_payloads
from um.worker import wav
from um.worker.store import VoicemailStore

ROLES = ("--roles", "callrouter,mailbox,worker")


def audit(store: VoicemailStore) -> tuple[int, list[str]]:
    """(whole messages, problems) of what lies in the mailbox folders, before any recovery."""
    problems, whole = [], 0
    for folder in store.root.iterdir():
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        for path in folder.iterdir():
            if path.suffix == ".json" and path.name != "pin.json":
                try:
                    message = json.loads(path.read_text())
                except ValueError:
                    problems.append(f"torn JSON {path.name}")
                    continue
                audio = path.with_suffix(".wav")
                if not audio.exists():
                    problems.append(f"JSON without WAV {path.name}")
                elif not store.verify(store.find(message["id"])):
                    problems.append(f"WAV does not match its JSON {audio.name}")
                else:
                    whole += 1
            elif path.suffix == ".wav" and path.with_suffix(".json").exists():
                wav.read(path)  # a WAV with a JSON parses whole (verified above)
            elif path.suffix not in (".wav",):
                problems.append(f"stray file {path.name}")
    return whole, problems


async def calls(files: NodeFiles, count: int, seconds: float, hang_up: bool) -> list[Caller]:
    audio = sine_payloads(seconds, seed=11)
    callers = []
    for n in range(count):
        caller = Caller()
        rtp = await caller.open_direct()
        port = int(files.values["worker"]["sip_ports"][0])  # type: ignore[index]
        assert (await caller.call(port, "5000", f"100{n}", sdp_offer("127.0.0.1", rtp))).status == 200
        callers.append(caller)
    await asyncio.gather(*(c.send_audio(audio) for c in callers))
    if hang_up:
        for caller in callers:
            caller._send_in_dialog("BYE")
    return callers


@pytest.mark.parametrize("moment", ["recording", "storing-0ms", "storing-15ms"])
def test_sigkill_leaves_no_message_or_whole_ones(tmp_path: Path, moment: str) -> None:
    files = write_config(tmp_path, {"worker": {"rtp_port_min": 44000, "rtp_port_max": 44999, "silence_timeout": 0}})
    store = VoicemailStore(tmp_path / "state")
    process = ServeProcess(files.path, *ROLES)
    try:
        process.wait_ready()
        hang_up = moment != "recording"
        asyncio.run(calls(files, 3, 4.0, hang_up))
        if hang_up:
            time.sleep(int(moment.split("-")[1][:-2]) / 1000)
        process.proc.send_signal(signal.SIGKILL)
        process.proc.wait(5)
    finally:
        process.kill()
    whole, problems = audit(store)
    assert problems == []
    if moment == "recording":
        assert whole == 0 and list(store.tmp_dir.glob("*.wav.part"))  # the audio so far lies in .tmp only
    assert len(store.messages()) == whole
    again = ServeProcess(files.path, *ROLES)  # the next worker cleans up what the crash left
    try:
        again.wait_ready()
        assert not list(store.tmp_dir.iterdir())
        listed = json.loads(umedge("voicemail", "list", "--json", "--config", str(files.path)).stdout)
        assert len(listed) == whole and all(store.verify(store.find(m["id"])) for m in listed)
        assert audit(store) == (whole, [])
    finally:
        again.kill()
