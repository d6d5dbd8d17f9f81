"""RFC 4475 torture messages, each handled as its section says (the messages: tests/sip/rfc4475/).

Every message goes through the strict parser (as a datagram: several have
no Content-Length, which only UDP allows) and, when it is a valid request,
through the call router acting as the UAS it is (a redirect server). The
directory here knows each valid INVITE's called user (sip-uri dial plan),
so those are routed with a 302: parsed and processed, as §3.1.1 asks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fakes.standin_worker import StandInCalls
from um.callrouter import CallRouter, GatewayTable
from um.directory import DialPlan, Directory, HuntGroup, Mailbox, parse_gateways
from um.mailbox import MailboxService
from um.sip.message import Request, Response
from um.sip.parser import SipParseError, StreamParser, parse_datagram
from um.sip.stream import Peer
from um.sip.transaction import TransactionLayer, server_key
from um.sip.uri import AbsoluteUri, SipUri

FIXTURES = Path(__file__).resolve().parent / "rfc4475"  # the RFC's archive, byte-exact (see its README)
PEER = Peer("192.0.2.1", 5060, "tcp")


def load(name: str) -> bytes:
    return (FIXTURES / f"{name}.dat").read_bytes()


def router_for(*names: str) -> CallRouter:
    """A call router whose directory knows the called users of `names` (sip-uri dial plan)."""
    mailboxes, groups, pilots = [], [], []
    for name in names:
        request = parse_datagram(load(name))
        assert isinstance(request, Request)
        pilot = request.ruri.user
        to_uri = request.to_addr.uri
        groups.append(HuntGroup(pilot, "torture"))
        if getattr(to_uri, "user", None) == pilot:
            pilots.append(pilot)  # called the pilot itself: a subscriber access call
        elif isinstance(to_uri, SipUri):
            mailboxes.append(Mailbox("1000", "local", "torture", sip_address=f"{to_uri.user}@{to_uri.host}".lower()))
    plan = DialPlan("torture", 4, "sip-uri", "unsecured", tuple(pilots))
    local = MailboxService("127.0.0.1", "dual", (5065, 5067), (5066, 5068), call_handler=StandInCalls())
    return CallRouter(GatewayTable(parse_gateways([{"address": "192.0.2.0/24"}])), groups,
                      Directory({"torture": plan}, tuple(mailboxes), {}), local)


def answer(name: str, router: CallRouter | None = None) -> int | None:
    """The status the node answers `name` with (None: no answer, as for responses)."""
    try:
        message = parse_datagram(load(name))
    except SipParseError as error:
        return error.status if error.partial is not None else None
    if isinstance(message, Response):
        return None
    response = (router or router_for())(message, PEER)
    return response.status if response is not None else None


def test_all_49_messages_are_present() -> None:
    assert len(list(FIXTURES.glob("*.dat"))) == 49


# --- 3.1.1 valid messages: parse and process ----------------------------------------------------
VALID_INVITES = ["wsinv", "esc01", "longreq"]


@pytest.mark.parametrize("name", VALID_INVITES)
def test_valid_invites_are_parsed_and_routed(name: str) -> None:
    assert answer(name, router_for(name)) == 302


@pytest.mark.parametrize("name, status", [
    ("intmeth", 501),   # an unknown method with every allowed token character: 501 (RFC 3261 §8.2.1)
    ("esc02", 501),     # RE%47IST%45R is not REGISTER: escapes are not decoded in a method
    ("escnull", 405),   # REGISTER with %00 in the user part: valid; this element does not register
    ("dblreq", 405),    # only the first request of the datagram is taken (Content-Length: 0)
    ("mpart01", 405),   # MESSAGE with a multipart body: valid, not this element's method
    ("lwsdisp", 200),   # display name and < without LWS
    ("semiuri", 200),   # ';' inside the user part
    ("transports", 200),  # Via transports the element does not know
])
def test_valid_requests_get_a_normal_answer(name: str, status: int) -> None:
    assert answer(name) == status


def test_valid_message_details() -> None:
    wsinv = parse_datagram(load("wsinv"))
    assert wsinv.headers.get("Call-ID") == "wsinv.ndaksdj@192.0.2.1"
    assert wsinv.to_addr.tag == "1918181833n" and wsinv.cseq_number == 9
    assert [v.host for v in wsinv.vias] == ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
    esc01 = parse_datagram(load("esc01"))
    assert esc01.ruri.user == "sips%3Auser%40example.com"
    escnull = parse_datagram(load("escnull"))
    assert "%00" in escnull.to_addr.uri.user
    semiuri = parse_datagram(load("semiuri"))
    assert semiuri.ruri.user == "user;par=u%40example.net" and semiuri.ruri.host == "example.com"
    longreq = parse_datagram(load("longreq"))
    assert len(longreq.vias) > 10 and len(longreq.body) == int(longreq.headers.get("Content-Length"))
    dblreq = parse_datagram(load("dblreq"))
    assert dblreq.body == b""
    mpart = parse_datagram(load("mpart01"))
    assert mpart.headers.get("Content-Type").startswith("multipart/mixed") and b"--" in mpart.body


@pytest.mark.parametrize("name, reason", [("unreason", None), ("noreason", "")])
def test_valid_responses_parse(name: str, reason: str | None) -> None:
    response = parse_datagram(load(name))
    assert isinstance(response, Response)
    if reason is not None:
        assert response.reason == reason
    else:
        assert response.status == 200 and len(response.reason) > 10  # UTF-8 and odd spacing kept


# --- 3.1.2 invalid messages: 400 (or 505), naming the problem; invalid responses dropped --------
@pytest.mark.parametrize("name, status, words", [
    ("badinv01", 400, "parameter"),        # empty Via / Contact parameters
    ("clerr", 400, "Content-Length"),      # Content-Length larger than the datagram's body
    ("ncl", 400, "Content-Length"),        # negative Content-Length
    ("scalar02", 400, "CSeq"),             # CSeq above 2**31 (also Max-Forwards 300, huge Expires)
    ("quotbal", 400, "quoted"),            # unterminated quote in To
    ("ltgtruri", 400, "Request-URI"),      # <...> around the Request-URI
    ("lwsruri", 400, "Request-Line"),      # whitespace inside the Request-URI
    ("lwsstart", 400, "Request-Line"),     # several SP between Request-Line elements
    ("trws", 400, "Request-Line"),         # trailing whitespace after SIP-Version
    ("escruri", 400, "headers"),           # escaped headers in the Request-URI
    ("baddate", 400, "Date"),              # a Date not in GMT
    ("regbadct", 400, "Contact"),          # ?header in an addr-spec Contact without <>
    ("badaspec", 400, "whitespace"),       # "< sip:... >"
    ("baddn", 400, "display name"),        # unquoted display name with a comma
    ("badvers", 505, "Version"),           # SIP/7.0
    ("mismatch01", 400, "CSeq"),           # CSeq method differs from the method
    ("mismatch02", 400, "CSeq"),           # unknown method, CSeq INVITE
])
def test_invalid_requests_get_a_specific_error(name: str, status: int, words: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_datagram(load(name))
    error = caught.value
    assert error.status == status and error.partial is not None
    assert words.lower() in error.reason.lower(), error.reason
    if status == 400:
        assert error.reason.startswith("Bad Request - ")


@pytest.mark.parametrize("name", ["scalarlg", "bigcode"])
def test_invalid_responses_are_dropped(name: str) -> None:
    assert answer(name) is None
    assert StreamParser().feed(load(name)) == []  # framed, found invalid, dropped: no event, no close


def test_invalid_framing_on_a_stream_closes_it() -> None:
    [event] = StreamParser().feed(load("ncl"))
    assert event.error.status == 400 and event.error.fatal
    [event] = StreamParser().feed(load("mcl01"))
    assert event.error.status == 400 and event.error.fatal
    assert StreamParser().feed(load("clerr")) == []  # on a stream the rest of the body may still come


# --- 3.2 transaction layer ---------------------------------------------------------------------
def test_badbranch_uses_rfc2543_matching_and_absorbs_the_retransmission() -> None:
    request = parse_datagram(load("badbranch"))
    assert request.vias[0].branch == "z9hG4bK" and not request.vias[0].rfc3261_branch
    assert server_key(request)[0] == "2543"
    layer = TransactionLayer()
    first = layer.receive_request(request, 0.0)
    assert first.kind == "request" and answer("badbranch") == 200
    assert layer.receive_request(parse_datagram(load("badbranch")), 0.1).kind == "retransmission"


# --- 3.3 application layer ---------------------------------------------------------------------
@pytest.mark.parametrize("name, status", [
    ("insuf", 400),     # Call-ID, From, To missing
    ("unkscm", 416),    # unknown Request-URI scheme
    ("novelsc", 416),   # soap.beep: a registered scheme SIP does not route
    ("unksm2", 405),    # parses (isbn:, http:, name: kept opaque); REGISTER: method inspection first
    ("bext01", 420),    # Require names unsupported extensions (Proxy-Require is for proxies)
    ("invut", 415),     # an INVITE body of an unknown type
    ("regaut01", 405),  # unknown Authorization scheme: parsed; REGISTER is not served here
    ("multi01", 400),   # several CSeq, Call-ID, To, From, Max-Forwards
    ("mcl01", 400),     # two different Content-Length values
    ("zeromf", 200),    # Max-Forwards 0 matters to proxies; a UAS answers OPTIONS
    ("cparam01", 405),
    ("cparam02", 405),
    ("regescrt", 405),
])
def test_application_layer_answers(name: str, status: int) -> None:
    assert answer(name) == status


def test_application_layer_details() -> None:
    router = router_for()
    bext = router(parse_datagram(load("bext01")), PEER)
    assert bext.headers.get("Unsupported") == "nothingSupportsThis, nothingSupportsThisEither"
    invut = router_for("invut")(parse_datagram(load("invut")), PEER)
    assert invut.status == 415 and invut.headers.get("Accept") == "application/sdp"
    unksm2 = parse_datagram(load("unksm2"))
    assert isinstance(unksm2.to_addr.uri, AbsoluteUri) and unksm2.to_addr.uri.scheme == "isbn"
    assert unksm2.from_addr.uri.scheme == "http"
    from um.sip.headers import parse_addresses
    [cparam01] = parse_addresses(parse_datagram(load("cparam01")).headers.get("Contact"))
    assert "unknownparam" in cparam01.params and "unknownparam" not in cparam01.uri.params
    [cparam02] = parse_addresses(parse_datagram(load("cparam02")).headers.get("Contact"))
    assert "unknownparam" in cparam02.uri.params and "unknownparam" not in cparam02.params
    [regescrt] = parse_addresses(parse_datagram(load("regescrt")).headers.get("Contact"))
    assert regescrt.uri.headers == {"Route": "%3Csip:sip.example.com%3E"}
    bcast = parse_datagram(load("bcast"))
    assert isinstance(bcast, Response) and bcast.vias[0].host == "192.0.2.198"
    assert TransactionLayer().receive_response(bcast, 0.0).kind == "stray"  # no client transaction: dropped


def test_sdp01_accept_without_sdp() -> None:
    request = parse_datagram(load("sdp01"))
    assert request.headers.get("Accept") == "text/nobodyKnowsThis"
    assert router_for("sdp01")(request, PEER).status == 302  # a 302 carries no body: Accept is moot
    worker = MailboxService("127.0.0.1", "dual", (5065, 5067), (5066, 5068), call_handler=StandInCalls(),
                            gateway=lambda peer: "gw")  # the test's peer is a gateway
    answer_ = worker.worker_handler(1)(parse_datagram(load("sdp01")), PEER)
    assert answer_.status == 406 and answer_.headers.get("Accept") == "application/sdp"  # the worker's SDP can't go


# --- 3.4 backward compatibility ----------------------------------------------------------------
def test_inv2543_is_accepted() -> None:
    request = parse_datagram(load("inv2543"))
    assert request.vias[0].branch is None and request.headers.get("Max-Forwards") is None
    assert answer("inv2543", router_for("inv2543")) == 302
