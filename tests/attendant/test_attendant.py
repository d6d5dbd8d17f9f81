"""Auto attendants on a real node (tone prompts): a caller presses keys and the gateway gets a REFER
(RFC 3515) to the configured extension, through a sub-menu too; the call ends when the gateway's NOTIFY
says the transfer worked; dial by name finds directory entries from their DTMF letters; a gateway with
`refer = false` hears the menu as early media (183) and gets the transfer as a 302; business hours follow
the attendant's time zone; bad attendant config is one line naming the key."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import Iterator

import pytest

from tests.conftest import NodeFiles, ServeProcess, serving, umedge, write_config
from tests.worker.caller import Caller, media_address, sdp_offer, sine_payloads
from um.attendants import parse_auto_attendants, word_keys
from um.directory import DirectoryError
from um.sip.message import Request
from um.worker.store import VoicemailStore

ATTENDANT = {
    "number": "5002", "dial_plan": "default", "operator": "1000", "time_zone": "Europe/Berlin",
    "menu": [{"key": "1", "label": "Sales", "action": "transfer", "target": "1001"},
             {"key": "2", "label": "the directory", "action": "dial-name"},
             {"key": "3", "label": "support", "action": "menu",
              "menu": [{"key": "1", "label": "hardware", "action": "transfer", "target": "1003"}]},
             {"key": "4", "label": "an extension", "action": "dial-extension"},
             {"key": "5", "label": "a message for sales", "action": "voicemail", "target": "1002"},
             {"key": "0", "label": "the operator", "action": "operator"}]}


# Open one minute a week (Monday 00:00 in Kiritimati): after hours for this test's purposes.
CLOSED = {"number": "5003", "dial_plan": "default", "time_zone": "Pacific/Kiritimati",
          "business_hours": ["mon 00:00-00:01"], "menu": [{"key": "1", "action": "transfer", "target": "1001"}],
          "after_hours_welcome": "We are closed.",
          "after_hours_menu": [{"key": "1", "label": "the on-call engineer", "action": "transfer", "target": "1004"}]}


def config(directory: object, refer: bool) -> NodeFiles:
    return write_config(directory, {  # type: ignore[arg-type]
        "worker": {"rtp_port_min": 45000 if refer else 45500, "rtp_port_max": 45499 if refer else 45999},
        "callrouter": {
            "gateways": [{"address": "127.0.0.1", "name": "gw", "refer": refer}],
            "hunt_groups": [{"pilot": "5000", "dial_plan": "default"}, {"pilot": "5002", "dial_plan": "default"},
                            {"pilot": "5003", "dial_plan": "default"}],
            "dial_plans": [{"name": "default", "access_numbers": ["5001"],
                            "auto_attendant_numbers": ["5002", "5003"]}],
            "mailboxes": [{"extension": "1000-1009"}, {"extension": "1010", "name": "Anna Schmidt"},
                          {"extension": "1011", "name": "Bernd Schulz"}, {"extension": "1012", "name": "Carla Meyer"}],
            "auto_attendants": [ATTENDANT, CLOSED]}})


def serve(files: NodeFiles) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    with serving(files, "--roles", "callrouter,mailbox,worker") as process:
        yield files, process


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    yield from serve(config(tmp_path_factory.mktemp("attendant"), refer=True))


@pytest.fixture(scope="module")
def no_refer_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    yield from serve(config(tmp_path_factory.mktemp("attendant302"), refer=False))


async def next_request(caller: Caller, method: str, timeout: float) -> Request:
    assert caller.sip is not None
    while True:
        request = await asyncio.wait_for(caller.sip.requests.get(), timeout)
        if request.method == method:
            return request


def notify(caller: Caller, status: str) -> None:
    """The gateway's NOTIFY for the REFER's implicit subscription (message/sipfrag)."""
    assert caller.sip is not None and caller.dialog is not None
    dialog = caller.dialog
    dialog.cseq += 1
    body = f"SIP/2.0 {status}\r\n"
    host, port = caller.local
    caller.sip.transport.write((
        f"NOTIFY {dialog.remote_target} SIP/2.0\r\nVia: SIP/2.0/TCP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)}"
        f"\r\nMax-Forwards: 70\r\nFrom: \"Test Caller\" {dialog.local_uri};tag={dialog.from_tag}\r\n"
        f"To: {dialog.to_value}\r\nCall-ID: {dialog.call_id}\r\nCSeq: {dialog.cseq} NOTIFY\r\nEvent: refer\r\n"
        f"Subscription-State: terminated;reason=noresource\r\nContent-Type: message/sipfrag\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}").encode())


async def keys_to_refer(files: NodeFiles, script: list[tuple[float, str]], number: str = "5002"
                        ) -> tuple[Request, bool]:
    """Call the attendant, press keys; the REFER the gateway gets; NOTIFY 200; did the worker hang up?"""
    caller = Caller()
    _, port = await caller.redirect(files.port("callrouter", "sip_tcp_port"), number, number)
    rtp = await caller.open_direct()
    assert (await caller.call(port, number, number, sdp_offer("127.0.0.1", rtp))).status == 200
    assert caller._reader is not None
    caller._reader.cancel()  # this test reads the worker's requests itself
    for delay, digits in script:
        await asyncio.sleep(delay)
        await caller.send_digits(digits)
    refer = await next_request(caller, "REFER", 15)
    notify(caller, "200 OK")
    try:
        await next_request(caller, "BYE", 5)
        hung_up = True
    except TimeoutError:
        hung_up = False
    await caller.close()
    return refer, hung_up


def test_keys_lead_to_a_refer_to_the_configured_extension(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, process = node
    refer, hung_up = asyncio.run(keys_to_refer(files, [(0.5, "1")]))
    assert refer.headers.get("Refer-To") == "<sip:1001@127.0.0.1>" and hung_up
    assert (refer.headers.get("Referred-By") or "").startswith("<sip:5002@")
    refer, hung_up = asyncio.run(keys_to_refer(files, [(0.5, "3"), (0.8, "1")]))  # the support sub-menu
    assert refer.headers.get("Refer-To") == "<sip:1003@127.0.0.1>" and hung_up
    assert "transfer to sip:1003@127.0.0.1: NOTIFY 200" in process.stderr()
    refer, _ = asyncio.run(keys_to_refer(files, [(0.5, "4"), (0.8, "1005#")]))  # dial by extension
    assert refer.headers.get("Refer-To") == "<sip:1005@127.0.0.1>"
    refer, _ = asyncio.run(keys_to_refer(files, [(0.5, "0")]))  # the operator
    assert refer.headers.get("Refer-To") == "<sip:1000@127.0.0.1>"


def test_leave_a_voicemail_from_the_menu(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = node

    async def call() -> None:
        caller = Caller()
        _, port = await caller.redirect(files.port("callrouter", "sip_tcp_port"), "5002", "5002")
        rtp = await caller.open_direct()
        assert (await caller.call(port, "5002", "5002", sdp_offer("127.0.0.1", rtp))).status == 200
        await asyncio.sleep(0.5)
        await caller.send_digits("5")
        await asyncio.sleep(2.5)  # 1002's default greeting (tones here) and the beep
        await caller.send_audio(sine_payloads(2.0, seed=5))
        assert (await caller.bye()).status == 200
        await caller.close()

    asyncio.run(call())
    [message] = VoicemailStore(files.path.parent / "state").messages("1002")
    assert message.duration >= 1.0 and message.reason == "bye"


def test_after_hours_the_after_hours_menu_answers(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, process = node
    refer, _ = asyncio.run(keys_to_refer(files, [(0.5, "1")], number="5003"))
    assert refer.headers.get("Refer-To") == "<sip:1004@127.0.0.1>"  # not the business-hours 1001
    assert "auto attendant 5003: after hours" in process.stderr()


def test_dial_by_name_from_dtmf_letters(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, process = node
    assert word_keys("Schmidt") == "7246438" and word_keys("Schulz") == "724859"
    refer, _ = asyncio.run(keys_to_refer(files, [(0.5, "2"), (0.8, "7246#")]))  # S-C-H-M: only Schmidt
    assert refer.headers.get("Refer-To") == "<sip:1010@127.0.0.1>"
    refer, _ = asyncio.run(keys_to_refer(files, [(0.5, "2"), (0.8, "724#"), (1.0, "2")]))  # Schmidt or Schulz: 2
    assert refer.headers.get("Refer-To") == "<sip:1011@127.0.0.1>"
    assert "dial by name '724': Anna Schmidt (1010), Bernd Schulz (1011)" in process.stderr()


async def early_media_302(files: NodeFiles, digits: str) -> tuple[int, str, bool]:
    caller = Caller()
    _, port = await caller.redirect(files.port("callrouter", "sip_tcp_port"), "5002", "5002")
    rtp = await caller.open_direct()
    await caller._connect(port)
    assert caller.sip is not None
    call_id, tag = secrets.token_hex(8), secrets.token_hex(4)
    caller.sip.transport.write(caller._invite(f"sip:5002@127.0.0.1:{port};transport=tcp", "5002",
                                              sdp_offer("127.0.0.1", rtp), call_id, tag))
    early = False
    while True:
        response = await asyncio.wait_for(caller.sip.responses.get(), 15)
        if response.status == 183 and not early:
            early = True
            caller.remote_media = media_address(response.body.decode())
            await asyncio.sleep(0.5)
            await caller.send_digits(digits)
        elif response.status >= 200:
            break
    heard = len(caller.received)
    await caller.close()
    return response.status, response.headers.get("Contact") or "", early and heard > 0


def test_gateway_without_refer_gets_the_302_before_answer(no_refer_node: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = no_refer_node
    status, contact, early = asyncio.run(early_media_302(files, "1"))
    assert early  # the menu played as early media
    assert status == 302 and contact == "<sip:1001@127.0.0.1>"


def test_business_hours_follow_the_time_zone_and_bad_config_is_one_line(tmp_path: object) -> None:
    [attendant] = parse_auto_attendants([{**ATTENDANT, "business_hours": ["mon-fri 08:00-17:00"]}])
    monday_0730_utc = dt.datetime(2026, 11, 30, 7, 30, tzinfo=dt.UTC)  # 08:30 in Berlin
    assert attendant.is_open(monday_0730_utc) and not attendant.is_open(monday_0730_utc + dt.timedelta(hours=9))
    assert not attendant.is_open(dt.datetime(2026, 11, 29, 10, 0, tzinfo=dt.UTC))  # Sunday
    with pytest.raises(DirectoryError, match="menu action 'call': allowed \"transfer\""):
        parse_auto_attendants([{**ATTENDANT, "menu": [{"key": "1", "action": "call"}]}])
    with pytest.raises(DirectoryError, match="time_zone 'Mars/Olympus'"):
        parse_auto_attendants([{**ATTENDANT, "time_zone": "Mars/Olympus"}])
    from pathlib import Path

    bad = Path(str(tmp_path)) / "bad.toml"
    bad.write_text('[callrouter]\nauto_attendants = [{ number = "5002", dial_plan = "default", '
                   'business_hours = ["weekdays 9-5"] }]\n')
    out = umedge("check-config", "--config", str(bad))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "[callrouter].auto_attendants" in out.stderr and "mon-fri 08:00-17:00" in out.stderr
    bad.write_text('[callrouter]\nauto_attendants = [{ number = "5009", dial_plan = "default" }]\n')
    out = umedge("check-config", "--config", str(bad))
    assert out.returncode == 2 and "auto attendant 5009 is not in dial plan default's auto_attendant_numbers" in \
        out.stderr, out.stderr
