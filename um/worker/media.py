"""A call's media: transport + RTP/RTCP state + SRTP + DTMF + playout and recording, on one media clock.

The I/O edge of the worker's media. The decisions stay in the sans-I/O
pieces (um.worker.rtp, dtmf, srtp, g711): a `MediaSession` feeds received
datagrams through them and hands audio to a `Recorder` and digits to a
callback; `play()` queues audio that the shared `MediaClock` sends one
frame per packetization interval. One clock serves every call of the
process (a timer per call would cost more than the calls).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc.rtp import RtcpByePacket, RtcpRrPacket, RtcpSrPacket, RtpPacket
from twisted.logger import Logger

from um.worker import g711
from um.worker.dtmf import DtmfDecoder
from um.worker.rtp import RtpReceiver, RtpSender, is_rtcp, parse_rtcp, rtcp_compound
from um.worker.sdp import Negotiated
from um.worker.srtp import SrtpContext
from um.worker.transport import MediaTransport

log = Logger(namespace="umedge.worker.media")
RTCP_INTERVAL = 5.0
MAX_GAP_SAMPLES = 2 * 8000  # a timestamp jump beyond this is a discontinuity, not lost audio


class Recorder:
    """Writes received audio into a recording in timestamp order: gaps become silence, codecs are unified.

    `sink` takes bytes (um.worker.store.Recording.write). Loudness is
    tracked per sample position so trailing silence can be trimmed.
    """

    def __init__(self, sink: Callable[[bytes], None], codec: str, max_samples: int,
                 silence_timeout: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.sink, self.codec, self.max_samples = sink, codec, max_samples
        self.silence_timeout = silence_timeout
        self._clock = clock
        self.started = self.last_loud_time = clock()
        self.samples = 0
        self.last_loud = 0          # sample position just after the last loud packet
        self.loud_packets = 0
        self._base: int | None = None  # RTP timestamp of sample position 0 (shifted on discontinuities)
        self._ssrc: int | None = None
        self.full = False

    def write(self, packet: RtpPacket, codec: str) -> None:
        if self.full:
            return
        payload = packet.payload
        if self._base is None or packet.ssrc != self._ssrc:
            self._base = (packet.timestamp - self.samples) & 0xFFFFFFFF
            self._ssrc = packet.ssrc
        position = (packet.timestamp - self._base) & 0xFFFFFFFF
        if position >= 1 << 31:   # older than what we have: overlaps, drop
            return
        if position > self.samples + MAX_GAP_SAMPLES:  # a jump: continue where we are
            self._base = (packet.timestamp - self.samples) & 0xFFFFFFFF
            position = self.samples
        if position < self.samples:
            payload = payload[self.samples - position:]
            position = self.samples
            if not payload:
                return
        if position > self.samples:
            gap = position - self.samples
            self._emit(g711.silence(gap, self.codec))
        audio = g711.transcode(payload, codec, self.codec)
        if g711.loud_samples(audio, self.codec) > len(audio) // 8:
            self.loud_packets += 1
            self.last_loud = self.samples + len(audio)
            self.last_loud_time = self._clock()
        self._emit(audio)

    def stop_reason(self, now: float | None = None) -> str | None:
        """Why recording should end now: "max-length", "silence" (nothing loud for silence_timeout), or None."""
        if self.full:
            return "max-length"
        now = self._clock() if now is None else now
        if self.silence_timeout and now - self.last_loud_time >= self.silence_timeout:
            return "silence"
        return None

    def _emit(self, audio: bytes) -> None:
        room = self.max_samples - self.samples
        if len(audio) >= room:
            audio = audio[:room]
            self.full = True
        if audio:
            self.sink(audio)
            self.samples += len(audio)


class MediaClock:
    """Ticks every packetization interval for the sessions that are playing; housekeeping every 100 ms."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.playing: set[MediaSession] = set()
        self.sessions: set[MediaSession] = set()
        self._handle: asyncio.TimerHandle | None = None
        self._house: asyncio.TimerHandle | None = None
        self._start = 0.0
        self.tick_index = 0
        self.late_ticks = 0
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_event_loop()
        self._start = self._loop.time()
        self.tick_index = 0
        self._handle = self._loop.call_at(self._start + self.interval, self._tick)
        self._house = self._loop.call_later(0.1, self._housekeeping)

    def stop(self) -> None:
        for handle in (self._handle, self._house):
            if handle is not None:
                handle.cancel()
        self._loop = None

    def now_tick(self) -> int:
        if self._loop is None:
            return 0
        return int((self._loop.time() - self._start) / self.interval)

    def _tick(self) -> None:
        loop = self._loop
        if loop is None:
            return
        due = int((loop.time() - self._start) / self.interval)
        if due <= self.tick_index:  # woken early (some loops' timers, uvloop's, have millisecond granularity)
            self._handle = loop.call_at(self._start + (self.tick_index + 1) * self.interval + 0.0005, self._tick)
            return
        if due > self.tick_index + 1:
            self.late_ticks += due - self.tick_index - 1
        frames = min(3, due - self.tick_index)  # catch up a little after a stall
        self.tick_index = due
        for session in list(self.playing):
            try:
                session.tick(due, frames)
            except Exception:  # noqa: BLE001 - one call's failure must not stop the clock
                log.failure("media tick failed")
                self.playing.discard(session)
        self._handle = loop.call_at(self._start + (due + 1) * self.interval + 0.0005, self._tick)

    def _housekeeping(self) -> None:
        loop = self._loop
        if loop is None:
            return
        now = time.time()
        for session in list(self.sessions):
            try:
                session.housekeeping(now)
            except Exception:  # noqa: BLE001
                log.failure("media housekeeping failed")
        self._house = loop.call_later(0.1, self._housekeeping)


class MediaSession:
    """One call's media. Callbacks: on_digit(digit), on_media_end(reason)."""

    def __init__(self, transport: MediaTransport, negotiated: Negotiated, clock: MediaClock,
                 jitter_depth: int = 3, media_timeout: float = 30.0, cname: str = "umedge") -> None:
        self.transport = transport
        self.negotiated = negotiated
        self.clock = clock
        self.sender = RtpSender(negotiated.payload_type)
        self.sender.cname = cname.encode()
        self.receiver = RtpReceiver(8000, jitter_depth)
        self.dtmf = DtmfDecoder()
        self.srtp: SrtpContext | None = None
        if negotiated.local_crypto is not None and negotiated.remote_crypto is not None:
            self.srtp = SrtpContext(negotiated.local_crypto, negotiated.remote_crypto)
        self.samples_per_frame = 8 * negotiated.ptime
        self.on_digit: Callable[[str], None] = lambda digit: None
        self.on_media_end: Callable[[str], None] = lambda reason: None
        self.on_record_stop: Callable[[str], None] = lambda reason: None
        self.recorder: Recorder | None = None
        self.inband: Any = None  # um.worker.goertzel.InbandDetector when no telephone-event was negotiated
        self._queue: deque[tuple[bytes, asyncio.Future[bool]]] = deque()
        self._offset = 0
        self._new_spurt = True
        self._ts_base = self.sender.timestamp
        self._tick_base = clock.now_tick()
        self.media_timeout = media_timeout
        self.last_packet = time.time()
        self._next_rtcp = time.time() + RTCP_INTERVAL * random.uniform(0.5, 1.5)
        self._sent_since_report = 0
        self.remote_reports: list[Any] = []
        self.counters = {"rtp_in": 0, "rtp_out": 0, "rtcp_in": 0, "rtcp_out": 0, "dropped": 0, "srtp_failed": 0,
                         "digits": 0}
        self.closed = False
        transport.on_packet = self.on_packet
        clock.sessions.add(self)

    # --- receiving ------------------------------------------------------------------------
    def on_packet(self, data: bytes) -> None:
        if self.closed or len(data) < 8:
            return
        self.last_packet = time.time()
        if is_rtcp(data):
            if self.srtp is not None:
                data = self.srtp.unprotect_rtcp(data)  # type: ignore[assignment]
                if data is None:
                    self.counters["srtp_failed"] += 1
                    return
            self._rtcp(data)
            return
        if self.srtp is not None:
            plain = self.srtp.unprotect(data)
            if plain is None:
                self.counters["srtp_failed"] += 1
                return
            data = plain
        try:
            packet = RtpPacket.parse(data)
        except ValueError:
            self.counters["dropped"] += 1
            return
        self.counters["rtp_in"] += 1
        negotiated = self.negotiated
        if packet.payload_type not in (negotiated.payload_type, negotiated.dtmf_pt, 0, 8):
            self.counters["dropped"] += 1  # comfort noise and the like
            return
        for ready in self.receiver.receive(packet, time.monotonic()):
            self._deliver(ready)

    def _deliver(self, packet: RtpPacket) -> None:
        negotiated = self.negotiated
        if packet.payload_type == negotiated.dtmf_pt:
            digit = self.dtmf.feed(packet.timestamp, packet.payload)
            if digit is not None:
                self.counters["digits"] += 1
                self.on_digit(digit)
            return
        codec = g711.PCMA if packet.payload_type == 8 else g711.PCMU
        if self.inband is not None:  # no telephone-event offered: digits in band (um.worker.goertzel)
            for digit in self.inband.feed(packet.payload, codec):
                self.counters["digits"] += 1
                self.on_digit(digit)
        recorder = self.recorder
        if recorder is not None:
            recorder.write(packet, codec)

    def flush(self) -> None:
        """Deliver what the jitter buffer still holds (the end of a recording)."""
        for packet in self.receiver.flush():
            self._deliver(packet)

    def _rtcp(self, data: bytes) -> None:
        self.counters["rtcp_in"] += 1
        for packet in parse_rtcp(data):
            if isinstance(packet, RtcpSrPacket):
                self.receiver.on_sender_report(packet, time.time())
                self.remote_reports = list(packet.reports)
            elif isinstance(packet, RtcpRrPacket):
                self.remote_reports = list(packet.reports)
            elif isinstance(packet, RtcpByePacket):
                self.on_media_end("rtcp-bye")

    # --- sending --------------------------------------------------------------------------
    def play(self, audio: bytes) -> asyncio.Future[bool]:
        """Queue audio; the future is True when it has been sent, False if stopped first."""
        future: asyncio.Future[bool] = asyncio.get_event_loop().create_future()
        if not audio or self.closed:
            future.set_result(not self.closed)
            return future
        self._queue.append((audio, future))
        self.clock.playing.add(self)
        return future

    def stop_playing(self) -> None:
        while self._queue:
            _, future = self._queue.popleft()
            if not future.done():
                future.set_result(False)
        self._offset = 0
        self._new_spurt = True
        self.clock.playing.discard(self)

    @property
    def is_playing(self) -> bool:
        return bool(self._queue)

    def tick(self, tick: int, frames: int = 1) -> None:
        for index in range(frames):
            if not self._queue:
                self.clock.playing.discard(self)
                return
            self._send_frame(tick - frames + 1 + index)

    def _send_frame(self, tick: int) -> None:
        audio, future = self._queue[0]
        size = self.samples_per_frame
        frame = audio[self._offset:self._offset + size]
        self._offset += size
        if len(frame) < size:
            frame += g711.silence(size - len(frame), self.negotiated.codec)
        if self._offset >= len(audio):
            self._queue.popleft()
            self._offset = 0
            if not future.done():
                future.set_result(True)
        sender = self.sender
        sender.timestamp = (self._ts_base + (tick - self._tick_base) * size) & 0xFFFFFFFF
        marker = self._new_spurt
        self._new_spurt = not self._queue
        if not self.negotiated.sending:
            return
        packet = sender.packet(frame, size, marker=marker, advance=False)
        data = packet.serialize()
        if self.srtp is not None:
            data = self.srtp.protect(data)
        self.transport.send_rtp(data)
        self.counters["rtp_out"] += 1
        self._sent_since_report += 1

    async def send_digit(self, digit: str) -> None:
        """Send an RFC 4733 event (outbound calls, tests)."""
        from um.worker.dtmf import event_payloads

        pt = self.negotiated.dtmf_pt
        if pt is None:
            raise ValueError("telephone-event was not negotiated")
        timestamp = (self._ts_base + (self.clock.now_tick() - self._tick_base) * self.samples_per_frame) & 0xFFFFFFFF
        for payload, marker in event_payloads(digit, ptime=self.negotiated.ptime):
            self.sender.timestamp = timestamp
            data = self.sender.packet(payload, 0, marker=marker, payload_type=pt, advance=False).serialize()
            self.transport.send_rtp(self.srtp.protect(data) if self.srtp else data)
            await asyncio.sleep(self.negotiated.ptime / 1000)

    # --- RTCP and timeouts ---------------------------------------------------------------
    def housekeeping(self, now: float) -> None:
        if self.closed:
            return
        if now >= self._next_rtcp:
            self._next_rtcp = now + RTCP_INTERVAL * random.uniform(0.5, 1.5)
            self.send_rtcp(now)
        recorder = self.recorder
        if recorder is not None:
            reason = recorder.stop_reason()
            if reason is not None:
                self.on_record_stop(reason)
        if self.media_timeout and now - self.last_packet > self.media_timeout:
            self.last_packet = now
            self.on_media_end("media-timeout")

    def send_rtcp(self, now: float | None = None, bye: bool = False) -> None:
        data = rtcp_compound(self.sender, self.receiver, now or time.time(), self._sent_since_report > 0, bye)
        self._sent_since_report = 0
        if self.srtp is not None:
            data = self.srtp.protect_rtcp(data)
        self.transport.send_rtcp(data)
        self.counters["rtcp_out"] += 1

    def update(self, negotiated: Negotiated) -> None:
        """A re-INVITE/UPDATE changed direction, codec or address."""
        self.negotiated = negotiated
        self.sender.payload_type = negotiated.payload_type

    def stats(self) -> dict[str, Any]:
        s = self.receiver.stats
        return {**self.counters, "received": s.received, "expected": s.expected, "lost": s.lost,
                "jitter_ms": round(s.jitter / 8.0, 2), "max_jitter_ms": round(s.max_jitter / 8.0, 2),
                "late": self.receiver.buffer.late, "transport": self.transport.describe()}

    async def close(self) -> None:
        if self.closed:
            return
        try:
            self.send_rtcp(bye=True)
        except Exception:  # noqa: BLE001
            pass
        self.closed = True
        self.stop_playing()
        self.clock.sessions.discard(self)
        await self.transport.close()
