"""The SIP core: URIs, Via received/rport, transactions and timers, digest, dialogs, and the
hypothesis property that nothing a peer sends escapes the protocol."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport

from tests.sip.digest_server import DigestServer
from um.sip.dialog import Dialog, DialogError
from um.sip.digest import Challenge, authorize, compute, parse_challenges
from um.sip.message import Headers, Response, make_response
from um.sip.parser import StreamParser, parse_datagram
from um.sip.responder import OptionsResponder
from um.sip.stream import Peer, SipStreamFactory, fix_via
from um.sip.transaction import RELIABLE, UNRELIABLE, TransactionLayer, build_ack, make_request
from um.sip.uri import SipUri, TelUri, UriError, parse_name_addr, parse_uri


def invite(branch: str = "z9hG4bK-1", via_host: str = "192.0.2.9:5070", extra: str = "") -> bytes:
    sdp = b"v=0\r\no=- 1 1 IN IP4 192.0.2.9\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    return (f"INVITE sip:5000@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/TCP {via_host};branch={branch};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: \"GW\" <sip:gw@192.0.2.9>;tag=f1\r\nTo: <sip:1001@192.0.2.1>\r\n"
            f"Call-ID: call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@192.0.2.9:5070;transport=tcp>\r\n{extra}"
            f"Content-Type: application/sdp\r\nContent-Length: {len(sdp)}\r\n\r\n").encode() + sdp


# --- URIs ------------------------------------------------------------------------------------
def test_sip_sips_tel_uris() -> None:
    uri = parse_uri("sips:alice:pw@[2001:db8::1]:5061;transport=tls;lr?Subject=hi&Priority=urgent")
    assert isinstance(uri, SipUri) and uri.secure and uri.user == "alice" and uri.password == "pw"
    assert uri.host == "[2001:db8::1]" and uri.port == 5061 and uri.transport == "tls" and "lr" in uri.params
    assert uri.headers == {"Subject": "hi", "Priority": "urgent"}
    tel = parse_uri("tel:+1-201-555-0123;phone-context=example.com")
    assert isinstance(tel, TelUri) and tel.is_global and tel.params["phone-context"] == "example.com"
    assert not parse_uri("tel:1001;phone-context=+1-201").is_global
    for bad in ("sip:", "sip:user@", "sip:a@b:99999", "sip:a@[::zz]", "sip:a b@c", "tel:abc+", "sip:@host"):
        with pytest.raises(UriError):
            parse_uri(bad)
    with pytest.raises(UriError):
        parse_uri("sip:a@b?x=y", request_uri=True)


def test_name_addr_and_addr_spec() -> None:
    addr = parse_name_addr('"Bob \\"B\\"" <sip:bob@example.test>;tag=x;expires=60')
    assert addr.display == '"Bob \\"B\\""' and addr.tag == "x" and addr.params["expires"] == "60"
    addr = parse_name_addr("Bob Smith <tel:+15550100>")
    assert addr.display == "Bob Smith" and isinstance(addr.uri, TelUri)
    spec = parse_name_addr("sip:bob@example.test;tag=9")
    assert not spec.bracketed and spec.tag == "9" and spec.uri.params == {}


# --- Via received/rport ------------------------------------------------------------------------
def test_received_and_rport_are_added_when_needed() -> None:
    request = parse_datagram(invite())
    fix_via(request, Peer("203.0.113.5", 40000, "tcp"))
    via = request.headers.get("Via")
    assert via == "SIP/2.0/TCP 192.0.2.9:5070;branch=z9hG4bK-1;rport=40000;received=203.0.113.5"
    assert make_response(request, 302).headers.get("Via") == via
    same = parse_datagram(invite().replace(b";rport", b"").replace(b"192.0.2.9:5070", b"203.0.113.5:5070", 1))
    before = same.headers.get("Via")
    fix_via(same, Peer("203.0.113.5", 40000, "tcp"))
    assert same.headers.get("Via") == before  # sent-by is the source and no rport asked: untouched


# --- transactions --------------------------------------------------------------------------------
def test_invite_server_transaction_reliable() -> None:
    layer = TransactionLayer(RELIABLE)
    request = parse_datagram(invite())
    event = layer.receive_request(request, 0.0)
    assert event.kind == "request"
    wire = layer.send_response(event.transaction, make_response(request, 302, extra=[("Contact", "<sip:x@y>")]), 0.0)
    again = layer.receive_request(parse_datagram(invite()), 0.5)
    assert again.kind == "retransmission" and again.data == wire  # the same 302, same To tag
    to_tag = parse_name_addr(parse_datagram(wire).headers.get("To")).tag
    ack = parse_datagram(build_ack(request, parse_datagram(wire)).encode())
    assert ack.to_addr.tag == to_tag and ack.headers.get("CSeq") == "1 ACK"
    assert layer.receive_request(ack, 0.6).kind == "ack" and not layer.server  # Timer I = 0 on TCP
    layer.receive_request(parse_datagram(invite("z9hG4bK-2")), 1.0)
    txn = layer.server[next(iter(layer.server))]
    layer.send_response(txn, make_response(txn.request, 404), 1.0)
    assert layer.tick(1.0 + 31.9) == []
    [timeout] = layer.tick(1.0 + 32.0)  # Timer H: 64*T1 without an ACK
    assert timeout.kind == "timeout" and not layer.server


def test_invite_server_transaction_unreliable_retransmits_until_ack() -> None:
    layer = TransactionLayer(UNRELIABLE)
    event = layer.receive_request(parse_datagram(invite()), 0.0)
    layer.send_response(event.transaction, make_response(event.message, 486), 0.0)
    sends = [e for t in (0.5, 1.5, 3.5) for e in layer.tick(t)]
    assert [e.kind for e in sends] == ["send", "send", "send"]  # Timer G: T1, 2T1, 4T1
    ack = parse_datagram(build_ack(event.message, parse_datagram(event.transaction.response)).encode())
    assert layer.receive_request(ack, 4.0).kind == "ack"
    assert layer.tick(8.0) == [] and layer.tick(9.1) == [] and not layer.server  # Timer I = T4


def test_non_invite_server_transaction() -> None:
    layer = TransactionLayer(UNRELIABLE)
    options = invite().replace(b"INVITE", b"OPTIONS")
    event = layer.receive_request(parse_datagram(options), 0.0)
    wire = layer.send_response(event.transaction, make_response(event.message, 200), 0.0)
    assert layer.receive_request(parse_datagram(options), 1.0).data == wire
    layer.tick(32.1)
    assert not layer.server  # Timer J = 64*T1 on UDP (0 on TCP)
    reliable = TransactionLayer(RELIABLE)
    event = reliable.receive_request(parse_datagram(options), 0.0)
    reliable.send_response(event.transaction, make_response(event.message, 200), 0.0)
    assert not reliable.server


@pytest.mark.parametrize("method", ["OPTIONS", "REGISTER", "SERVICE", "INVITE"])
def test_client_transactions(method: str) -> None:
    layer = TransactionLayer(UNRELIABLE)
    request = make_request(method, "sip:mbx@192.0.2.5", via_host="192.0.2.1:5060", transport="udp",
                           from_uri="sip:cr@192.0.2.1", to_uri="sip:mbx@192.0.2.5")
    txn = layer.send_request(request, 0.0)
    retransmits = [e for t in (0.5, 1.5) for e in layer.tick(t)]
    assert [e.kind for e in retransmits] == ["send", "send"] and retransmits[0].data == txn.wire
    final = parse_datagram(make_response(parse_datagram(txn.wire), 302 if method == "INVITE" else 200).encode())
    event = layer.receive_response(final, 2.0)
    assert event.kind == "response" and event.transaction is txn
    if method == "INVITE":
        ack = parse_datagram(event.data)
        assert ack.method == "ACK" and ack.headers.get("Via") == request.headers.get("Via")
        assert layer.receive_response(final, 2.5).data == event.data  # retransmitted 302: ACK again
    stray = parse_datagram(make_response(parse_datagram(txn.wire.replace(b"z9hG4bK", b"z9hG4bKx", 1)), 200).encode())
    assert layer.receive_response(stray, 3.0).kind == "stray"


def test_client_transaction_timeout() -> None:
    layer = TransactionLayer(RELIABLE)
    request = make_request("OPTIONS", "sip:mbx@192.0.2.5", via_host="192.0.2.1", transport="tcp",
                           from_uri="sip:cr@192.0.2.1", to_uri="sip:mbx@192.0.2.5")
    layer.send_request(request, 0.0, timeout=2.0)
    assert layer.tick(1.9) == []
    [event] = layer.tick(2.0)
    assert event.kind == "timeout" and not layer.client


# --- digest (RFC 7616 §3.9.1 vectors; RFC 8760 algorithms) ----------------------------------
RFC7616 = dict(username="Mufasa", realm="http-auth@example.org", password="Circle of Life", method="GET",
               uri="/dir/index.html", nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
               cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")


@pytest.mark.parametrize("algorithm, expected", [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_digest_rfc7616_vectors(algorithm: str, expected: str) -> None:
    v = RFC7616
    assert compute(algorithm, v["username"], v["realm"], v["password"], v["method"], v["uri"], v["nonce"],
                   qop="auth", nc="00000001", cnonce=v["cnonce"]) == expected


@pytest.mark.parametrize("algorithms", [("MD5",), ("SHA-256",), ("SHA-256", "MD5"), ("SHA-512-256",)])
def test_digest_client_answers_a_challenge_the_server_accepts(algorithms: tuple[str, ...]) -> None:
    server = DigestServer("example.test")
    request = make_request("REGISTER", "sip:example.test", via_host="192.0.2.1", transport="tcp",
                           from_uri="sip:alice@example.test", to_uri="sip:alice@example.test")
    challenge = make_response(request, 401, extra=[("WWW-Authenticate", c) for c in server.challenge(algorithms)])
    challenge = parse_datagram(challenge.encode())
    retry = authorize(request, challenge, "alice", "secret")
    assert retry.headers.get("CSeq") == "2 REGISTER" and retry.headers.get("Via") != request.headers.get("Via")
    assert f"algorithm={algorithms[0]}" in retry.headers.get("Authorization")  # the strongest offered
    assert server.verify(retry, {"alice": "secret"}) == "alice"
    assert server.verify(retry, {"alice": "wrong"}) is None
    assert server.verify(request, {"alice": "secret"}) is None


def test_digest_challenge_parsing_and_proxy_auth() -> None:
    response = Response(407, "Proxy Authentication Required", Headers([
        ("Proxy-Authenticate", 'Digest realm="r", nonce="n", algorithm=MD5-sess, qop="auth,auth-int", opaque="o"')]))
    [challenge] = parse_challenges(response)
    assert isinstance(challenge, Challenge) and challenge.base_algorithm == "MD5"
    assert challenge.qops == ["auth", "auth-int"]
    request = make_request("INVITE", "sip:x@y", via_host="h", transport="tcp", from_uri="sip:a@h", to_uri="sip:x@y")
    assert "opaque=\"o\"" in authorize(request, response, "a", "p").headers.get("Proxy-Authorization")


# --- dialogs -------------------------------------------------------------------------------------
def test_uas_dialog_and_bye() -> None:
    request = parse_datagram(invite())
    dialog = Dialog.uas(request, "ours")
    assert dialog.id == ("call-1", "ours", "f1") and dialog.remote_target == "sip:gw@192.0.2.9:5070;transport=tcp"
    bye = dialog.create_request("BYE", "192.0.2.1:5065", "tcp")
    parsed = parse_datagram(bye.encode())
    assert parsed.method == "BYE" and parsed.from_addr.tag == "ours" and parsed.to_addr.tag == "f1"
    assert parsed.uri == dialog.remote_target
    later = parse_datagram(invite().replace(b"1 INVITE", b"2 INVITE"))
    dialog.check_request(later)
    with pytest.raises(DialogError):
        dialog.check_request(parse_datagram(invite()))


# --- the protocol never lets an exception out -------------------------------------------------
def _protocol():  # type: ignore[no-untyped-def]
    factory = SipStreamFactory(OptionsResponder("callrouter"), "tcp", "callrouter")
    protocol = factory.buildProtocol(None)
    transport = StringTransport(peerAddress=type("A", (), {"host": "192.0.2.9", "port": 5070})())
    protocol.makeConnection(transport)
    return protocol, transport


def _check_output(transport: StringTransport) -> None:
    data = transport.value()
    parser = StreamParser(validate=False)
    for event in parser.feed(data.replace(b"\r\n\r\n\r\n", b"\r\n\r\n")) if data.strip(b"\r\n") else []:
        assert event.message is None or isinstance(event.message, Response)


FRAGMENTS = [invite(), invite().replace(b"INVITE sip", b"OPTIONS sip").replace(b"1 INVITE", b"1 OPTIONS"),
             b"\r\n\r\n", b"\r\n", b"SIP/2.0 200 OK\r\n", b"Content-Length: 5\r\n", b"\r\n\r\n", b"l: -1\r\n",
             b"Via: SIP/2.0/TCP ;;,\r\n", b"\x00\xff", b"INVITE <sip:x> SIP/2.0\r\n"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=200), st.sampled_from(FRAGMENTS)), max_size=10))
def test_arbitrary_bytes_give_responses_or_a_close_never_an_exception(chunks: list[bytes]) -> None:
    protocol, transport = _protocol()
    for chunk in chunks:
        protocol.dataReceived(chunk)  # must not raise
        if transport.disconnecting:
            break
    _check_output(transport)


def test_a_fatal_error_answers_and_closes() -> None:
    protocol, transport = _protocol()
    protocol.dataReceived(invite().replace(b"Content-Length: ", b"Content-Length: -"))
    assert transport.value().startswith(b"SIP/2.0 400 Bad Request - malformed Content-Length")
    assert transport.disconnecting
    protocol, transport = _protocol()
    protocol.dataReceived(invite().replace(b"SIP/2.0\r\n", b"SIP/2.0 \r\n", 1) + invite("z9hG4bK-9"))
    replies = transport.value()
    assert replies.startswith(b"SIP/2.0 400 Bad Request - malformed Request-Line") and b"501 Not Implemented" in replies
    assert not transport.disconnecting  # a bad request line with intact framing: the stream goes on
