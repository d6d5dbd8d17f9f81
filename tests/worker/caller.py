"""A test caller made of asyncio SIP over TCP, aiortc's RTP packets and (optionally) aioice behind a TURN relay.

    caller = await Caller.connect_via_router(router_port, called="1001")   # INVITE -> 302 -> INVITE worker
    await caller.start_media(...)       # direct UDP, or ICE with a relay candidate on its own TURN server
    await caller.send_audio(payloads)   # paced at 20 ms
    await caller.send_digits("123456#")
    await caller.bye()

Used by the tests and benchmarks/worker_calls.py; no pytest in here.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any

from aiortc.rtp import RtcpPacket, RtcpRrPacket, RtcpSrPacket, RtpPacket

from um.sip.message import Request, Response, make_response
from um.sip.parser import StreamParser
from um.worker import g711
from um.worker.dtmf import event_payloads
from um.worker.rtp import is_rtcp
from um.worker.store import Message, VoicemailStore


def sine_payloads(seconds: float, codec: str = "PCMU", freqs: tuple[float, ...] = (440.0, 620.0),
                  seed: int = 1) -> list[bytes]:
    """20 ms G.711 frames of a tone that changes every 200 ms (so any offset is recognizable)."""
    frames = []
    rng = seed
    for index in range(int(seconds * 50)):
        if index % 10 == 0:
            rng = (rng * 1103515245 + 12345) & 0x7FFFFFFF
            f = freqs[0] + (rng % 600)
        samples = [int(8000 * math.sin(2 * math.pi * f * (index * 160 + n) / 8000) +
                       ((rng >> (n % 16)) & 0xFF) - 128) for n in range(160)]
        frames.append(g711.encode(samples, codec))
    return frames


@dataclass
class Dialog:
    call_id: str
    from_tag: str
    local_uri: str
    remote_uri: str
    to_value: str = ""
    remote_target: str = ""
    cseq: int = 1


class SipConnection(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = StreamParser()
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.requests: asyncio.Queue[Request] = asyncio.Queue()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            message = event.message
            if isinstance(message, Response):
                self.responses.put_nowait(message)
            elif isinstance(message, Request):
                if message.method != "ACK":
                    self.transport.write(make_response(message, 200).encode())
                self.requests.put_nowait(message)


def sdp_offer(host: str, port: int, codecs: tuple[str, ...] = ("PCMU", "PCMA"), ice: Any = None,
              crypto: str | None = None, direction: str = "sendrecv", rtcp_mux: bool = True) -> str:
    proto = "RTP/SAVP" if crypto else "RTP/AVP"
    pts = {"PCMU": 0, "PCMA": 8}
    lines = ["v=0", f"o=caller {secrets.randbelow(10**9)} 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0",
             f"m=audio {port} {proto} {' '.join(str(pts[c]) for c in codecs)} 101"]
    lines += [f"a=rtpmap:{pts[c]} {c}/8000" for c in codecs]
    lines += ["a=rtpmap:101 telephone-event/8000", "a=fmtp:101 0-16", "a=ptime:20"]
    if rtcp_mux:
        lines.append("a=rtcp-mux")
    if crypto:
        lines.append(f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{crypto}")
    if ice is not None:
        lines += [f"a=ice-ufrag:{ice.local_username}", f"a=ice-pwd:{ice.local_password}"]
        lines += [f"a=candidate:{c.to_sdp()}" for c in ice.local_candidates]
        lines.append("a=end-of-candidates")
    lines.append(f"a={direction}")
    return "\r\n".join(lines) + "\r\n"


class Caller:
    """One call from a test gateway (127.0.0.1), SIP over TCP."""

    def __init__(self, user: str = "4711") -> None:
        self.user = user
        self.sip: SipConnection | None = None
        self.local: tuple[str, int] = ("127.0.0.1", 0)
        self.dialog: Dialog | None = None
        self.answer: Response | None = None
        self.received: list[RtpPacket] = []
        self.rtcp: list[Any] = []
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.ts = secrets.randbits(32)
        self.sent_payloads: list[bytes] = []
        self.remote_media: tuple[str, int] | None = None
        self.rtp_sock: Any = None
        self.ice: Any = None
        self.srtp: Any = None
        self.bye_received = asyncio.Event()
        self.secure = False
        self._reader: asyncio.Task[None] | None = None

    # --- SIP ------------------------------------------------------------------------------------
    async def _connect(self, port: int, ssl: Any = None) -> None:
        loop = asyncio.get_running_loop()
        transport, self.sip = await loop.create_connection(SipConnection, "127.0.0.1", port, ssl=ssl,
                                                           server_hostname="127.0.0.1" if ssl else None)
        self.secure = ssl is not None
        self.local = transport.get_extra_info("sockname")[:2]
        self._reader = asyncio.ensure_future(self._requests())

    async def _requests(self) -> None:
        assert self.sip is not None
        while True:
            request = await self.sip.requests.get()
            if request.method == "BYE":
                self.bye_received.set()

    def _invite(self, uri: str, to: str, body: str, call_id: str, from_tag: str, cseq: int = 1,
                extra: str = "") -> bytes:
        host, port = self.local
        branch = "z9hG4bK" + secrets.token_hex(6)
        head = (f"INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/{'TLS' if self.secure else 'TCP'} {host}:{port};"
                f"branch={branch};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: \"Test Caller\" <sip:{self.user}@{host}>;tag={from_tag}\r\n"
                f"To: <sip:{to}@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\n"
                f"Contact: <sip:{self.user}@{host}:{port};transport=tcp>\r\n"
                f"{extra}Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n")
        return head.encode() + body.encode()

    async def _final(self, timeout: float = 15) -> Response:
        assert self.sip is not None
        while True:
            response = await asyncio.wait_for(self.sip.responses.get(), timeout)
            if response.status >= 200:
                return response

    async def redirect(self, router_port: int, pilot: str, to: str, extra: str = "") -> tuple[str, int]:
        """INVITE to the call router; its 302 names the worker (host, port)."""
        probe = Caller()
        await probe._connect(router_port)
        call_id = secrets.token_hex(8)
        tag = secrets.token_hex(4)
        assert probe.sip is not None
        probe.sip.transport.write(probe._invite(f"sip:{pilot}@127.0.0.1:{router_port}", to,
                                                sdp_offer("127.0.0.1", 9), call_id, tag, extra=extra))
        response = await probe._final()
        assert response.status == 302, f"call router answered {response.status} {response.reason}"
        contact = response.headers.get("Contact") or ""
        hostport = contact.split("@", 1)[1].split(";")[0].split(">")[0]
        host, _, port = hostport.rpartition(":")
        ack = (f"ACK sip:{pilot}@127.0.0.1:{router_port} SIP/2.0\r\nVia: SIP/2.0/TCP {probe.local[0]}:{probe.local[1]};"
               f"branch={(response.headers.get('Via') or '').split('branch=')[1].split(';')[0]}\r\nMax-Forwards: 70\r\n"
               f"From: {response.headers.get('From')}\r\nTo: {response.headers.get('To')}\r\nCall-ID: {call_id}\r\n"
               f"CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
        probe.sip.transport.write(ack.encode())
        await probe.close()
        return host, int(port)

    async def call(self, worker_port: int, pilot: str, to: str, sdp: str, extra: str = "",
                   timeout: float = 15, ssl: Any = None) -> Response:
        await self._connect(worker_port, ssl)
        call_id = secrets.token_hex(10) + "@test"
        tag = secrets.token_hex(4)
        assert self.sip is not None
        uri = f"sips:{pilot}@127.0.0.1:{worker_port}" if ssl else f"sip:{pilot}@127.0.0.1:{worker_port};transport=tcp"
        self.sip.transport.write(self._invite(uri, to, sdp, call_id, tag, extra=extra))
        response = await self._final(timeout)
        self.answer = response
        if response.status == 200:
            contact = response.headers.get("Contact") or ""
            self.dialog = Dialog(call_id, tag, f"<sip:{self.user}@{self.local[0]}>", f"<sip:{to}@127.0.0.1>",
                                 response.headers.get("To") or "", contact.strip("<>").split(">")[0])
            self._send_in_dialog("ACK", cseq=1)
            self.remote_media = media_address(response.body.decode())
            check_media_ports(sdp, response.body.decode())
        return response

    def _send_in_dialog(self, method: str, cseq: int | None = None, body: str = "", extra: str = "") -> None:
        assert self.sip is not None and self.dialog is not None
        dialog = self.dialog
        if cseq is None:
            dialog.cseq += 1
            cseq = dialog.cseq
        host, port = self.local
        text = (f"{method} {dialog.remote_target} SIP/2.0\r\nVia: SIP/2.0/{'TLS' if self.secure else 'TCP'} "
                f"{host}:{port};branch=z9hG4bK"
                f"{secrets.token_hex(6)};rport\r\nMax-Forwards: 70\r\nFrom: \"Test Caller\" {dialog.local_uri};"
                f"tag={dialog.from_tag}\r\nTo: {dialog.to_value}\r\nCall-ID: {dialog.call_id}\r\n"
                f"CSeq: {cseq} {method}\r\n{extra}")
        if body:
            text += "Content-Type: application/sdp\r\n"
        text += f"Content-Length: {len(body)}\r\n\r\n{body}"
        self.sip.transport.write(text.encode())

    async def reinvite(self, body: str, method: str = "INVITE") -> Response:
        self._send_in_dialog(method, body=body)
        response = await self._final()
        if method == "INVITE" and response.status == 200:
            assert self.dialog is not None
            self._send_in_dialog("ACK", cseq=self.dialog.cseq)
        return response

    async def bye(self) -> Response:
        self._send_in_dialog("BYE")
        return await self._final()

    # --- media ---------------------------------------------------------------------------------
    async def open_direct(self) -> int:
        loop = asyncio.get_running_loop()
        caller = self

        class Receiver(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Any) -> None:
                caller._on_media(data)

        self.rtp_sock, _ = await loop.create_datagram_endpoint(Receiver, local_addr=("127.0.0.1", 0))
        return self.rtp_sock.get_extra_info("sockname")[1]

    async def open_ice(self, turn_server: tuple[str, int], username: str, password: str) -> Any:
        """aioice, relay only, on the caller's own TURN server: the caller sits behind its own relay."""
        import aioice

        self.ice = aioice.Connection(ice_controlling=True, turn_server=turn_server, turn_username=username,
                                     turn_password=password, transport_policy=aioice.TransportPolicy.RELAY,
                                     use_ipv6=False)
        await self.ice.gather_candidates()
        return self.ice

    async def _ice_connect(self, answer_sdp: str, timeout: float) -> None:
        """Take the answer's ICE credentials and candidates, then run the checks."""
        from aioice import Candidate

        assert self.ice is not None
        ufrag = pwd = None
        for line in answer_sdp.splitlines():
            if line.startswith("a=ice-ufrag:"):
                ufrag = line.split(":", 1)[1].strip()
            elif line.startswith("a=ice-pwd:"):
                pwd = line.split(":", 1)[1].strip()
            elif line.startswith("a=candidate:"):
                await self.ice.add_remote_candidate(Candidate.from_sdp(line.split(":", 1)[1].strip()))
        await self.ice.add_remote_candidate(None)
        self.ice.remote_username, self.ice.remote_password = ufrag, pwd
        await asyncio.wait_for(self.ice.connect(), timeout)

    async def connect_ice(self, answer_sdp: str) -> None:
        await self._ice_connect(answer_sdp, 15)

        async def pump() -> None:
            while True:
                try:
                    data = await self.ice.recv()
                except ConnectionError:
                    return
                self._on_media(data)

        asyncio.ensure_future(pump())

    async def two_component_ice_message(self, answer_sdp: str, audio: list[bytes], timeout: float = 15,
                                        linger: float = 0.5) -> list[int]:
        """ICE with RTP on component 1 and RTCP on component 2 (no rtcp-mux): send `audio` with a receiver
        report on component 2 after each second, hang up; the components the worker's RTCP came back on."""
        from um.worker.rtp import RtpSender, rtcp_compound

        await self._ice_connect(answer_sdp, timeout)
        rtcp_components: list[int] = []

        async def pump() -> None:  # the worker's RTP on component 1, its RTCP on component 2
            while True:
                try:
                    data, component = await self.ice.recvfrom()
                except ConnectionError:
                    return
                if component == 2:
                    rtcp_components.append(component)
                self._on_media(data)

        reader = asyncio.ensure_future(pump())
        sender = RtpSender(0, ssrc=self.ssrc)
        for index in range(0, len(audio), 50):
            await self.send_audio(audio[index:index + 50])
            await self.ice.sendto(rtcp_compound(sender, None, time.time(), False), 2)
        await asyncio.sleep(0.3)
        assert (await self.bye()).status == 200
        await asyncio.sleep(linger)
        reader.cancel()
        return rtcp_components

    def _on_media(self, data: bytes) -> None:
        if self.srtp is not None:
            data = (self.srtp.unprotect_rtcp if is_rtcp(data) else self.srtp.unprotect)(data)
            if data is None:
                return
        if is_rtcp(data):
            try:
                self.rtcp += RtcpPacket.parse(data)
            except ValueError:
                pass
            return
        try:
            self.received.append(RtpPacket.parse(data))
        except ValueError:
            pass

    def _send(self, data: bytes) -> None:
        if self.srtp is not None:
            data = (self.srtp.protect_rtcp if is_rtcp(data) else self.srtp.protect)(data)
        if self.ice is not None:
            asyncio.ensure_future(self.ice.send(data))
        elif self.rtp_sock is not None and self.remote_media is not None:
            self.rtp_sock.sendto(data, self.remote_media)

    def packet(self, payload: bytes, pt: int = 0, marker: bool = False, advance: int = 160) -> bytes:
        packet = RtpPacket(payload_type=pt, marker=1 if marker else 0, sequence_number=self.seq, timestamp=self.ts,
                           ssrc=self.ssrc, payload=payload)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + advance) & 0xFFFFFFFF
        return packet.serialize()

    async def send_audio(self, payloads: list[bytes], pt: int = 0, interval: float = 0.02) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index, payload in enumerate(payloads):
            self._send(self.packet(payload, pt, marker=index == 0))
            self.sent_payloads.append(payload)
            delay = start + (index + 1) * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)

    async def send_digits(self, digits: str, gap: float = 0.05, duration_ms: int = 60) -> None:
        for digit in digits:
            timestamp = self.ts
            events = event_payloads(digit, duration_ms=duration_ms)
            for index, (payload, marker) in enumerate(events):
                packet = RtpPacket(payload_type=101, marker=1 if marker else 0, sequence_number=self.seq,
                                   timestamp=timestamp, ssrc=self.ssrc, payload=payload)
                self.seq = (self.seq + 1) & 0xFFFF
                self._send(packet.serialize())
                if index < len(events) - 3:  # the three end packets go back to back
                    await asyncio.sleep(0.02)
            self.ts = (self.ts + duration_ms * 8 + int(gap * 8000)) & 0xFFFFFFFF
            await asyncio.sleep(gap)

    def received_audio(self, pt: int = 0) -> bytes:
        packets = sorted((p for p in self.received if p.payload_type == pt), key=lambda p: p.sequence_number)
        return b"".join(p.payload for p in packets)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        if self.sip is not None and self.sip.transport is not None:
            self.sip.transport.close()
        if self.rtp_sock is not None:
            self.rtp_sock.close()
        if self.ice is not None:
            await self.ice.close()


def check_media_ports(offer: str, answer: str) -> None:
    """Every answer in the suite's calls: RTP on an even port, RTCP on port + 1 (no a=rtcp naming it) unless
    rtcp-mux was offered, and a=rtcp-mux only when it was (RFC 3550 §11, RFC 5761, RFC 3605)."""
    port = next((int(line.split()[1]) for line in answer.splitlines() if line.startswith("m=audio")), 0)
    if port == 0:
        return
    lines = [line.strip() for line in answer.splitlines()]
    offered_mux = "a=rtcp-mux" in [line.strip() for line in offer.splitlines()]
    assert port % 2 == 0, f"answer's RTP port {port} is odd"
    assert ("a=rtcp-mux" in lines) == offered_mux, "a=rtcp-mux in the answer must follow the offer"
    rtcp = [int(line.split(":")[1].split()[0]) for line in lines if line.startswith("a=rtcp:")]
    assert not rtcp or rtcp[0] != port + 1, "a=rtcp names port + 1 (it is implied)"


def media_address(sdp: str) -> tuple[str, int]:
    host, port = "0.0.0.0", 0
    for line in sdp.splitlines():
        if line.startswith("c=IN IP4 "):
            host = line.split()[2]
        elif line.startswith("m=audio "):
            port = int(line.split()[1])
    return host, port


def reports(rtcp: list[Any]) -> list[Any]:
    blocks = []
    for packet in rtcp:
        if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
            blocks += packet.reports
    return blocks


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Any, timeout: float = 10, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def stored_message(store: VoicemailStore, mailbox: str, timeout: float = 5) -> Message:
    """The mailbox's one voicemail, once the worker has stored it (within `timeout`)."""
    [message] = wait_for(lambda: store.messages(mailbox), timeout)
    return message


__all__ = ["Caller", "sdp_offer", "sine_payloads", "media_address", "reports", "stored_message", "wait_for", "struct"]
