"""IPv6 in SIP: the RFC 5118 torture cases (tests/sip/rfc5118/), Via received in both forms (§4.5),
received added only when the source address differs from sent-by (RFC 3261 §18.2.1, compared as
addresses), and the dialog rules of RFC 3261 §12 (Record-Route copied into the 2xx, in-dialog
requests routed by the route set, loose and strict)."""

from __future__ import annotations

from pathlib import Path

import pytest

from um.sip.dialog import Dialog, DialogError
from um.sip.headers import parse_via
from um.sip.message import Request, Response, make_response
from um.sip.parser import SipParseError, StreamParser, parse_datagram
from um.sip.stream import Peer, fix_via
from um.sip.uri import SipUri, UriError, same_address
from um.worker import sdp

FIXTURES = Path(__file__).resolve().parent / "rfc5118"
VALID = ("ipv6-good", "port-ambiguous", "port-unambiguous", "via-received-param-with-delim",
         "via-received-param-no-delim", "ipv6-in-sdp", "mult-ip-in-header", "mult-ip-in-sdp", "ipv4-mapped-ipv6",
         "ipv6-correct-abnf")


def load(name: str) -> bytes:
    return (FIXTURES / f"{name}.dat").read_bytes()


@pytest.mark.parametrize("name", VALID)
def test_valid_ipv6_messages_parse_as_datagrams_and_on_a_stream(name: str) -> None:
    message = parse_datagram(load(name))
    assert isinstance(message, Request) and message.vias
    [event] = StreamParser().feed(load(name))
    assert event.message is not None and event.error is None


def test_ipv6_address_without_brackets_in_the_request_uri_is_a_400() -> None:  # §4.2
    with pytest.raises(SipParseError) as raised:
        parse_datagram(load("ipv6-bad"))
    assert raised.value.status == 400 and "Request-URI" in raised.value.reason


def test_port_inside_and_outside_the_brackets() -> None:  # §4.3, §4.4
    ambiguous = parse_datagram(load("port-ambiguous")).ruri
    assert isinstance(ambiguous, SipUri) and ambiguous.host == "[2001:db8::10:5070]" and ambiguous.port is None
    plain = parse_datagram(load("port-unambiguous")).ruri
    assert isinstance(plain, SipUri) and plain.host == "[2001:db8::10]" and plain.port == 5070


@pytest.mark.parametrize("name,value", [("via-received-param-with-delim", "[2001:db8::9:255]"),
                                        ("via-received-param-no-delim", "2001:db8::9:255")])
def test_via_received_with_and_without_delimiters(name: str, value: str) -> None:  # §4.5
    request = parse_datagram(load(name))
    assert request.vias[0].params["received"] == value
    assert same_address(value, "2001:db8:0:0:0:0:9:255")


def test_multiple_addresses_in_headers_and_sdp() -> None:  # §4.6-§4.8
    request = parse_datagram(load("mult-ip-in-header"))
    assert [v.host for v in request.vias] == ["[2001:db8::9:1]", "192.0.2.1", "[2001:db8::9:ffff]"]
    assert request.vias[2].params["received"] == "192.0.2.10"
    session = sdp.parse(parse_datagram(load("ipv6-in-sdp")).body)
    assert session.connection == "2001:db8::9:1"
    mixed = sdp.parse(parse_datagram(load("mult-ip-in-sdp")).body)
    assert mixed.connection == "192.0.2.1" and mixed.media[0].connection == "2001:db8::9:1"


def test_ipv4_mapped_and_rfc4291_forms() -> None:  # §4.9, §4.10
    mapped = parse_datagram(load("ipv4-mapped-ipv6"))
    assert isinstance(mapped.ruri, SipUri) and mapped.ruri.host == "[::ffff:192.0.2.128]"
    assert same_address("[::ffff:192.0.2.1]", "192.0.2.1")  # a dual-stack socket's view of an IPv4 peer
    abnf = parse_datagram(load("ipv6-correct-abnf"))
    assert abnf.vias[0].params["received"] == "2001:db8::"


@pytest.mark.parametrize("value", ["received=host.example.test", "received=2001:db8::zz", "received=[2001:db8::1",
                                   "received=::1::2", "received=[192.0.2.1]x"])
def test_a_received_that_is_no_address_is_refused(value: str) -> None:
    with pytest.raises(UriError):
        parse_via(f"SIP/2.0/TCP [::1]:5060;branch=z9hG4bK1;{value}")


def _invite(via_host: str, extra: str = "") -> Request:
    body = b"v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    request = parse_datagram((
        f"INVITE sip:5000@[::1]:5060 SIP/2.0\r\nVia: SIP/2.0/TCP {via_host};branch=z9hG4bK-6;rport\r\n"
        f"Max-Forwards: 70\r\nFrom: <sip:gw@[::1]>;tag=f6\r\nTo: <sip:1001@[::1]>\r\nCall-ID: six\r\n"
        f"CSeq: 1 INVITE\r\nContact: <sip:gw@[::1]:5070;transport=tcp>\r\n{extra}Content-Type: application/sdp\r\n"
        f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
    assert isinstance(request, Request)
    return request


@pytest.mark.parametrize("via_host,peer,received", [
    ("[::1]:5070", "::1", None),                         # the same address in its URI form: no received
    ("[0:0:0:0:0:0:0:1]:5070", "::1", None),             # spelled out: still the same address
    ("[2001:DB8::A]:5070", "2001:db8::a", None),         # case of the hex digits does not matter
    ("127.0.0.1:5070", "::ffff:127.0.0.1", None),        # IPv4 seen through a dual-stack socket
    ("[::1]:5070", "2001:db8::7", "2001:db8::7"),        # a different source: received, RFC 3261's form
    ("gw.example.test:5070", "::1", "::1"),              # a host name is never the source address
])
def test_received_is_added_only_when_the_source_differs(via_host: str, peer: str, received: str | None) -> None:
    request = _invite(via_host)
    fix_via(request, Peer(peer, 40000, "tcp"))
    via = request.headers.get("Via") or ""
    assert via.endswith(";rport=40000" if received is None else f";rport=40000;received={received}")
    # The rewritten Via parses again, in a response and in the ACK a gateway copies it into.
    response = parse_datagram(make_response(request, 302, extra=[("Contact", "<sip:w@[::1]:5065>")]).encode())
    assert isinstance(response, Response) and response.vias[0].params.get("received") == received
    ack = _invite(via_host).encode().replace(b"INVITE sip", b"ACK sip").replace(b"1 INVITE", b"1 ACK")
    ack = ack.replace((_invite(via_host).headers.get("Via") or "").encode(), via.encode())
    assert parse_datagram(ack).vias[0].params.get("received") == received


# --- dialogs: RFC 3261 §12 -----------------------------------------------------------------------
RECORD_ROUTE = ("Record-Route: <sip:[2001:db8::5]:5070;transport=tcp;lr>\r\n"
                "Record-Route: <sip:192.0.2.7;lr;ftag=f6>, <sip:sbc.example.test;lr>\r\n")


def test_the_2xx_and_dialog_creating_1xx_copy_record_route_in_order() -> None:
    request = _invite("[::1]:5070", RECORD_ROUTE)
    expected = ["<sip:[2001:db8::5]:5070;transport=tcp;lr>", "<sip:192.0.2.7;lr;ftag=f6>, <sip:sbc.example.test;lr>"]
    for status in (180, 183, 200):
        assert make_response(request, status).headers.get_all("Record-Route") == expected
    for status in (100, 302, 486, 503):
        assert make_response(request, status).headers.get_all("Record-Route") == []
    bye = parse_datagram(_invite("[::1]:5070", RECORD_ROUTE).encode().replace(b"INVITE sip", b"BYE sip")
                         .replace(b"1 INVITE", b"2 BYE"))
    assert isinstance(bye, Request) and make_response(bye, 200).headers.get_all("Record-Route") == []


def test_uas_bye_follows_the_route_set_loose() -> None:
    dialog = Dialog.uas(_invite("[::1]:5070", RECORD_ROUTE), "ut")
    assert dialog.route_set == ["<sip:[2001:db8::5]:5070;transport=tcp;lr>", "<sip:192.0.2.7;lr;ftag=f6>",
                                "<sip:sbc.example.test;lr>"]
    bye = dialog.create_request("BYE", "[::1]:5065", "TCP")
    assert bye.uri == "sip:gw@[::1]:5070;transport=tcp"
    assert bye.headers.get_all("Route") == dialog.route_set  # as a UAS: Record-Route order, not reversed
    parse_datagram(bye.encode())  # a well-formed request


def test_uac_route_set_is_reversed_and_a_strict_router_gets_the_request_uri() -> None:
    request = _invite("[::1]:5070")
    answer = make_response(request, 200, extra=[("Contact", "<sip:w@[::1]:5065;transport=tcp>"),
                                                ("Record-Route", "<sip:[::1]:5090;lr>, <sip:192.0.2.9:5060>")])
    dialog = Dialog.uac(request, answer)
    assert dialog.route_set == ["<sip:192.0.2.9:5060>", "<sip:[::1]:5090;lr>"]
    bye = dialog.create_request("BYE", "[::1]:5065", "TCP")  # first hop strict (no lr): §12.2.1.1
    assert bye.uri == "sip:192.0.2.9:5060"
    assert bye.headers.get_all("Route") == ["<sip:[::1]:5090;lr>", "<sip:w@[::1]:5065;transport=tcp>"]


def test_a_malformed_record_route_refuses_the_dialog() -> None:
    with pytest.raises(DialogError) as raised:
        Dialog.uas(_invite("[::1]:5070", "Record-Route: sip:[::1;lr\r\n"), "ut")
    assert raised.value.status == 400


def test_a_dual_stack_listener_sees_an_ipv4_peer_as_ipv4() -> None:
    """On `::` an IPv4 gateway arrives as ::ffff:a.b.c.d: the handler (gateway table, trust) sees a.b.c.d."""
    from twisted.internet.testing import StringTransport

    from um.sip.stream import SipStreamFactory

    seen: list[Peer] = []

    def handler(request: Request, peer: Peer) -> Response:
        seen.append(peer)
        return make_response(request, 200)

    protocol = SipStreamFactory(handler, "tcp", "callrouter").buildProtocol(None)
    protocol.makeConnection(StringTransport(peerAddress=type("A", (), {"host": "::ffff:192.0.2.9", "port": 5070})()))
    protocol.dataReceived(_invite("192.0.2.9:5070").encode())
    assert [peer.host for peer in seen] == ["192.0.2.9"]
    assert b"received=" not in protocol.transport.value()  # type: ignore[attr-defined]
