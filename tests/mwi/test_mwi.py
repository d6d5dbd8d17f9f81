"""Message-waiting indication (RFC 3842 over RFC 6665) on the UM service, against a real node, Dovecot and SIPp:
a SUBSCRIBE for 1001 from the project's own SIP client gets 200 and the initial NOTIFY (Messages-Waiting: no);
a SIPp voicemail flips it to yes (Voice-Message: 1/0) within a second; \\Seen set over IMAP flips it back within
imap_poll_seconds + 1 s; a gateway in [mwi] notify_targets gets the same news unsolicited; refresh, Expires: 0
and expiry end subscriptions as RFC 6665 says; untrusted phones need the mailbox's digest credentials."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_TOOLS, serving
from tests.delivery.mailstack import Dovecot
from tests.delivery.support import ROLES, Calls, lmtp_into, node_config
from tests.mwi.phone import NotifyListener, Phone
from tests.sip.sipp_tools import sipp_available
from um.sip.transaction import make_request
from um.sip.uac_core import Credentials
from um.worker.store import VoicemailStore

needs_sipp = pytest.mark.skipif(not sipp_available() and not REQUIRE_TOOLS, reason="sipp (Debian sip-tester) missing")
POLL = 1.0  # [delivery] imap_poll_seconds


@needs_sipp
def test_subscribe_notify_follows_voicemail_and_imap_seen(tmp_path: Path, dovecot: Dovecot) -> None:
    async def scenario() -> None:
        gateway = await NotifyListener().start()
        files = node_config(tmp_path, lmtp_into(dovecot, POLL), mwi={
            "min_expires": 2, "notify_targets": [
                {"dial_plan": "default", "address": f"127.0.0.1:{gateway.port}", "transport": "tcp"}]})
        calls = Calls(tmp_path, files, seconds=1.0)
        with serving(files, *ROLES) as process:
            um_port = files.port("mailbox", "sip_tcp_port")
            phone = await Phone(um_port).start()
            try:
                options = await phone.client.request("127.0.0.1", um_port, "tcp", make_request(
                    "OPTIONS", f"sip:127.0.0.1:{um_port}", via_host="127.0.0.1", transport="tcp",
                    from_uri="sip:phone@umedge.test", to_uri=f"sip:127.0.0.1:{um_port}"), timeout=5)
                assert "SUBSCRIBE" in (options.headers.get("Allow") or "")
                assert options.headers.get("Allow-Events") == "message-summary"
                answer = await phone.subscribe(120)
                assert answer.status == 200 and int(answer.headers.get("Expires") or 0) == 120
                first = await phone.listener.next(2.0, after=0)
                assert first.summary["messages-waiting"] == "no"
                assert first.summary["message-account"] == "sip:1001@umedge.test"
                assert first.summary["voice-message"] == "0/0 (0/0)"
                assert first.state.startswith("active;expires=")
                assert first.request.headers.get("Event") == "message-summary"

                await asyncio.get_running_loop().run_in_executor(None, calls.run)
                stored = next((tmp_path / "state" / "voicemail" / "1001").glob("*.json"))
                changed_at = stored.stat().st_mtime
                flipped = await phone.listener.next(3.0, after=1)
                assert flipped.summary["messages-waiting"] == "yes"
                assert flipped.summary["voice-message"] == "1/0 (0/0)"
                assert flipped.at - changed_at < 1.0, "NOTIFY more than a second after the voicemail was stored"

                pushed = await gateway.next(3.0)  # the PBX that does not subscribe hears it too
                assert pushed.request.uri.startswith("sip:1001@127.0.0.1")
                assert pushed.summary["voice-message"] == "1/0 (0/0)"

                delivered = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: dovecot.wait_messages("1001", 1, 5))
                assert len(delivered) == 1
                seen_at = time.time()
                dovecot.set_seen("1001", delivered[0][0])
                read = await phone.listener.next(POLL + 3.0, after=2)
                assert read.summary["messages-waiting"] == "no" and read.summary["voice-message"] == "0/1 (0/0)"
                assert read.at - seen_at < POLL + 1.0

                # Deleted on the phone (the store's delete, what the phone menu calls): 0/0 within a second.
                store = VoicemailStore(tmp_path / "state")
                deleted_at = time.time()
                store.delete(store.messages("1001")[0])
                gone = await phone.listener.next(2.0, after=3)
                assert gone.summary["voice-message"] == "0/0 (0/0)" and gone.at - deleted_at < 1.0

                refreshed = await phone.subscribe(60)  # in-dialog refresh: 200 and a NOTIFY with the new time
                assert refreshed.status == 200 and refreshed.headers.get("Expires") == "60"
                again = await phone.listener.next(2.0, after=4)
                assert again.state.startswith("active;expires=") and int(again.state.split("=")[1]) <= 60

                ended = await phone.subscribe(0)  # unsubscribe: 200, then a final NOTIFY
                assert ended.status == 200
                final = await phone.listener.next(2.0, after=5)
                assert final.state.startswith("terminated")
                stale = await phone.subscribe(60)  # the dialog is gone
                assert stale.status == 481
            finally:
                await phone.close()

            short = await Phone(um_port).start()  # a subscription that is not refreshed runs out
            try:
                assert (await short.subscribe(1)).status == 423  # below [mwi] min_expires
                answer = await short.subscribe(2)
                assert answer.status == 200
                await short.listener.next(2.0, after=0)
                expired = await short.listener.next(4.0, after=1)
                assert expired.state == "terminated;reason=timeout"
                assert (await short.subscribe(60)).status == 481
                other = await Phone(um_port, "1001").start()
                try:
                    assert (await other.subscribe(60, event="presence")).status == 489
                finally:
                    await other.close()
                nobody = await Phone(um_port, "7777").start()
                try:
                    assert (await nobody.subscribe(60)).status == 404
                finally:
                    await nobody.close()
            finally:
                await short.close()
            assert "Traceback" not in process.stderr()
        await gateway.close()

    asyncio.run(scenario())


def test_untrusted_phone_authenticates_with_the_mailbox_digest(tmp_path: Path) -> None:
    async def scenario() -> None:
        (tmp_path / "mwi-passwords").write_text("1001:phone-secret\n")
        files = node_config(tmp_path, {"mode": "off"}, mwi={
            "digest_realm": "umedge.test", "passwords_file": str(tmp_path / "mwi-passwords")})
        # Nothing on loopback is trusted here: not a call router, not a gateway.
        text = files.path.read_text().replace('[mailbox]\n', '[mailbox]\ncall_routers = ["127.0.0.9"]\n')
        files.path.write_text(text.replace("[callrouter]\n", '[callrouter]\ngateways = [{ address = "127.0.0.9" }]\n'))
        with serving(files, "--roles", "mailbox,worker"):
            um_port = files.port("mailbox", "sip_tcp_port")
            stranger = await Phone(um_port).start()
            try:
                assert (await stranger.subscribe(60)).status == 401  # no credentials: a challenge
            finally:
                await stranger.close()
            wrong = await Phone(um_port, credentials=Credentials("1001", "guess")).start()
            try:
                assert (await wrong.subscribe(60)).status == 403
            finally:
                await wrong.close()
            other = await Phone(um_port, "1002", credentials=Credentials("1001", "phone-secret")).start()
            try:
                assert (await other.subscribe(60)).status == 403  # 1001's credentials for another mailbox
            finally:
                await other.close()
            # Its Contact names another host: the NOTIFYs still go to the address the SUBSCRIBE came from.
            phone = await Phone(um_port, credentials=Credentials("1001", "phone-secret"),
                                contact_host="127.0.0.2").start()
            try:
                assert (await phone.subscribe(60)).status == 200
                first = await phone.listener.next(2.0, after=0)
                assert first.summary["messages-waiting"] == "no"
                assert first.request.uri.startswith("sip:phone@127.0.0.2:")
            finally:
                await phone.close()

    asyncio.run(scenario())
