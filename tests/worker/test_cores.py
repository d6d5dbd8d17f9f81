"""The worker's sans-I/O cores: G.711, WAV, SDP offer/answer, RTP/RTCP, jitter buffer, DTMF, SRTP,
the voicemail store, PINs, the recorder and the call scripts (with a fake call)."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from aiortc.rtp import RtcpPacket, RtcpRrPacket, RtcpSdesPacket, RtcpSrPacket, RtpPacket

from tests.conftest import ROOT
from um.directory import CallDirectory, DirectoryError, assemble, parse_dial_plans, parse_mailboxes
from um.worker import g711, menus, sdp, wav
from um.worker.dtmf import DtmfDecoder, event_payloads, parse_event
from um.worker.media import Recorder
from um.worker.pins import PinPolicy, PinPolicyError, PinStore, plan_policy
from um.worker.prompts import Prompts
from um.worker.rtp import JitterBuffer, RtpReceiver, RtpSender, is_rtcp, rtcp_compound
from um.worker.srtp import SrtpContext
from um.worker.store import StoreError, VoicemailStore

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the reference G.711 of CPython (deprecated, still there in 3.11)


# --- G.711 and WAV ---------------------------------------------------------------------------------
def test_g711_tables_match_audioop_everywhere() -> None:
    every_code = bytes(range(256))
    assert g711.g711_to_pcm16(every_code, "PCMU") == audioop.ulaw2lin(every_code, 2)
    assert g711.g711_to_pcm16(every_code, "PCMA") == audioop.alaw2lin(every_code, 2)
    every_sample = struct.pack("<65536h", *range(-32768, 32768))
    assert g711.pcm16_to_g711(every_sample, "PCMU") == audioop.lin2ulaw(every_sample, 2)
    assert g711.pcm16_to_g711(every_sample, "PCMA") == audioop.lin2alaw(every_sample, 2)
    assert g711.transcode(every_code, "PCMU", "PCMA") == audioop.lin2alaw(audioop.ulaw2lin(every_code, 2), 2)


def test_loudness_and_silence() -> None:
    quiet = g711.silence(160, "PCMU")
    loud = g711.encode(g711.tone((440.0,), 0.02, 0.5), "PCMU")
    assert g711.loud_samples(quiet, "PCMU") == 0
    assert g711.loud_samples(loud, "PCMU") > 100


def test_wav_round_trip_keeps_g711_bytes() -> None:
    audio = bytes(range(256)) * 3 + b"\x01"  # odd length: the data chunk is padded
    blob = wav.encode("PCMA", audio)
    parsed = wav.decode(blob)
    assert parsed.format_tag == wav.FORMAT_ALAW and parsed.data == audio and parsed.samples == len(audio)
    assert parsed.as_g711("PCMA") == audio
    pcm = wav.decode(wav.encode("L16", parsed.as_pcm16()))
    assert pcm.format_tag == wav.FORMAT_PCM and pcm.as_g711("PCMA") == audio
    with pytest.raises(wav.WavError):
        wav.decode(b"RIFF\x00\x00\x00\x00WAVE")


# --- SDP ---------------------------------------------------------------------------------------------
OFFER = """v=0
o=gw 1 1 IN IP4 192.0.2.10
s=-
c=IN IP4 192.0.2.10
t=0 0
m=video 5002 RTP/AVP 96
a=rtpmap:96 H264/90000
m=audio 5004 RTP/AVP 8 0 18 101
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=ptime:20
"""
LOCAL = sdp.LocalMedia("198.51.100.1", 40000)


def test_answer_keeps_m_lines_declines_video_and_takes_the_offerers_first_codec() -> None:
    text, agreed = sdp.answer(sdp.parse(OFFER), LOCAL)
    lines = text.split("\r\n")
    assert lines.index("m=video 0 RTP/AVP 96") < lines.index("m=audio 40000 RTP/AVP 8 101")
    assert "a=rtpmap:101 telephone-event/8000" in lines and "a=fmtp:101 0-15" in lines
    # RTCP on 40001 (RFC 3550 §11): no a=rtcp, and no a=rtcp-mux the offer did not ask for (RFC 5761).
    assert not any(line.startswith(("a=rtcp:", "a=rtcp-mux")) for line in lines)
    assert "c=IN IP4 198.51.100.1" in lines
    assert agreed.codec == "PCMA" and agreed.payload_type == 8 and agreed.dtmf_pt == 101
    assert agreed.remote_rtp == ("192.0.2.10", 5004) and agreed.remote_rtcp == ("192.0.2.10", 5005)
    assert agreed.direction == "sendrecv" and agreed.sending and agreed.receiving and not agreed.secure


def test_answer_488_without_a_common_codec_or_srtp_when_required() -> None:
    g729 = OFFER.replace("m=audio 5004 RTP/AVP 8 0 18 101", "m=audio 5004 RTP/AVP 18")
    with pytest.raises(sdp.SdpError) as failed:
        sdp.answer(sdp.parse(g729), LOCAL)
    assert failed.value.status == 488 and "codec" in failed.value.reason
    with pytest.raises(sdp.SdpError) as failed:
        sdp.answer(sdp.parse(OFFER), LOCAL, require_srtp=True)
    assert failed.value.status == 488 and "SRTP" in failed.value.reason
    with pytest.raises(sdp.SdpError) as failed:
        sdp.parse("o=missing version\r\n")
    assert failed.value.status == 400


def test_sdes_answer_uses_the_offers_tag_and_suite_and_a_fresh_key() -> None:
    key = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"
    offer = OFFER.replace("RTP/AVP 8 0 18 101", "RTP/SAVP 0 101") + \
        f"a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{key}|2^20|1:32\na=crypto:4 F8_128_HMAC_SHA1_80 inline:{key}\n"
    text, agreed = sdp.answer(sdp.parse(offer), LOCAL, require_srtp=True)
    assert agreed.secure and agreed.remote_crypto.key == key and agreed.remote_crypto.tag == 3
    assert agreed.local_crypto.suite == "AES_CM_128_HMAC_SHA1_32" and agreed.local_crypto.key != key
    assert f"a=crypto:3 AES_CM_128_HMAC_SHA1_32 inline:{agreed.local_crypto.key}" in text
    assert "m=audio 40000 RTP/SAVP 0 101" in text


@pytest.mark.parametrize("attribute,ours,sending", [("a=sendonly", "recvonly", False), ("a=recvonly", "sendonly", True),
                                                     ("a=inactive", "inactive", False), ("", "sendrecv", True)])
def test_hold_directions(attribute: str, ours: str, sending: bool) -> None:
    text, agreed = sdp.answer(sdp.parse(OFFER + attribute + "\n"), LOCAL)
    assert agreed.direction == ours and f"a={ours}" in text and agreed.sending is sending


def test_rfc2543_hold_with_zero_address() -> None:
    _, agreed = sdp.answer(sdp.parse(OFFER.replace("c=IN IP4 192.0.2.10", "c=IN IP4 0.0.0.0")), LOCAL)
    assert agreed.direction == "recvonly" and not agreed.sending


def test_ice_attributes_when_offered_and_used() -> None:
    offer = OFFER + ("a=ice-ufrag:abcd\na=ice-pwd:0123456789abcdef0123456789\na=rtcp-mux\n"
                     "a=candidate:1 1 udp 16777215 203.0.113.7 51000 typ relay raddr 10.0.0.2 rport 4000\n")
    local = sdp.LocalMedia("203.0.113.9", 52000, ice=sdp.IceParams("u1", "p" * 22, [
        sdp.IceCandidate("2", 1, "udp", 16777215, "203.0.113.9", 52000, "relay", "0.0.0.0", 9)]))
    text, agreed = sdp.answer(sdp.parse(offer), local, use_ice=True)
    assert agreed.remote_ice.ufrag == "abcd" and agreed.remote_ice.candidates[0].port == 51000 and agreed.rtcp_mux
    assert "a=ice-ufrag:u1" in text and "a=candidate:2 1 udp 16777215 203.0.113.9 52000 typ relay raddr 0.0.0.0 " \
                                          "rport 9" in text and "a=rtcp-mux" in text
    text, agreed = sdp.answer(sdp.parse(offer), local, use_ice=False)  # worker without the edge: no ICE
    assert agreed.remote_ice is None and "ice-ufrag" not in text


def test_offer_and_accept_answer_round_trip() -> None:
    crypto = sdp.new_crypto()
    offer = sdp.offer(LOCAL, srtp=crypto)
    _, theirs = sdp.answer(sdp.parse(offer), sdp.LocalMedia("192.0.2.50", 6000))
    answer_text, _ = sdp.answer(sdp.parse(offer), sdp.LocalMedia("192.0.2.50", 6000))
    agreed = sdp.accept_answer(sdp.parse(answer_text), LOCAL, crypto)
    assert agreed.codec == "PCMU" and agreed.remote_rtp == ("192.0.2.50", 6000) and agreed.dtmf_pt == 101
    assert agreed.local_crypto is crypto and agreed.remote_crypto is not None and theirs.secure


# --- RTP, jitter buffer, RTCP --------------------------------------------------------------------
def packets(count: int, seq: int = 65530, ts: int = 4294967000, ssrc: int = 7, pt: int = 0) -> list[RtpPacket]:
    return [RtpPacket(payload_type=pt, sequence_number=(seq + i) & 0xFFFF, timestamp=(ts + 160 * i) & 0xFFFFFFFF,
                      ssrc=ssrc, payload=bytes([i & 0xFF]) * 160) for i in range(count)]


def test_jitter_buffer_reorders_and_drops_late_and_duplicate_packets() -> None:
    receiver = RtpReceiver(jitter_depth=3)
    stream = packets(12)  # crosses the sequence number wrap
    order = [0, 2, 1, 3, 5, 4, 4, 6, 8, 7, 9, 10, 11]
    out = []
    for n, index in enumerate(order):
        out += receiver.receive(stream[index], n * 0.02)
    out += receiver.flush()
    assert [p.payload[0] for p in out] == list(range(12))
    assert receiver.buffer.duplicates == 1
    late = RtpReceiver(jitter_depth=2)
    got = []
    for n, index in enumerate([0, 1, 2, 3, 4, 5, 1]):
        got += late.receive(stream[index], n * 0.02)
    assert late.buffer.late == 1 and [p.payload[0] for p in got] == [0, 1, 2, 3]


def test_jitter_buffer_gives_up_on_a_gap() -> None:
    buffer = JitterBuffer(depth=3)
    stream = packets(8)
    released = []
    for index in (0, 1, 3, 4, 5, 6, 7):  # 2 is lost
        released += buffer.push(index, stream[index])
    assert [p.payload[0] for p in released] == [0, 1, 3, 4]


def test_receiver_statistics_loss_and_jitter() -> None:
    receiver = RtpReceiver(jitter_depth=0)
    stream = packets(100)
    for index, packet in enumerate(stream):
        if index % 10 == 3:
            continue  # 10 % loss
        receiver.receive(packet, index * 0.02 + (0.005 if index % 2 else 0.0))  # 5 ms alternating jitter
    stats = receiver.stats
    assert stats.expected == 100 and stats.received == 90 and stats.lost == 10
    assert 30 <= stats.jitter <= 45  # RFC 3550 A.8 converges to ~40 timestamp units (5 ms)
    block = receiver.report_block(10.0)
    assert block.packets_lost == 10 and block.fraction_lost == 25 and block.ssrc == 7


def test_rtcp_compound_sr_and_rr_parse_with_aiortc() -> None:
    sender, receiver = RtpSender(0), RtpReceiver()
    for packet in packets(5):
        receiver.receive(packet, 0.0)
    sender.packet(b"\xff" * 160, 160)
    sr = rtcp_compound(sender, receiver, 1000.0, sent_recently=True)
    assert is_rtcp(sr)
    parsed = RtcpPacket.parse(sr)
    assert isinstance(parsed[0], RtcpSrPacket) and parsed[0].sender_info.packet_count == 1
    assert parsed[0].reports[0].ssrc == 7 and isinstance(parsed[1], RtcpSdesPacket)
    rr = RtcpPacket.parse(rtcp_compound(sender, receiver, 1000.0, sent_recently=False, bye=True))
    assert isinstance(rr[0], RtcpRrPacket) and len(rr) == 3


# --- DTMF and SRTP ------------------------------------------------------------------------------
def test_rfc4733_events_round_trip_once_per_digit() -> None:
    decoder = DtmfDecoder()
    digits = []
    for n, digit in enumerate("159#*D"):
        for payload, _ in event_payloads(digit):
            found = decoder.feed(1000 * n, payload)
            if found:
                digits.append(found)
    assert "".join(digits) == "159#*D"
    last = parse_event(event_payloads("7", duration_ms=120)[-1][0])
    assert last.digit == "7" and last.end and last.duration == 960


def test_srtp_sdes_both_ways() -> None:
    a, b = sdp.new_crypto(), sdp.new_crypto()
    alice, bob = SrtpContext(a, b), SrtpContext(b, a)
    rtp = packets(1)[0].serialize()
    protected = alice.protect(rtp)
    assert protected != rtp and len(protected) == len(rtp) + 10
    assert bob.unprotect(protected) == rtp
    assert bob.unprotect(protected) is None and bob.failures == 1  # a replay
    rtcp = rtcp_compound(RtpSender(0), None, 0.0, False)
    assert alice.unprotect_rtcp(bob.protect_rtcp(rtcp)) == rtcp


# --- the store and PINs -------------------------------------------------------------------------
def test_store_commit_list_export_and_recover(tmp_path: Path) -> None:
    store = VoicemailStore(tmp_path)
    recording = store.start("1001", "PCMU", caller="sip:5550100@gw", call_id="c1")
    recording.write(b"\x11" * 8000)
    recording.write(b"\x22" * 801)
    message = recording.commit("bye", keep=8400)
    assert (message.duration, message.bytes, message.codec) == (1.05, 8400, "PCMU")
    assert store.verify(message) and store.counts("1001") == (1, 1)
    assert store.audio(message).data == b"\x11" * 8000 + b"\x22" * 400
    store.mark_read(message)
    assert store.counts("1001") == (0, 1) and store.find(message.id).read
    store.export(message.id, tmp_path / "out.wav", pcm16=True)
    assert wav.read(tmp_path / "out.wav").as_g711("PCMU") == store.audio(message).data
    torn = store.start("1001", "PCMU", caller="sip:5550199@gw")
    torn.write(b"\x33" * 101)  # a crash here: only .tmp holds it
    (store.mailbox_dir("1001") / "20200101T000000Z-deadbeef.wav").write_bytes(b"RIFF")  # unreadable, no JSON
    whole = store.start("1002", "PCMA")
    whole.write(b"\x44" * 800)
    published = whole.commit("bye")
    (store.mailbox_dir("1002") / f"{published.id}.json").unlink()  # a crash between the WAV's rename and its JSON
    assert len(store.messages()) == 1
    done = store.recover()
    assert [line.split(" ", 1)[0] for line in done].count("recovered") == 2 and not list(store.tmp_dir.iterdir())
    assert any("deadbeef.wav (unreadable)" in line for line in done)
    interrupted = store.find(torn.id)
    assert (interrupted.reason, interrupted.bytes, interrupted.caller) == ("interrupted", 101, "sip:5550199@gw")
    assert store.verify(interrupted) and store.audio(interrupted).data == b"\x33" * 101
    again = store.find(published.id)
    assert (again.reason, again.bytes, again.codec) == ("recovered", 800, "PCMA") and store.verify(again)
    assert len(store.messages()) == 3 and store.recover() == []
    with pytest.raises(StoreError):
        store.find("../../etc/passwd")


def test_a_worker_process_finishes_only_its_own_slots_message_left_without_json(tmp_path: Path) -> None:
    """recover(folders=False), as a replacement worker process runs it: a WAV renamed into place whose JSON
    never came is finished when its sidecar is in this slot's .tmp, and left alone when it is another's."""
    stores = []
    for slot in (1, 2):
        store = VoicemailStore(tmp_path)
        store.tmp_dir = store.root / f".tmp-slot{slot}"
        stores.append(store)
    killed, running = [], []
    for store, kept in zip(stores, (killed, running), strict=True):
        recording = store.start("1001", "PCMU", caller=f"sip:{store.tmp_dir.name}@gw")
        recording.write(b"\x55" * 800)
        sidecar = recording.meta_path.read_bytes()
        message = recording.commit("bye")
        recording.meta_path.write_bytes(sidecar)  # killed after the WAV's rename: sidecar still there...
        (store.mailbox_dir("1001") / f"{message.id}.json").unlink()  # ...and no JSON
        kept.append(message.id)
    assert stores[0].messages() == []
    done = stores[0].recover(folders=False)
    assert [line.split(" ", 1)[0] for line in done] == ["recovered", "removed"]
    finished = stores[0].find(killed[0])
    assert (finished.reason, finished.caller, finished.bytes) == ("recovered", "sip:.tmp-slot1@gw", 800)
    assert [m.id for m in stores[0].messages()] == killed  # slot 2's message is not touched
    assert (stores[1].tmp_dir / f"{running[0]}.meta").exists()
    with pytest.raises(StoreError):
        store.start("../x", "PCMU")


def test_pin_policy() -> None:
    policy = PinPolicy(min_length=6)
    for bad in ("12345", "111111", "123456", "987654", "12a456", "٣٣٣٣٣٤"):
        with pytest.raises(PinPolicyError):
            policy.check(bad)
    assert policy.check("246813") == "246813"
    assert len(policy.generate()) == 6


def test_pins_are_salted_hashes_and_lock_after_five_failures(tmp_path: Path) -> None:
    pins = PinStore(tmp_path, PinPolicy(max_failures=5))
    assert pins.verify("1001", "246813") == pins.NO_PIN
    pins.set_pin("1001", "246813")
    pins.set_pin("1002", "246813")
    stored = [(tmp_path / "voicemail" / m / "pin.json").read_text() for m in ("1001", "1002")]
    assert "246813" not in stored[0] and stored[0] != stored[1]  # salted: same PIN, different hashes
    assert pins.verify("1001", "246813") == pins.OK
    assert [pins.verify("1001", "000000") for _ in range(4)] == [pins.WRONG] * 4
    assert pins.verify("1001", "246813") == pins.OK  # a right PIN resets the count
    assert [pins.verify("1001", "999999") for _ in range(5)] == [pins.WRONG] * 4 + [pins.LOCKED]
    assert pins.verify("1001", "246813") == pins.LOCKED and pins.status("1001")["locked"]
    new = pins.reset("1001")
    assert pins.verify("1001", new) == pins.OK and not pins.status("1001")["locked"]


def test_wrong_pins_from_two_worker_processes_are_all_counted(tmp_path: Path) -> None:
    """Both worker processes share the store: a failure counted in one is never lost to the other's write."""
    PinStore(tmp_path).set_pin("1001", "246813")
    script = ("import sys; from um.worker.pins import PinPolicy, PinStore; "
              "pins = PinStore(sys.argv[1], PinPolicy(max_failures=100)); "
              "print([pins.verify('1001', '000000') for _ in range(8)].count('wrong'))")
    runs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                             cwd=ROOT) for _ in range(2)]
    outputs = [run.communicate(timeout=60)[0].strip() for run in runs]
    assert outputs == ["8", "8"]
    assert PinStore(tmp_path).status("1001")["failures"] == 16


# --- the recorder ---------------------------------------------------------------------------------
def test_recorder_fills_gaps_transcodes_and_stops_at_the_limit() -> None:
    written: list[bytes] = []
    now = [0.0]
    recorder = Recorder(written.append, "PCMU", max_samples=800, silence_timeout=2.0, clock=lambda: now[0])
    loud = g711.encode(g711.tone((440.0,), 0.02, 0.5), "PCMA")
    stream = [RtpPacket(payload_type=8, sequence_number=i, timestamp=1000 + 160 * i, ssrc=1, payload=loud)
              for i in range(6)]
    recorder.write(stream[0], "PCMA")
    recorder.write(stream[2], "PCMA")  # 1 lost: 160 samples of silence
    assert b"".join(written) == g711.transcode(loud, "PCMA", "PCMU") + g711.silence(160, "PCMU") + \
        g711.transcode(loud, "PCMA", "PCMU")
    now[0] = 1.0
    assert recorder.stop_reason() is None
    for packet in stream[3:]:
        recorder.write(packet, "PCMA")
    assert recorder.samples == 800 and recorder.stop_reason() == "max-length"
    quiet = Recorder(written.append, "PCMU", 10**6, silence_timeout=2.0, clock=lambda: now[0])
    now[0] = 3.5
    assert quiet.stop_reason() == "silence"


# --- the call scripts, with a fake call ---------------------------------------------------------
class FakeCall:
    codec = "PCMU"

    def __init__(self, digits: str = "", pin_results: list[str] | None = None) -> None:
        self.ended = False
        self.digits = list(digits)
        self.played: list[bytes] = []
        self.events: list[str] = []
        self.pin_results = pin_results or []
        self.pins_tried: list[str] = []

    async def play(self, audio: bytes, barge_in: bool = False) -> bool:
        self.played.append(audio)
        return True

    async def collect(self, max_digits: int, timeout: float, terminator: str = "#") -> str | None:
        text = ""
        while self.digits and len(text) < max_digits:
            digit = self.digits.pop(0)
            if digit == terminator:
                return text
            text += digit
        return text

    async def record(self, mailbox: str) -> tuple[object, str]:
        self.events.append(f"record {mailbox}")
        return None, "hash"

    async def capture(self, max_seconds: float) -> bytes | None:
        return None

    async def verify_pin(self, mailbox: str, pin: str) -> str:
        self.pins_tried.append(pin)
        return self.pin_results.pop(0)

    async def hangup(self) -> None:
        self.events.append("hangup")
        self.ended = True

    def log(self, text: str, **fields: object) -> None:
        self.events.append(text.format(**fields))


def test_take_message_plays_greeting_and_tone_then_records_and_hangs_up() -> None:
    prompts = Prompts()
    call = FakeCall()
    asyncio.run(menus.take_message(call, "1001", prompts, "en"))  # type: ignore[arg-type]
    assert call.played[:2] == [prompts.greeting("1001", "PCMU"), prompts.get("beep", "PCMU")]
    assert call.events[0] == "record 1001" and call.events[-1] == "hangup"


def _mailbox(store: VoicemailStore) -> menus.Mailbox:
    """Mailbox 1001 with a PIN set, its messages in `store`."""
    return menus.Mailbox(messages=store.messages, audio=lambda m, c: store.audio(m).as_g711(c),
                         mark_read=store.mark_read, delete=store.delete, pin_status=lambda m: {"pin_set": True},
                         set_pin=lambda m, p: None, known=lambda ext: ext == "1001")


def test_subscriber_access_locks_after_five_wrong_pins(tmp_path: Path) -> None:
    call = FakeCall("1001#111111#222222#333333#444444#555555#", ["wrong"] * 4 + ["locked"])
    outcome = asyncio.run(menus.subscriber_access(
        call, Prompts(), "en", _mailbox(VoicemailStore(tmp_path)), mailbox=None, caller="5550100"))  # type: ignore[arg-type]
    assert outcome == "locked" and call.pins_tried == ["111111", "222222", "333333", "444444", "555555"]
    assert call.events[-1] == "hangup" and call.played[-2] == Prompts().get("locked", "PCMU")


def test_subscriber_access_plays_new_messages_and_marks_them_read(tmp_path: Path) -> None:
    store = VoicemailStore(tmp_path)
    ids = []
    for fill in (b"\x10", b"\x20"):
        recording = store.start("1001", "PCMU")
        recording.write(fill * 8000)
        ids.append(recording.commit("bye").id)
    call = FakeCall("246813#22*", ["ok"])  # the PIN; 2: next message, twice; *: goodbye
    outcome = asyncio.run(menus.subscriber_access(
        call, Prompts(), "en", _mailbox(store), mailbox="1001", caller="5550100"))  # type: ignore[arg-type]
    assert outcome == "done" and b"\x10" * 8000 in call.played and b"\x20" * 8000 in call.played
    assert call.played[1] == Prompts().get("count-pip", "PCMU") and store.counts("1001") == (0, 2)
    assert call.events[-1] == "hangup" and call.played[-1] == Prompts().get("goodbye", "PCMU")


def test_a_bye_on_a_dead_connection_does_not_skip_the_call_cleanup(tmp_path: Path) -> None:

    from twisted.logger import globalLogPublisher

    from um.directory import CallDirectory, Directory
    from um.sip.dialog import Dialog
    from um.sip.message import new_tag
    from um.sip.parser import parse_datagram
    from um.sip.stream import Peer
    from um.slots import WorkerSlot
    from um.worker.call import Call
    from um.worker.context import WorkerContext
    from um.worker.handler import WorkerCalls
    from um.worker.settings import WorkerSettings

    class DeadConnection:
        def send_request(self, request: object) -> None:
            raise RuntimeError("unable to perform operation on a closed handle")

    class Media:
        closed = False

        def stats(self) -> dict[str, int]:
            return {}

        async def close(self) -> None:
            self.closed = True

    invite = parse_datagram(b"INVITE sip:5000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:5999;branch=z9hG4bK-d\r\n"
                            b"From: <sip:gw@127.0.0.1>;tag=a\r\nTo: <sip:1001@127.0.0.1>\r\nCall-ID: dead@test\r\n"
                            b"CSeq: 1 INVITE\r\nContact: <sip:gw@127.0.0.1:5999;transport=tcp>\r\n"
                            b"Content-Length: 0\r\n\r\n")
    seen: list[dict[str, object]] = []
    globalLogPublisher.addObserver(seen.append)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        context = WorkerContext(WorkerSettings(host="127.0.0.1", advertise="127.0.0.1", state_dir=str(tmp_path),
                                               certs_dir=str(tmp_path), node_name="n", domain="example.test"),
                                CallDirectory(Directory()))
        calls = WorkerCalls(context)
        slot = WorkerSlot(1, 5065, None, state="active")
        dialog = Dialog.uas(invite, new_tag())
        dialog.data["connection"] = DeadConnection()
        call = Call(context, calls, None, slot, dialog, invite, Peer("127.0.0.1", 5999, "tcp"), "voicemail",
                    "1001", False)
        media = call.media = Media()  # type: ignore[assignment]
        context.calls[dialog.id] = slot.calls[dialog.id] = call  # type: ignore[assignment]
        loop.run_until_complete(call.end("shutdown", send_bye=True))
    finally:
        globalLogPublisher.removeObserver(seen.append)
        asyncio.set_event_loop(None)
        loop.close()
    assert media.closed and dialog.id not in context.calls and dialog.id not in slot.calls
    assert any("BYE not sent" in str(event.get("log_format")) for event in seen)


def test_urgent_messages_are_counted_apart_and_stay_urgent_through_a_crash(tmp_path: Path) -> None:
    store = VoicemailStore(tmp_path)
    for urgent in (True, False):
        recording = store.start("1001", "PCMU", urgent=urgent)
        recording.write(b"\x55" * 800)
        recording.commit("bye")
    assert store.summary("1001") == (2, 0, 1, 0)
    store.mark_read(next(m for m in store.messages("1001") if m.urgent))
    assert store.summary("1001") == (1, 1, 0, 1)
    interrupted = store.start("1002", "PCMA", urgent=True)
    interrupted.write(b"\xd5" * 800)  # the worker dies here
    store.recover()
    [message] = store.messages("1002")
    assert message.urgent and message.reason == "interrupted" and store.summary("1002") == (1, 0, 1, 0)


def test_a_dial_plans_pin_policy_applies_to_its_mailboxes(tmp_path: Path) -> None:
    """[[callrouter.dial_plans]] pin_min_length / pin_max_failures (Exchange's UM mailbox policy) over [worker]'s."""
    plans = parse_dial_plans([{"name": "strict", "pin_min_length": 8, "pin_max_failures": 2}, {"name": "default"}])
    directory = CallDirectory(assemble(plans, parse_mailboxes([
        {"extension": "1000-1009", "dial_plan": "strict"}, {"extension": "2000-2009", "dial_plan": "default"}]), ()),
        ())
    base = PinPolicy(min_length=6, max_failures=5)
    pins = PinStore(tmp_path, base, lambda mailbox: plan_policy(base, directory.plan_of(mailbox)))
    with pytest.raises(PinPolicyError, match="8-24 digits"):
        pins.set_pin("1001", "246813")  # six digits: enough for [worker], not for the strict plan
    pins.set_pin("1001", "24681357")
    pins.set_pin("2001", "246813")
    assert [pins.verify("1001", "00000000") for _ in range(2)] == [pins.WRONG, pins.LOCKED]  # two, not five
    assert [pins.verify("2001", "000000") for _ in range(2)] == [pins.WRONG, pins.WRONG]
    assert len(pins.reset("1009")) >= 8 and len(pins.reset("2009")) == 6  # generated to each plan's policy
    with pytest.raises(DirectoryError, match=r"pin_min_length 3: allowed an integer 4-24, or 0 for the \[worker\]"):
        parse_dial_plans([{"name": "weak", "pin_min_length": 3}])


def test_the_main_process_finishes_a_slots_message_with_its_caller_and_urgency(tmp_path: Path) -> None:
    """At node start (recover with folders): a WAV a worker process published without its JSON gets the caller,
    call id and urgency its slot's sidecar recorded, not blanks."""
    slot = VoicemailStore(tmp_path)
    slot.tmp_dir = slot.root / ".tmp-slot2"
    recording = slot.start("1001", "PCMU", caller="sip:5550100@gw", caller_name="Eve", call_id="c9", urgent=True)
    recording.write(b"\x55" * 800)
    sidecar = recording.meta_path.read_bytes()
    message = recording.commit("bye")
    recording.meta_path.write_bytes(sidecar)  # killed after the WAV's rename
    (slot.mailbox_dir("1001") / f"{message.id}.json").unlink()
    main = VoicemailStore(tmp_path)  # the node's main process, before its worker processes start
    assert any(line.startswith("recovered") for line in main.recover())
    finished = main.find(message.id)
    assert (finished.caller, finished.caller_name, finished.call_id, finished.urgent, finished.reason) == (
        "sip:5550100@gw", "Eve", "c9", True, "recovered")
