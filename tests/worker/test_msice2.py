"""Lync's SDP dialect: MS-ICE2 candidates, the multipart/alternative offer with its ICEv6 fallback
part, and the 488 to an ICE version the worker cannot run.

The samples follow the shapes of [MS-SIPRE] 3.15.4.1 (ICEv6 part with ms-proxy-2007fallback first,
ICEv19 part last), [MS-SDPEXT] 3.1.5.21 (a=x-candidate-ipv6, IPv6 rel-addr) and 3.1.5.22 (TCP
candidates), and the Lync 2010/2013 INVITEs shown in public write-ups (blog.greenl.ee "Multi-part
SDP and non-Lync endpoints", 2013): written here with documentation addresses, not copied.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import NodeFiles, ServeProcess, write_config
from tests.worker.caller import Caller, sine_payloads
from um.sip.parser import parse_datagram
from um.worker import multipart, sdp
from um.worker.handler import WorkerCalls

BOUNDARY = "----=_NextPart_000_4A2C_01D0B3E1.7F3C9A20"
CONTENT_TYPE = f'multipart/alternative;boundary="{BOUNDARY}"'

CODECS = ("m=audio {port} RTP/AVP 117 104 114 9 112 111 0 8 116 115 4 97 13 118 101\r\n")
RTPMAPS = ("a=rtcp:{rtcp}\r\n"
           "a=rtpmap:117 G722/8000/2\r\na=rtpmap:104 SILK/16000\r\na=rtpmap:114 x-msrta/16000\r\n"
           "a=fmtp:114 bitrate=29000\r\na=rtpmap:9 G722/8000\r\na=rtpmap:112 G7221/16000\r\n"
           "a=fmtp:112 bitrate=24000\r\na=rtpmap:111 SIREN/16000\r\na=fmtp:111 bitrate=16000\r\n"
           "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:116 AAL2-G726-32/8000\r\n"
           "a=rtpmap:115 x-msrta/8000\r\na=fmtp:115 bitrate=11800\r\na=rtpmap:4 G723/8000\r\n"
           "a=rtpmap:97 RED/8000\r\na=rtpmap:13 CN/8000\r\na=rtpmap:118 CN/16000\r\n"
           "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=encryption:optional\r\n")


def icev6_part(host: str = "192.0.2.10", port: int = 19384) -> str:
    """[IETFDRAFT-ICENAT-06] as Lync sends it: username/password in the candidate, q-value priority."""
    return (f"v=0\r\no=- 0 0 IN IP4 {host}\r\ns=session\r\nc=IN IP4 {host}\r\nb=CT:99980\r\nt=0 0\r\n"
            + CODECS.format(port=port)
            + f"a=candidate:Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0 1 c2VjcmV0cGFzc3dv UDP 0.830 {host} {port}\r\n"
            f"a=candidate:Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0 2 c2VjcmV0cGFzc3dv UDP 0.830 {host} {port + 1}\r\n"
            "a=maxptime:200\r\n" + RTPMAPS.format(rtcp=port + 1))


def icev19_part(host: str = "192.0.2.10", port: int = 19386) -> str:
    """[MS-ICE2] / ICEv19: ufrag and pwd, UDP, TCP-PASS and TCP-ACT candidates, host/srflx/relay,
    an IPv6 candidate in a=x-candidate-ipv6 and one (to be ignored) in a=candidate."""
    return (f"v=0\r\no=- 0 1 IN IP4 {host}\r\ns=session\r\nc=IN IP4 {host}\r\nb=CT:99980\r\nt=0 0\r\n"
            + CODECS.format(port=port)
            + "a=x-ssrc-range:2937013248-2937013248\r\n"
            "a=ice-ufrag:Qr7b\r\na=ice-pwd:T0mH9nWv3xKpL2sYc8dFj6aZ\r\n"
            f"a=candidate:1 1 UDP 2130706431 {host} {port} typ host\r\n"
            f"a=candidate:1 2 UDP 2130705918 {host} {port + 1} typ host\r\n"
            "a=candidate:2 1 TCP-PASS 174455807 203.0.113.5 53074 typ relay raddr 198.51.100.7 rport 49562\r\n"
            "a=candidate:2 2 TCP-PASS 174455806 203.0.113.5 53074 typ relay raddr 198.51.100.7 rport 49562\r\n"
            "a=candidate:3 1 UDP 184547839 203.0.113.5 56150 typ relay raddr 198.51.100.7 rport 49563\r\n"
            "a=candidate:3 2 UDP 184547326 203.0.113.5 56151 typ relay raddr 198.51.100.7 rport 49564\r\n"
            f"a=candidate:4 1 UDP 1694234111 198.51.100.7 49563 typ srflx raddr {host} rport {port}\r\n"
            f"a=candidate:5 1 TCP-ACT 1684797951 198.51.100.7 49565 typ srflx raddr {host} rport {port}\r\n"
            "a=candidate:6 1 UDP 1694233855 198.51.100.7 49566 typ srflx raddr 2001:db8::10 rport 19390\r\n"
            "a=candidate:7 1 UDP 2130706000 2001:db8::11 19392 typ host\r\n"
            "a=x-candidate-ipv6:8 1 UDP 2130705999 2001:db8::10 19390 typ host\r\n"
            "a=maxptime:200\r\n" + RTPMAPS.format(rtcp=port + 1))


def lync_body(first: str, last: str) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\nContent-Transfer-Encoding: 7bit\r\n"
            f"Content-ID: <5f1c3a9e7d0b4b2a8e6f1d2c3b4a5968@lync.example.test>\r\n"
            f"Content-Disposition: session; handling=optional; ms-proxy-2007fallback\r\n\r\n{first}"
            f"--{BOUNDARY}\r\nContent-Type: application/sdp\r\nContent-Transfer-Encoding: 7bit\r\n"
            f"Content-ID: <a8d2f6c4e1b34e0f9c7a5b3d1e2f4a6c@lync.example.test>\r\n"
            f"Content-Disposition: session; handling=optional\r\n\r\n{last}"
            f"--{BOUNDARY}--\r\n").encode()


# --- the parser ---------------------------------------------------------------------------------
def test_ms_ice2_candidates_udp_tcp_ipv6_and_remote_candidates() -> None:
    offer = sdp.parse(icev19_part())
    media = offer.media[0]
    assert sdp.ice_flavour(offer) == "ice19"
    every = sdp.candidates(media)
    assert {c.transport for c in every} == {"udp", "tcp-pass", "tcp-act"}  # TCP parsed, not refused
    assert {c.type for c in every} == {"host", "relay", "srflx"}
    relay = next(c for c in every if c.type == "relay" and c.transport == "udp" and c.component == 1)
    assert (relay.host, relay.port, relay.related_address, relay.related_port) == \
        ("203.0.113.5", 56150, "198.51.100.7", 49563)
    ice = sdp._ice(media, offer)
    assert ice is not None and (ice.ufrag, ice.pwd) == ("Qr7b", "T0mH9nWv3xKpL2sYc8dFj6aZ")
    # only UDP, IPv4 addresses; an IPv4 candidate with an IPv6 raddr stays ([MS-SDPEXT] 3.1.5.21.1);
    # no rtcp-mux offered: components 1 (RTP) and 2 (RTCP) both
    assert [(c.foundation, c.component, c.host) for c in ice.candidates] == [
        ("1", 1, "192.0.2.10"), ("1", 2, "192.0.2.10"), ("3", 1, "203.0.113.5"), ("3", 2, "203.0.113.5"),
        ("4", 1, "198.51.100.7"), ("6", 1, "198.51.100.7")]
    muxed = sdp.parse(icev19_part() + "a=rtcp-mux\r\n")
    assert {c.component for c in sdp._ice(muxed.media[0], muxed).candidates} == {1}  # type: ignore[union-attr]
    assert [(c.host, c.port) for c in sdp.ipv6_candidates(media)] == [("2001:db8::10", 19390)]
    reoffer = sdp.parse(icev19_part() + "a=remote-candidates:1 203.0.113.9 40000 2 203.0.113.9 40001\r\n")
    assert sdp.remote_candidates(reoffer.media[0]) == [(1, "203.0.113.9", 40000), (2, "203.0.113.9", 40001)]


def test_ice_flavours() -> None:
    assert sdp.ice_flavour(sdp.parse(icev6_part())) == "ice6"
    assert sdp.ice_flavour(sdp.parse(icev19_part())) == "ice19"
    plain = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    assert sdp.ice_flavour(sdp.parse(plain)) == "none"


def test_answer_to_the_ms_ice2_part_uses_udp_and_pcmu() -> None:
    offer = sdp.parse(icev19_part())
    local_ice = sdp.IceParams("wk01", "w" * 22, [sdp.IceCandidate("1", 1, "udp", 16777215, "198.51.100.20",
                                                                   50000, "relay", "198.51.100.20", 40000)])
    text, negotiated = sdp.answer(offer, sdp.LocalMedia("198.51.100.20", 50000, ice=local_ice), use_ice=True)
    assert negotiated.codec == "PCMU" and negotiated.payload_type == 0 and negotiated.dtmf_pt == 101
    assert negotiated.remote_rtp == ("192.0.2.10", 19386) and negotiated.remote_rtcp == ("192.0.2.10", 19387)
    assert "a=ice-ufrag:wk01" in text and "typ relay" in text
    assert "TCP" not in text.upper().replace("RTCP", "")  # the answer offers UDP only


# --- the multipart chooser -----------------------------------------------------------------------
def test_multipart_split_and_choose_the_icev19_part() -> None:
    body = lync_body(icev6_part(), icev19_part())
    parts = multipart.split(CONTENT_TYPE, body)
    assert len(parts) == 2
    assert parts[0].headers["content-disposition"] == "session; handling=optional; ms-proxy-2007fallback"
    assert parts[0].content_type == "application/sdp" and parts[0].body.startswith(b"v=0")
    choice = multipart.choose(CONTENT_TYPE, body)
    assert (choice.flavour, choice.index, choice.parts) == ("ice19", 1, 2)
    assert choice.content_id == "a8d2f6c4e1b34e0f9c7a5b3d1e2f4a6c@lync.example.test"
    assert choice.offer.media[0].port == 19386
    # direct media (no ICE run by the worker): still the last, preferred, part (RFC 2046 §5.1.4)
    assert multipart.choose(CONTENT_TYPE, body, ("ice19", "none", "ice6")).index == 1


def test_multipart_mixed_with_call_context_and_lf_only_and_unquoted_boundary() -> None:
    inner = lync_body(icev6_part(), icev19_part()).decode()
    body = ("preamble\r\n--outer\r\nContent-Type: " + CONTENT_TYPE + "\r\n\r\n" + inner +
            "--outer\r\nContent-Type: application/ms-call-context+xml\r\n\r\n<context/>\r\n--outer--\r\n")
    choice = multipart.choose("multipart/mixed; boundary=outer", body.replace("\r\n", "\n").encode())
    assert choice.flavour == "ice19" and choice.offer.media[0].port == 19386


def test_multipart_only_icev6_is_488_with_a_warning_when_ice_is_needed() -> None:
    body = lync_body(icev6_part(), icev6_part(port=19400))
    with pytest.raises(sdp.SdpError) as refused:
        multipart.choose(CONTENT_TYPE, body)
    assert refused.value.status == 488 and "ICE version 6" in (refused.value.warning or "")
    assert multipart.choose(CONTENT_TYPE, body, ("ice19", "none", "ice6")).index == 1  # direct media: fine
    with pytest.raises(multipart.MultipartError):
        multipart.choose("multipart/alternative", body)  # no boundary
    with pytest.raises(sdp.SdpError):
        multipart.choose('multipart/alternative; boundary="x"', b"--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--")


def _invite(content_type: str, body: bytes) -> bytes:
    head = ("INVITE sip:5000@127.0.0.1:5070;transport=tcp SIP/2.0\r\n"
            "Via: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK776asdhds\r\nMax-Forwards: 70\r\n"
            "From: <sip:4711@127.0.0.1>;tag=1928301774\r\nTo: <sip:1004@127.0.0.1>\r\n"
            "Call-ID: a84b4c76e66710@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:4711@127.0.0.1:5999>\r\n"
            "Supported: ms-dialog-route-set-update, timer, histinfo, ms-safe-transfer, ms-sender, ms-early-media\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def test_worker_calls_offer_refuses_icev6_via_the_edge_and_takes_it_direct() -> None:
    def calls(via_edge: bool) -> WorkerCalls:
        return WorkerCalls(SimpleNamespace(settings=SimpleNamespace(media_via_edge=via_edge, advertise="192.0.2.99")))

    single = parse_datagram(_invite("application/sdp", icev6_part().encode()))
    with pytest.raises(sdp.SdpError) as refused:
        calls(True)._offer(single)
    assert refused.value.status == 488
    warning = dict(calls(True)._warning(refused.value))["Warning"]
    assert warning.startswith('399 192.0.2.99 "ICE version 6') and warning.endswith('"')
    assert calls(False)._offer(single).media[0].port == 19384
    both = parse_datagram(_invite(CONTENT_TYPE, lync_body(icev6_part(), icev19_part())))
    assert calls(True)._offer(both).media[0].port == 19386


# --- end to end ----------------------------------------------------------------------------------
class LyncCaller(Caller):
    """The test caller, with Lync's multipart/alternative body instead of application/sdp."""

    content_type = CONTENT_TYPE

    def _invite(self, *args: object, **kwargs: object) -> bytes:
        raw = super()._invite(*args, **kwargs)  # type: ignore[arg-type]
        return raw.replace(b"Content-Type: application/sdp\r\n", f"Content-Type: {self.content_type}\r\n".encode(), 1)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    files = write_config(tmp_path, {"worker": {"media_via_edge": False, "rtp_port_min": 43000,
                                               "rtp_port_max": 43499, "silence_timeout": 0}})
    process = ServeProcess(files.path, "--roles", "callrouter,mailbox,worker")
    try:
        process.wait_ready()
        yield files, process
    finally:
        process.kill()


def test_lync_multipart_invite_is_answered_from_the_icev19_part(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = node

    async def call() -> tuple[object, int, int]:
        caller = LyncCaller()
        media_port = await caller.open_direct()
        _, port = await caller.redirect(files.port("callrouter", "sip_tcp_port"), "5000", "1004")
        # the ICEv6 part names a port nobody listens on; only the ICEv19 part names the caller's
        body = lync_body(icev6_part("127.0.0.1", 9), icev19_part("127.0.0.1", media_port)).decode()
        answer = await caller.call(port, "5000", "1004", body)
        assert answer.status == 200, answer.reason
        await caller.send_audio(sine_payloads(1.0, seed=3))
        deadline = time.monotonic() + 5
        while not caller.received and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        got = len(caller.received)
        assert (await caller.bye()).status == 200
        await caller.close()
        return answer, got, media_port

    answer, got, _ = asyncio.run(call())
    assert (answer.headers.get("Content-Type") or "").split(";")[0].strip() == "application/sdp"
    text = answer.body.decode()
    assert text.startswith("v=0") and BOUNDARY not in text  # one SDP, not a multipart answer
    assert "m=audio " in text and "a=rtpmap:0 PCMU/8000" in text and "a=rtpmap:101 telephone-event/8000" in text
    assert "c=IN IP4 127.0.0.1" in text and "a=ice-ufrag" not in text  # direct media: no ICE run
    assert got > 0  # the greeting came to the ICEv19 part's address
