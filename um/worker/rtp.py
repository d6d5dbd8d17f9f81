"""RTP and RTCP state of one call with aiortc's packet classes, sans-I/O (RFC 3550).

`RtpReceiver` takes parsed packets and their arrival times: it keeps the
RFC 3550 A.1/A.3/A.8 statistics (extended sequence numbers, cumulative and
interval loss, interarrival jitter), passes packets through a jitter buffer
that releases them in sequence order, and builds receiver report blocks.
`RtpSender` numbers and timestamps outgoing frames and builds the sender
info. `rtcp_compound` builds SR or RR plus SDES CNAME (and BYE).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from aiortc.rtp import (
    AnyRtcpPacket,
    RtcpByePacket,
    RtcpPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpSdesPacket,
    RtcpSenderInfo,
    RtcpSourceInfo,
    RtcpSrPacket,
    RtpPacket,
)

NTP_EPOCH_OFFSET = 2208988800
MAX_DROPOUT, MAX_MISORDER = 3000, 100
SEQ_MOD = 1 << 16


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: RTCP packet types 192-223 in the second byte."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def ntp_time(now: float | None = None) -> int:
    now = time.time() if now is None else now
    seconds = int(now) + NTP_EPOCH_OFFSET
    fraction = int((now % 1) * (1 << 32))
    return (seconds << 32) | fraction


class JitterBuffer:
    """Reorders packets by extended sequence number; holds `depth` packets, drops late and duplicate ones.

    `push` returns what leaves the buffer, in order. A packet leaves once
    `depth` newer packets are held, or once the newest is `depth` sequence
    numbers past it (a gap is given up on). `flush` empties it at the end.
    """

    def __init__(self, depth: int = 3) -> None:
        self.depth = max(0, depth)
        self._held: dict[int, RtpPacket] = {}
        self._next: int | None = None  # the extended sequence number due next
        self.late = 0
        self.duplicates = 0

    def push(self, ext_seq: int, packet: RtpPacket) -> list[RtpPacket]:
        if self._next is not None and ext_seq < self._next:
            self.late += 1
            return []
        if ext_seq in self._held:
            self.duplicates += 1
            return []
        self._held[ext_seq] = packet
        if self._next is None:
            self._next = ext_seq
        out = []
        held = self._held
        newest = max(held) if len(held) > 1 else ext_seq
        while held and (len(held) > self.depth or newest - self._next >= self.depth):
            if self._next in held:
                out.append(held.pop(self._next))
            self._next += 1
            if self._next > newest:
                break
        return out

    def flush(self) -> list[RtpPacket]:
        keys = sorted(self._held)
        out = [self._held[k] for k in keys]
        self._held.clear()
        if keys:
            self._next = keys[-1] + 1
        return out

    def reset(self) -> None:
        self._held.clear()
        self._next = None


@dataclass
class ReceiveStats:
    ssrc: int | None = None
    base_seq: int = 0
    max_seq: int = 0
    cycles: int = 0
    bad_seq: int = SEQ_MOD + 1
    received: int = 0
    expected_prior: int = 0
    received_prior: int = 0
    jitter: float = 0.0          # in timestamp units (RFC 3550 A.8)
    max_jitter: float = 0.0
    transit: int | None = None
    last_sr_ntp_middle: int = 0  # LSR: middle 32 bits of the last SR's NTP time
    last_sr_arrival: float | None = None
    octets: int = 0

    @property
    def extended_max(self) -> int:
        return self.cycles + self.max_seq

    @property
    def expected(self) -> int:
        return self.extended_max - self.base_seq + 1 if self.received else 0

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.received)


class RtpReceiver:
    """The receiving side of one RTP stream (the far end's SSRC; a new SSRC restarts the statistics)."""

    def __init__(self, clock_rate: int = 8000, jitter_depth: int = 3) -> None:
        self.clock_rate = clock_rate
        self.stats = ReceiveStats()
        self.buffer = JitterBuffer(jitter_depth)
        self.ssrc_changes = 0

    def _init_seq(self, seq: int) -> None:
        s = self.stats
        s.base_seq, s.max_seq, s.bad_seq, s.cycles = seq, seq, SEQ_MOD + 1, 0
        s.received = s.received_prior = s.expected_prior = 0

    def _update_seq(self, seq: int) -> int | None:
        """RFC 3550 A.1; the extended sequence number, or None for a packet to drop."""
        s = self.stats
        delta = (seq - s.max_seq) % SEQ_MOD
        if delta < MAX_DROPOUT:
            if seq < s.max_seq:
                s.cycles += SEQ_MOD
            s.max_seq = seq
        elif delta <= SEQ_MOD - MAX_MISORDER:
            if seq == s.bad_seq:  # two in a row: the sender restarted
                self._init_seq(seq)
                self.buffer.reset()
            else:
                s.bad_seq = (seq + 1) % SEQ_MOD
                return None
        else:  # a duplicate or reordered packet
            ext = s.cycles + seq
            if seq > s.max_seq:
                ext -= SEQ_MOD
            s.received += 1
            return ext
        s.received += 1
        return s.cycles + seq

    def receive(self, packet: RtpPacket, arrival: float) -> list[RtpPacket]:
        """One packet arrives at `arrival` (seconds); returns the packets the jitter buffer releases."""
        s = self.stats
        if s.ssrc != packet.ssrc:
            if s.ssrc is not None:
                self.ssrc_changes += 1
            released = self.buffer.flush()
            self.stats = s = ReceiveStats(ssrc=packet.ssrc)
            self._init_seq(packet.sequence_number)
            self.buffer.reset()
            s.received = 1
            ext = packet.sequence_number
        else:
            released = []
            updated = self._update_seq(packet.sequence_number)
            if updated is None:
                return released
            ext = updated
        s.octets += len(packet.payload)
        # Interarrival jitter (A.8) in timestamp units.
        arrival_ts = int(arrival * self.clock_rate)
        transit = arrival_ts - packet.timestamp
        if s.transit is not None:
            d = abs(transit - s.transit)
            if d < self.clock_rate * 10:  # ignore timestamp jumps (new talkspurt after a long gap)
                s.jitter += (d - s.jitter) / 16.0
                s.max_jitter = max(s.max_jitter, s.jitter)
        s.transit = transit
        return released + self.buffer.push(ext, packet)

    def flush(self) -> list[RtpPacket]:
        return self.buffer.flush()

    def on_sender_report(self, report: RtcpSrPacket, arrival: float) -> None:
        self.stats.last_sr_ntp_middle = (report.sender_info.ntp_timestamp >> 16) & 0xFFFFFFFF
        self.stats.last_sr_arrival = arrival

    def report_block(self, now: float) -> RtcpReceiverInfo | None:
        s = self.stats
        if s.ssrc is None or not s.received:
            return None
        expected = s.expected
        expected_interval = expected - s.expected_prior
        received_interval = s.received - s.received_prior
        s.expected_prior, s.received_prior = expected, s.received
        lost_interval = expected_interval - received_interval
        fraction = 0 if expected_interval <= 0 or lost_interval <= 0 else (lost_interval << 8) // expected_interval
        dlsr = 0
        if s.last_sr_arrival is not None:
            dlsr = int((now - s.last_sr_arrival) * 65536) & 0xFFFFFFFF
        lost = max(-(1 << 23), min((1 << 23) - 1, expected - s.received))
        return RtcpReceiverInfo(ssrc=s.ssrc, fraction_lost=min(255, fraction), packets_lost=lost,
                                highest_sequence=s.extended_max & 0xFFFFFFFF, jitter=int(s.jitter),
                                lsr=s.last_sr_ntp_middle, dlsr=dlsr)


@dataclass
class RtpSender:
    payload_type: int
    clock_rate: int = 8000
    ssrc: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "big"))
    sequence: int = field(default_factory=lambda: int.from_bytes(os.urandom(2), "big"))
    timestamp: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "big"))
    packets: int = 0
    octets: int = 0
    last_sent: float | None = None
    cname: bytes = b"umedge"

    def packet(self, payload: bytes, samples: int, marker: bool = False, payload_type: int | None = None,
               advance: bool = True) -> RtpPacket:
        packet = RtpPacket(payload_type=self.payload_type if payload_type is None else payload_type,
                           marker=1 if marker else 0, sequence_number=self.sequence, timestamp=self.timestamp,
                           ssrc=self.ssrc, payload=payload)
        self.sequence = (self.sequence + 1) % SEQ_MOD
        if advance:
            self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF
        self.packets += 1
        self.octets += len(payload)
        self.last_sent = time.monotonic()
        return packet

    def skip(self, samples: int) -> None:
        """Time passes without audio (silence suppression, hold): keep the timestamp on the media clock."""
        self.timestamp = (self.timestamp + samples) & 0xFFFFFFFF

    def sender_info(self, now: float) -> RtcpSenderInfo:
        return RtcpSenderInfo(ntp_timestamp=ntp_time(now), rtp_timestamp=self.timestamp,
                              packet_count=self.packets & 0xFFFFFFFF, octet_count=self.octets & 0xFFFFFFFF)


def rtcp_compound(sender: RtpSender, receiver: RtpReceiver | None, now: float, sent_recently: bool,
                  bye: bool = False) -> bytes:
    """SR (if we sent since the last report) or RR, then SDES CNAME, then BYE if leaving."""
    block = receiver.report_block(now) if receiver is not None else None
    reports = [block] if block is not None else []
    if sent_recently:
        first: AnyRtcpPacket = RtcpSrPacket(ssrc=sender.ssrc, sender_info=sender.sender_info(now), reports=reports)
    else:
        first = RtcpRrPacket(ssrc=sender.ssrc, reports=reports)
    packets: list[AnyRtcpPacket] = [first, RtcpSdesPacket(chunks=[RtcpSourceInfo(ssrc=sender.ssrc,
                                                                                items=[(1, sender.cname)])])]
    if bye:
        packets.append(RtcpByePacket(sources=[sender.ssrc]))
    return b"".join(bytes(p) for p in packets)


def parse_rtcp(data: bytes) -> list[AnyRtcpPacket]:
    try:
        return RtcpPacket.parse(data)
    except ValueError:
        return []
