"""A worker killed (SIGKILL) while it records, or while it stores, never leaves a torn WAV or JSON in a
mailbox; a caller whose BYE was answered finds the message stored whole; the next start finishes what
the crash interrupted (a recording becomes a message of the length it had, reason "interrupted").

The worker slots are processes of their own (um.worker.supervisor): the crash here is the whole node
going at once, its worker processes first (so none is replaced), then the main process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import NodeFiles, ServeProcess, umedge, write_config
from tests.worker.caller import Caller, sdp_offer, sine_payloads
from um.worker import wav
from um.worker.store import VoicemailStore

ROLES = ("--roles", "callrouter,mailbox,worker")


def slot_store(state: Path) -> VoicemailStore:
    """The store as slot 1's worker process writes it (its recordings in progress under .tmp-slot1)."""
    store = VoicemailStore(state)
    store.tmp_dir = store.root / ".tmp-slot1"
    return store


def kill_node(process: ServeProcess) -> None:
    """SIGKILL the node's worker processes, then the node itself: nothing gets to clean up."""
    children = Path(f"/proc/{process.proc.pid}/task/{process.proc.pid}/children").read_text().split()
    for child in children:
        try:
            os.kill(int(child), signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.proc.send_signal(signal.SIGKILL)


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


def test_sigkill_mid_recording_keeps_the_audio_so_far(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"worker": {"rtp_port_min": 44000, "rtp_port_max": 44999, "silence_timeout": 0}})
    store = slot_store(tmp_path / "state")
    process = ServeProcess(files.path, *ROLES)
    try:
        process.wait_ready()
        asyncio.run(calls(files, 3, 4.0, hang_up=False))
        kill_node(process)
        process.proc.wait(5)
    finally:
        process.kill()
    assert audit(store) == (0, []) and len(list(store.tmp_dir.glob("*.wav.part"))) == 3  # in .tmp only
    assert store.messages() == []
    again = ServeProcess(files.path, *ROLES)  # the next worker finishes what the crash interrupted
    try:
        again.wait_ready()
        assert not list(store.tmp_dir.iterdir())
        listed = json.loads(umedge("voicemail", "list", "--json", "--config", str(files.path)).stdout)
        assert len(listed) == 3 and {m["reason"] for m in listed} == {"interrupted"}
        assert all(store.verify(store.find(m["id"])) and 0 < m["duration"] < 4.0 for m in listed)
        assert audit(store) == (3, [])
    finally:
        again.kill()


# Twenty moments between the BYEs (right after the last RTP packet) and 100 ms after their 200 OK.
KILL_AFTER_BYE_MS = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 75, 90, 100)


async def hang_up_then_kill(files: NodeFiles, process: ServeProcess, delay: float) -> list[bool]:
    """Two calls hang up together; SIGKILL `delay` s after their BYEs. Which BYEs were answered 200."""
    callers = await calls(files, 2, 3.0, hang_up=False)  # about 1.2 s recorded after the greeting
    byes = [asyncio.ensure_future(caller.bye()) for caller in callers]
    await asyncio.sleep(delay)
    kill_node(process)
    answers = await asyncio.gather(*(asyncio.wait_for(bye, 3) for bye in byes), return_exceptions=True)
    return [getattr(answer, "status", None) == 200 for answer in answers]


@pytest.mark.parametrize("delay_ms", KILL_AFTER_BYE_MS)
def test_sigkill_after_the_bye_never_loses_an_answered_message(tmp_path: Path, delay_ms: int) -> None:
    files = write_config(tmp_path, {"worker": {"rtp_port_min": 44000, "rtp_port_max": 44999, "silence_timeout": 0,
                                               "min_message_seconds": 0.5}})
    store = slot_store(tmp_path / "state")
    process = ServeProcess(files.path, *ROLES)
    try:
        process.wait_ready()
        answered = asyncio.run(hang_up_then_kill(files, process, delay_ms / 1000))
        process.proc.wait(5)
    finally:
        process.kill()
    whole, problems = audit(store)
    assert problems == []  # nothing torn in a mailbox, whatever the moment
    assert whole >= sum(answered)  # every caller told "200 OK" has a whole message already
    store.recover()  # what the next worker does first (the full restart is shown above)
    messages = store.messages()
    assert len(messages) == 2 and all(store.verify(m) for m in messages)  # nothing lost, nothing torn
    assert not list(store.tmp_dir.iterdir())
