"""The sans-I/O SIP core the listeners use: framing, headers, errors, responses."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from um.sip.message import Request, make_response
from um.sip.parser import MAX_HEADER_BYTES, SipParseError, StreamParser, parse_datagram
from um.sip.responder import OptionsResponder
from um.sip.stream import Peer

OPTIONS = (b"OPTIONS sip:a@example.test SIP/2.0\r\n"
           b"v: SIP/2.0/TCP 192.0.2.1;branch=z9hG4bK1\r\n"
           b"f: <sip:b@example.test>;tag=1\r\n"
           b"t: <sip:a@example.test>\r\n"
           b"i: abc\r\n"
           b"CSeq: 7 OPTIONS\r\n"
           b"Subject: folded\r\n  continues here\r\n"
           b"l: 4\r\n\r\nbody")


def test_compact_forms_folding_and_body() -> None:
    [event] = StreamParser().feed(OPTIONS)
    message = event.message
    assert isinstance(message, Request)
    assert message.headers.get("Call-ID") == "abc" and message.headers.get("via").startswith("SIP/2.0/TCP")
    assert message.headers.get("Subject") == "folded continues here"
    assert message.body == b"body"


def test_stream_split_anywhere_gives_the_same_messages() -> None:
    stream = OPTIONS + b"\r\n\r\n" + OPTIONS
    for cut in range(1, len(stream)):
        parser = StreamParser()
        events = parser.feed(stream[:cut]) + parser.feed(stream[cut:])
        kinds = ["ping" if e.ping else "msg" for e in events]
        assert kinds == ["msg", "ping", "msg"], cut


def test_missing_content_length_on_a_stream_is_fatal() -> None:
    [event] = StreamParser().feed(OPTIONS.replace(b"l: 4\r\n", b"").removesuffix(b"body"))
    assert event.error is not None and event.error.fatal and event.error.status == 400


def test_oversized_head_and_body() -> None:
    [event] = StreamParser().feed(b"OPTIONS " + b"a" * (MAX_HEADER_BYTES + 10))
    assert event.error.status == 513 and event.error.fatal
    [event] = StreamParser().feed(OPTIONS.replace(b"l: 4", b"l: 999999"))
    assert event.error.status == 513


def test_version_error_keeps_the_stream() -> None:
    bad = OPTIONS.replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1)
    events = StreamParser().feed(bad + OPTIONS)
    assert events[0].error.status == 505 and not events[0].error.fatal
    assert events[1].message is not None


def test_missing_mandatory_header_and_cseq_mismatch() -> None:
    try:
        parse_datagram(OPTIONS.replace(b"i: abc\r\n", b""))
    except SipParseError as error:
        assert error.status == 400 and "Call-ID" in error.reason
    else:
        raise AssertionError("accepted a request without Call-ID")
    try:
        parse_datagram(OPTIONS.replace(b"7 OPTIONS", b"7 INVITE"))
    except SipParseError as error:
        assert "CSeq" in error.reason
    else:
        raise AssertionError("accepted a CSeq naming another method")


def test_response_copies_dialog_headers_and_adds_a_to_tag() -> None:
    request = parse_datagram(OPTIONS)
    response = make_response(request, 200)
    assert response.headers.get("To").startswith("<sip:a@example.test>;tag=")
    assert response.headers.get("CSeq") == "7 OPTIONS"
    wire = response.encode()
    assert wire.startswith(b"SIP/2.0 200 OK\r\n") and wire.endswith(b"Content-Length: 0\r\n\r\n")


def test_responder_answers_options_and_refuses_the_rest() -> None:
    responder = OptionsResponder("callrouter")
    peer = Peer("192.0.2.1", 5060, "tcp")
    assert responder(parse_datagram(OPTIONS), peer).status == 200
    invite = parse_datagram(OPTIONS.replace(b"OPTIONS", b"INVITE"))
    refused = responder(invite, peer)
    assert refused.status == 501 and refused.headers.get("Allow") == "OPTIONS"
    ack = parse_datagram(OPTIONS.replace(b"OPTIONS", b"ACK"))
    assert responder(ack, peer) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_arbitrary_bytes_give_events_never_exceptions(chunks: list[bytes]) -> None:
    parser = StreamParser()
    for chunk in chunks:
        events = parser.feed(chunk)
        if any(e.error is not None and e.error.fatal for e in events):
            break
