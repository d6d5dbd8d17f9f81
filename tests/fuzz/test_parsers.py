"""Fuzzing in CI (hypothesis): every parser that reads peer bytes fails only with its own error.

The longer, coverage-guided runs are the atheris targets in fuzz/ (README, "Fuzzing").
Each property feeds raw bytes and mutations of a valid message.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import stun
from um.mras import codec as mras
from um.sip.parser import SipParseError, StreamParser, parse_datagram
from um.worker import sdp

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

STUN_SEED = stun.Message(stun.ALLOCATE, stun.REQUEST, b"x" * 12, [
    (stun.Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17)),
    (stun.Attr.USERNAME, b"1800000000:sip:alice@example.test"), (stun.Attr.REALM, b"example.test"),
    (stun.Attr.NONCE, b"obMatJos2AAABnonce")]).encode(b"k" * 16, fingerprint=True)
SIP_SEED = (b"INVITE sip:5000@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\n"
            b"Max-Forwards: 70\r\nFrom: <sip:gw@192.0.2.1>;tag=1\r\nTo: <sip:1001@127.0.0.1>\r\n"
            b"Call-ID: a@b\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@192.0.2.1>\r\n"
            b"Content-Type: application/sdp\r\nContent-Length: 4\r\n\r\nv=0\n")
SDP_SEED = (b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
            b"m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\n"
            b"a=ice-ufrag:abcd\r\na=ice-pwd:0123456789012345678901\r\n"
            b"a=candidate:1 1 UDP 2130706431 192.0.2.1 4000 typ host\r\na=sendrecv\r\n")
MRAS_SEED = (b'<request requestID="1" from="sip:alice@example.test" version="1.0" '
             b'to="sip:mrasloc.example.test@example.test" '
             b'xmlns="http://schemas.microsoft.com/2006/09/sip/mrasp">'
             b'<credentialsRequest credentialsRequestID="1"><identity>sip:alice@example.test</identity>'
             b'<location>intranet</location><duration>480</duration></credentialsRequest></request>')


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    """Bit flips, truncations, insertions and splices of a valid message."""
    def mutate(draw_data: tuple[list[tuple[int, int]], int, bytes]) -> bytes:
        flips, cut, insert = draw_data
        data = bytearray(seed)
        for position, bit in flips:
            data[position % len(data)] ^= 1 << (bit % 8)
        data = data[:max(0, len(data) - cut)]
        at = len(data) // 2
        return bytes(data[:at] + insert + data[at:])

    return st.tuples(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 7)), max_size=6),
                     st.integers(0, 40), st.binary(max_size=16)).map(mutate)


def bytes_or_mutation(seed: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=600), mutations(seed))


@FAST
@given(bytes_or_mutation(STUN_SEED))
def test_stun_codec(data: bytes) -> None:
    try:
        message = stun.decode(data)
    except stun.StunDecodeError:
        return
    message.verify_integrity(b"k" * 16)
    message.verify_fingerprint()
    message.unknown_comprehension_required()


@FAST
@given(bytes_or_mutation(SIP_SEED))
def test_sip_parser(data: bytes) -> None:
    try:
        parse_datagram(data)
    except SipParseError as error:
        assert 400 <= error.status <= 599
    parser = StreamParser()
    for cut in (len(data) // 3, len(data)):
        parser.feed(data[:cut])


@FAST
@given(bytes_or_mutation(SDP_SEED))
def test_sdp_parser(data: bytes) -> None:
    try:
        sdp.parse(data)
    except sdp.SdpError:
        pass


@FAST
@given(bytes_or_mutation(MRAS_SEED))
def test_mras_xml(data: bytes) -> None:
    try:
        mras.decode_request(data)
    except mras.MrasError as error:
        assert error.reason_phrase
