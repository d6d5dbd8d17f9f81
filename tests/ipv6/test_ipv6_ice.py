"""An ICE caller whose candidates are IPv6 only (aioice, host candidates on ::1, two components: no rtcp-mux)
calls the worker on [::1]; the worker asks its edge for IPv6 relays (REQUESTED-ADDRESS-FAMILY), answers
with an even/odd pair of IPv6 relay candidates, both components become ready, and the voicemail is stored
bit for bit. Everything on ::1."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aioice

from tests.conftest import ServeProcess, write_config
from tests.ipv6.test_ipv6_calls import ROLES, ipv6_node, worker_status_v6
from tests.worker.caller import Caller, SipConnection, sine_payloads, stored_message
from um.worker import sdp
from um.worker.store import VoicemailStore


class Ipv6Caller(Caller):
    """The test caller with its SIP connection on [::1]."""

    async def _connect(self, port: int, ssl: Any = None) -> None:
        loop = asyncio.get_running_loop()
        transport, self.sip = await loop.create_connection(SipConnection, "::1", port)
        self.secure = False
        self.local = ("[::1]", transport.get_extra_info("sockname")[1])
        self._reader = asyncio.ensure_future(self._requests())


class LoopbackV6Ice(aioice.Connection):
    """aioice with host candidates on ::1 only (its own discovery leaves loopback out)."""

    async def get_component_candidates(self, component: int, addresses: list[str],
                                       timeout: int = 5) -> list[aioice.Candidate]:
        return await super().get_component_candidates(component, ["::1"], timeout)


def ipv6_ice_offer(ice: aioice.Connection) -> str:
    rtp, rtcp = ice.get_default_candidate(1), ice.get_default_candidate(2)
    lines = ["v=0", "o=caller 1 1 IN IP6 ::1", "s=-", f"c=IN IP6 {rtp.host}", "t=0 0",
             f"m=audio {rtp.port} RTP/AVP 0 101", "a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000",
             "a=fmtp:101 0-16", "a=ptime:20", f"a=rtcp:{rtcp.port} IN IP6 {rtcp.host}",
             f"a=ice-ufrag:{ice.local_username}", f"a=ice-pwd:{ice.local_password}"]
    lines += [f"a=candidate:{c.to_sdp()}" for c in ice.local_candidates]
    lines += ["a=end-of-candidates", "a=sendrecv"]
    return "\r\n".join(lines) + "\r\n"


def test_ipv6_only_ice_caller_leaves_a_voicemail_through_an_ipv6_relay(tmp_path: Path) -> None:
    files = write_config(tmp_path, ipv6_node(media_via_edge=True))
    audio = sine_payloads(3.0, seed=11)
    process = ServeProcess(files.path, *ROLES)
    try:
        process.wait_ready()

        async def call() -> tuple[str, list[str], Caller]:
            ice = LoopbackV6Ice(ice_controlling=True, components=2, use_ipv4=False, use_ipv6=True)
            await ice.gather_candidates()
            offered = [c.host for c in ice.local_candidates]
            caller = Ipv6Caller()
            caller.ice = ice
            answer = await caller.call(int(files.values["worker"]["sip_ports"][0]),  # type: ignore[index]
                                       "5000", "1004", ipv6_ice_offer(ice))
            assert answer.status == 200, (answer.status, answer.reason, answer.headers.get("Warning"))
            text = answer.body.decode()
            rtcp_back = await caller.two_component_ice_message(text, audio, timeout=10, linger=0.4)
            assert rtcp_back, "no RTCP from the worker on component 2"
            await caller.close()
            return text, offered, caller

        answer_sdp, offered, caller = asyncio.run(call())
        assert offered and all(":" in host for host in offered)  # the caller offered IPv6 candidates only
        lines = answer_sdp.split("\r\n")
        port = int(next(line for line in lines if line.startswith("m=audio")).split()[1])
        candidates = [line.split() for line in lines if line.startswith("a=candidate:")]
        assert "c=IN IP6 ::1" in lines and "a=rtcp-mux" not in lines and port % 2 == 0
        assert {(c[1], c[4], int(c[5]), c[7]) for c in candidates} == {("1", "::1", port, "relay"),
                                                                     ("2", "::1", port + 1, "relay")}
        store = VoicemailStore(Path(files.path.parent / "state"))
        message = stored_message(store, "1004")
        stored, sent = store.audio(message).data, b"".join(caller.sent_payloads)
        # Recording starts after the greeting and the tone: the message is the sent audio from then on, bit for bit.
        offset = sent.find(stored[:1600])
        assert message.duration >= 1.0 and offset >= 0 and offset % 160 == 0
        assert stored == sent[offset:offset + len(stored)]
        assert len(caller.received) >= 50  # the greeting came back over the relay
        [finished] = worker_status_v6(files)["recent"]
        transport = finished["transport"]
        assert transport["kind"] == "ice" and transport["components"] == 2 and transport["rtcp_in"] >= 2
        assert transport["local"][0] == "::1" and 50000 <= transport["local"][1] <= 59999  # an IPv6 relay
        stderr = process.stderr()
        assert "ICE failed" not in stderr and "critical" not in stderr and "Traceback" not in stderr
    finally:
        process.kill()


def test_ice_uses_the_candidates_of_the_default_address_family() -> None:
    """The relay has the c= family: a dual-stack offer with an IPv4 c= runs ICE on its IPv4 candidates as before,
    an IPv6 c= on its IPv6 ones; TCP and foreign components stay out either way."""
    def ice_of(default: str) -> list[tuple[int, str]]:
        family = "IP6" if ":" in default else "IP4"
        text = ("v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n" f"c=IN {family} {default}\r\nt=0 0\r\n"
                "m=audio 4000 RTP/AVP 0\r\na=ice-ufrag:u\r\na=ice-pwd:p0123456789012345678901\r\n"
                "a=candidate:1 1 udp 100 192.0.2.1 4000 typ host\r\n"
                "a=candidate:1 2 udp 99 192.0.2.1 4001 typ host\r\n"
                "a=candidate:2 1 udp 100 2001:db8::1 4000 typ host\r\n"
                "a=candidate:2 2 udp 99 2001:db8::1 4001 typ host\r\n"
                "a=candidate:3 1 tcp-act 90 2001:db8::1 9 typ host\r\n"
                "a=candidate:4 3 udp 1 2001:db8::1 4002 typ host\r\n")
        session = sdp.parse(text)
        ice = sdp._ice(session.media[0], session)
        assert ice is not None
        return [(c.component, c.host) for c in ice.candidates]

    assert ice_of("192.0.2.1") == [(1, "192.0.2.1"), (2, "192.0.2.1")]
    assert ice_of("2001:db8::1") == [(1, "2001:db8::1"), (2, "2001:db8::1")]
