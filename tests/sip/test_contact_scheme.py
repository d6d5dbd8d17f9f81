"""A gateway that cannot send to `sips:` targets (libre/baresip among them) is configured
`contact_scheme = "sip-tls"`: even when it asks with a sips: Request-URI, the router's 302 and the worker's
200 name `sip:...;transport=tls` (RFC 5630 §3.2), and the call it then places with that URI completes over
MTLS with SRTP (the voicemail decrypts to what was sent). Without the setting, the Contact mirrors the
Request-URI's scheme."""

from __future__ import annotations

import asyncio
import base64
import re
import secrets
import ssl
from collections.abc import Iterator

import pytest

from certs import pki
from tests.conftest import NodeFiles, ServeProcess
from tests.sip.um_nodes import SECURE_PLANS, um_config
from tests.worker.caller import Caller, Dialog, media_address, sdp_offer, sine_payloads, stored_message
from um.sip.message import Response
from um.worker import sdp
from um.worker.srtp import SrtpContext
from um.worker.store import VoicemailStore

SIPS_ONLY, SIP_TLS = "127.0.0.1", "127.0.0.7"  # two gateways, one per setting


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFiles]:
    files = um_config(tmp_path_factory.mktemp("contact-scheme"), {
        "callrouter": {**SECURE_PLANS, "gateways": [{"address": SIPS_ONLY},
                                                    {"address": SIP_TLS, "contact_scheme": "sip-tls"}]},
        "mailbox": {"call_routers": ["127.0.0.1"]},
        "worker": {"rtp_port_min": 44000, "rtp_port_max": 44099, "silence_timeout": 0}})
    process = ServeProcess(files.path, "--roles", "callrouter,mailbox,worker")
    try:
        process.wait_ready()
        pki.issue(files.certs_dir, "gateway1", [])
        yield files
    finally:
        process.kill()


def gateway_tls(files: NodeFiles) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(files.certs_dir / "ca.crt"))
    context.load_cert_chain(str(files.certs_dir / "gateway1.crt"), str(files.certs_dir / "gateway1.key"))
    context.check_hostname = False
    return context


class TlsGateway(Caller):
    """The test caller, from a chosen source address, with the Request-URI it is given."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source

    async def connect(self, port: int, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        from tests.worker.caller import SipConnection

        transport, self.sip = await loop.create_connection(SipConnection, "127.0.0.1", port, ssl=context,
                                                           server_hostname="127.0.0.1",
                                                           local_addr=(self.source, 0))
        self.secure = True
        self.local = transport.get_extra_info("sockname")[:2]
        self._reader = asyncio.ensure_future(self._requests())

    async def invite(self, uri: str, body: str) -> Response:
        assert self.sip is not None
        call_id, tag = secrets.token_hex(10) + "@tls-gw", secrets.token_hex(4)
        self.sip.transport.write(self._invite(uri, "1008", body, call_id, tag))
        response = await self._final()
        if response.status == 200:
            contact = response.headers.get("Contact") or ""
            self.dialog = Dialog(call_id, tag, f"<sip:{self.user}@{self.local[0]}>", "<sip:1008@127.0.0.1>",
                                 response.headers.get("To") or "", contact.strip("<>").split(">")[0])
            self._send_in_dialog("ACK", cseq=1)
            self.remote_media = media_address(response.body.decode())
        return response


async def redirect(files: NodeFiles, source: str, scheme: str) -> str:
    """The router's 302 Contact for an INVITE to the secured pilot with a `scheme` Request-URI."""
    gateway = TlsGateway(source)
    port = files.port("callrouter", "sip_tls_port")
    await gateway.connect(port, gateway_tls(files))
    try:
        response = await gateway.invite(f"{scheme}:6000@127.0.0.1:{port}" + (";transport=tls" if scheme == "sip"
                                                                              else ""), sdp_offer("127.0.0.1", 9))
        assert response.status == 302, (response.status, response.reason)
        return response.headers.get("Contact") or ""
    finally:
        await gateway.close()


def test_the_302_contact_follows_the_gateway_setting_or_mirrors_the_request_uri(node: NodeFiles) -> None:
    worker = int(node.values["worker"]["sip_dual_tls_ports"][0])  # type: ignore[index]
    sip_tls = f"<sip:6000@127.0.0.1:{worker};transport=tls>"
    sips = f"<sips:6000@127.0.0.1:{worker}>"
    assert asyncio.run(redirect(node, SIP_TLS, "sips")) == sip_tls  # configured: whatever it asked with
    assert asyncio.run(redirect(node, SIP_TLS, "sip")) == sip_tls
    assert asyncio.run(redirect(node, SIPS_ONLY, "sips")) == sips    # not configured: mirrored
    assert asyncio.run(redirect(node, SIPS_ONLY, "sip")) == sip_tls


def test_a_sip_tls_gateway_completes_an_srtp_call_with_sip_uris(node: NodeFiles) -> None:
    contact = asyncio.run(redirect(node, SIP_TLS, "sips"))
    target = re.fullmatch(r"<(sip:6000@127\.0\.0\.1:(\d+);transport=tls)>", contact)
    assert target, contact
    audio = sine_payloads(2.0, seed=7)
    key = base64.b64encode(secrets.token_bytes(30)).decode()

    async def call() -> tuple[Response, TlsGateway, int]:
        gateway = TlsGateway(SIP_TLS)
        await gateway.connect(int(target.group(2)), gateway_tls(node))
        rtp = await gateway.open_direct()
        offer = sdp_offer("127.0.0.1", rtp, crypto=key)
        answer = await gateway.invite(target.group(1), offer)
        assert answer.status == 200, (answer.status, answer.reason)
        agreed = sdp.accept_answer(sdp.parse(answer.body), sdp.LocalMedia("127.0.0.1", rtp),
                                   sdp.Crypto(1, "AES_CM_128_HMAC_SHA1_80", key))
        gateway.srtp = SrtpContext(agreed.local_crypto, agreed.remote_crypto)
        await asyncio.sleep(2.5)  # greeting and tone
        await gateway.send_audio(audio)
        await asyncio.sleep(0.2)
        bye = await gateway.bye()
        await gateway.close()
        return answer, gateway, bye.status

    answer, gateway, bye = asyncio.run(call())
    assert re.fullmatch(r"<sip:worker\d@127\.0\.0\.1:\d+;transport=tls>", answer.headers.get("Contact") or "")
    assert "RTP/SAVP" in answer.body.decode() and "a=crypto:" in answer.body.decode() and bye == 200
    assert gateway.received  # the worker's SRTP, decrypted with its SDES key
    store = VoicemailStore(node.path.parent / "state")
    message = stored_message(store, "1008")
    stored, sent = store.audio(message).data, b"".join(gateway.sent_payloads)
    offset = sent.find(stored[:1600])
    assert offset >= 0 and stored == sent[offset:offset + len(stored)] and len(stored) >= len(sent) - 3200
