"""A secured dial plan: MTLS signalling and SRTP with SDES keys (the message decrypts to what was sent);
hold and resume by re-INVITE and UPDATE; a session refresh; and play-on-phone, where the worker calls
a gateway (a small SIP UAS here) through the UM web services and plays a stored message to it."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import ssl
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from aiortc.rtp import RtpPacket

from certs import pki
from tests.conftest import NodeFiles, ServeProcess
from tests.sip.um_nodes import SECURE_PLANS, um_config
from tests.worker.caller import Caller, media_address, sdp_offer, sine_payloads, stored_message
from um.sip.message import Request, make_response
from um.sip.parser import StreamParser
from um.worker import sdp
from um.worker.srtp import SrtpContext
from um.worker.store import VoicemailStore

API_KEY = "worker-web-api-key-0123456789"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[NodeFiles, ServeProcess]]:
    files = um_config(tmp_path_factory.mktemp("secured"), {
        "callrouter": SECURE_PLANS, "auth": {"api_keys": [API_KEY]},
        "worker": {"rtp_port_min": 45000, "rtp_port_max": 45999, "silence_timeout": 0}})
    process = ServeProcess(files.path, "--roles", "callrouter,mailbox,worker,web")
    try:
        process.wait_ready()
        pki.issue(files.certs_dir, "gateway1", [])
        yield files, process
    finally:
        process.kill()


def client_tls(files: NodeFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
    context.load_cert_chain(str(files.certs_dir / "gateway1.crt"), str(files.certs_dir / "gateway1.key"))
    return context


def worker_port(files: NodeFiles, key: str) -> int:
    return int(files.values["worker"][key][0])  # type: ignore[index]


def test_secured_dial_plan_needs_mtls_and_srtp(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = node

    async def scenario() -> tuple[int, int]:
        plain = Caller()
        rtp = await plain.open_direct()
        refused = await plain.call(worker_port(files, "sip_ports"), "6000", "1007", sdp_offer("127.0.0.1", rtp))
        await plain.close()
        rtp_only = Caller()
        rtp = await rtp_only.open_direct()
        no_srtp = await rtp_only.call(worker_port(files, "sip_dual_tls_ports"), "6000", "1007",
                                      sdp_offer("127.0.0.1", rtp), ssl=client_tls(files))
        await rtp_only.close()
        return refused.status, no_srtp.status

    assert asyncio.run(scenario()) == (403, 488)


def test_srtp_call_with_hold_resume_and_refresh(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, process = node
    audio = sine_payloads(4.5, seed=5)
    key = base64.b64encode(secrets.token_bytes(30)).decode()

    async def scenario() -> tuple[Caller, dict[str, Any]]:
        caller = Caller()
        rtp = await caller.open_direct()
        offer = sdp_offer("127.0.0.1", rtp, crypto=key)
        answer = await caller.call(worker_port(files, "sip_dual_tls_ports"), "6000", "1007", offer,
                                   ssl=client_tls(files))
        assert answer.status == 200, answer.reason
        agreed = sdp.accept_answer(sdp.parse(answer.body), sdp.LocalMedia("127.0.0.1", rtp),
                                   sdp.Crypto(1, "AES_CM_128_HMAC_SHA1_80", key))
        assert "RTP/SAVP" in answer.body.decode() and agreed.remote_crypto.key != key
        caller.srtp = SrtpContext(agreed.local_crypto, agreed.remote_crypto)
        facts: dict[str, Any] = {}
        await asyncio.sleep(0.3)
        held = await caller.reinvite(offer.replace("a=sendrecv", "a=sendonly"))  # hold
        facts["hold"] = held.status, "a=recvonly" in held.body.decode()
        count = len(caller.received)
        await asyncio.sleep(0.4)
        facts["sent_on_hold"] = len(caller.received) - count
        resumed = await caller.reinvite(offer, method="UPDATE")  # resume, same keys
        facts["resume"] = resumed.status, "a=sendrecv" in resumed.body.decode(), \
            f"inline:{agreed.remote_crypto.key}" in resumed.body.decode()
        count = len(caller.received)
        await asyncio.sleep(0.4)
        facts["sent_after_resume"] = len(caller.received) - count
        refresh = await caller.reinvite("", method="UPDATE")  # session refresh without an offer
        facts["refresh"] = refresh.status
        await asyncio.sleep(1.2)  # the rest of the greeting and the tone
        await caller.send_audio(audio)
        await asyncio.sleep(0.2)
        facts["bye"] = (await caller.bye()).status
        await caller.close()
        return caller, facts

    caller, facts = asyncio.run(scenario())
    assert facts["hold"] == (200, True) and facts["sent_on_hold"] <= 2
    assert facts["resume"] == (200, True, True) and facts["sent_after_resume"] >= 10
    assert facts["refresh"] == 200 and facts["bye"] == 200
    assert caller.received  # SRTP from the worker decrypted with its SDES key
    store = VoicemailStore(files.path.parent / "state")
    message = stored_message(store, "1007")
    stored, sent = store.audio(message).data, b"".join(caller.sent_payloads)
    offset = sent.find(stored[:1600])
    assert message.duration >= 3.5 and offset >= 0 and stored == sent[offset:offset + len(stored)]
    assert "SRTP" in process.stderr() and "media now recvonly" in process.stderr()


class Gateway(asyncio.Protocol):
    """A tiny SIP UAS on TCP: answers INVITE with 200 and an SDP of its own RTP socket, records RTP."""

    def __init__(self, rtp_port: int, invites: list[Request]) -> None:
        self.parser, self.rtp_port, self.invites = StreamParser(), rtp_port, invites

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            request = event.message
            if not isinstance(request, Request) or request.method == "ACK":
                continue
            if request.method == "INVITE":
                self.invites.append(request)
                body = (f"v=0\r\no=gw 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                        f"m=audio {self.rtp_port} RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n"
                        f"a=rtpmap:101 telephone-event/8000\r\n").encode()
                answer = make_response(request, 200, None, [("Contact", "<sip:gw@127.0.0.1>"),
                                                            ("Content-Type", "application/sdp")], body)
            else:
                answer = make_response(request, 200)
            self.transport.write(answer.encode())


def test_play_on_phone_calls_a_gateway_and_plays_the_message(node: tuple[NodeFiles, ServeProcess]) -> None:
    files, _ = node
    store = VoicemailStore(files.path.parent / "state")
    recording = store.start("1008", "PCMU", caller="sip:5550199@gw")
    recording.write(b"".join(sine_payloads(1.5, seed=9)))
    message = recording.commit("bye")

    async def scenario() -> tuple[int, dict[str, Any], list[RtpPacket], list[Request]]:
        loop = asyncio.get_running_loop()
        received: list[RtpPacket] = []

        class Rtp(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                if not 192 <= data[1] <= 223:
                    received.append(RtpPacket.parse(data))

        rtp, _ = await loop.create_datagram_endpoint(Rtp, local_addr=("127.0.0.1", 0))
        invites: list[Request] = []
        server = await loop.create_server(lambda: Gateway(rtp.get_extra_info("sockname")[1], invites),
                                          "127.0.0.1", 0)
        gateway = server.sockets[0].getsockname()[1]
        context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
        request = urllib.request.Request(
            f"https://127.0.0.1:{files.port('web', 'http_port')}/v1/play-on-phone",
            data=json.dumps({"number": "+15550142", "message": message.id, "gateway": f"127.0.0.1:{gateway}",
                             "wait": True}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"})

        def post() -> tuple[int, dict[str, Any]]:
            with urllib.request.urlopen(request, context=context, timeout=30) as answer:
                return answer.status, json.loads(answer.read())

        status, body = await loop.run_in_executor(None, post)
        rtp.close()
        server.close()
        return status, body, received, invites

    status, body, received, invites = asyncio.run(scenario())
    assert status == 200 and body["played"] is True and body["ended_by"] == "worker" and body["status"] == 200
    assert invites[0].uri.startswith("sip:+15550142@127.0.0.1") and media_address(invites[0].body.decode())[1]
    heard = b"".join(p.payload for p in sorted(received, key=lambda p: p.sequence_number) if p.payload_type == 8)
    from um.worker.g711 import transcode

    assert transcode(store.audio(message).data, "PCMU", "PCMA") in heard  # the gateway took PCMA
