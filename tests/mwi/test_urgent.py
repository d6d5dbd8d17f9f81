"""Urgent voicemail: a call whose INVITE carries `Priority: urgent` (RFC 3261 §20.26, as a PBX marks an urgent
call) leaves an urgent message: the message-waiting NOTIFY counts it in the urgent part of Voice-Message (RFC 3842
§5.2), `umedge voicemail list` shows it, and hearing it moves it to the urgent old count."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.conftest import serving, umedge
from tests.delivery.support import ROLES, node_config
from tests.mwi.phone import Phone
from tests.worker.caller import Caller, sdp_offer, sine_payloads
from um.worker.store import VoicemailStore


async def leave_message(worker_port: int, extra: str = "") -> None:
    caller = Caller()
    try:
        rtp = await caller.open_direct()
        assert (await caller.call(worker_port, "5000", "1001", sdp_offer("127.0.0.1", rtp), extra=extra)).status == 200
        await asyncio.sleep(2.0)  # the tone greeting and the beep (1.65 s): then the recording runs
        await caller.send_audio(sine_payloads(1.0, seed=5))
        await caller.bye()
    finally:
        await caller.close()


def test_priority_urgent_makes_an_urgent_message_and_the_light_says_so(tmp_path: Path) -> None:
    files = node_config(tmp_path, {"mode": "off"})
    worker_port = int(files.values["worker"]["sip_ports"][0])  # type: ignore[index]

    async def scenario() -> None:
        phone = await Phone(files.port("mailbox", "sip_tcp_port")).start()
        try:
            assert (await phone.subscribe(120)).status == 200
            assert (await phone.listener.next(2.0, after=0)).summary["voice-message"] == "0/0 (0/0)"
            await leave_message(worker_port, extra="Priority: urgent\r\n")
            assert (await phone.listener.next(4.0, after=1)).summary["voice-message"] == "1/0 (1/0)"
            await leave_message(worker_port)  # no Priority: a normal message
            assert (await phone.listener.next(4.0, after=2)).summary["voice-message"] == "2/0 (1/0)"
            store = VoicemailStore(tmp_path / "state")
            store.mark_read(next(m for m in store.messages("1001") if m.urgent))  # heard on the phone
            assert (await phone.listener.next(4.0, after=3)).summary["voice-message"] == "1/1 (0/1)"
        finally:
            await phone.close()

    with serving(files, *ROLES) as process:
        asyncio.run(scenario())
        listed = json.loads(umedge("voicemail", "list", "--json", "--config", str(files.path)).stdout)
        assert sorted(m["urgent"] for m in listed) == [False, True]
        table = umedge("voicemail", "list", "--config", str(files.path)).stdout.splitlines()
        assert table[0].endswith("urgent") and sorted(line.split()[-1] for line in table[1:]) == ["no", "yes"]
        assert "Traceback" not in process.stderr()
