"""The MRAS XML codec (um.mras.codec): Lync's request, round trips, and every refusal."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from um.mras import codec

LYNC_REQUEST = b"""<request requestID="1" from="sip:alice@example.test" version="1.0"
  to="sip:mrasloc.example.test@example.test"
  xmlns="http://schemas.microsoft.com/2006/09/sip/mrasp"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <credentialsRequest credentialsRequestID="1">
  <identity>sip:alice@example.test</identity>
  <location>intranet</location>
  <duration>480</duration>
 </credentialsRequest>
</request>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<request xmlns="http://schemas.microsoft.com/2006/09/sip/mrasp" requestID="1" version="2.0"
 to="sip:mrasloc.example.test@example.test" from="sip:alice@example.test">
 <credentialsRequest credentialsRequestID="1"><identity>&lol9;</identity></credentialsRequest>
</request>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<request xmlns="http://schemas.microsoft.com/2006/09/sip/mrasp" requestID="1" version="2.0" to="a" from="b">
 <credentialsRequest credentialsRequestID="1"><identity>&xxe;</identity></credentialsRequest>
</request>"""


def request_with(count: int, version: str = "2.0", extra: str = "") -> bytes:
    items = "".join(f'<credentialsRequest credentialsRequestID="{i}"><identity>sip:u{i}@example.test'
                    f"</identity>{extra}</credentialsRequest>" for i in range(count))
    return (f'<request xmlns="{codec.NAMESPACE}" requestID="7" version="{version}" '
            f'to="sip:mrasloc.example.test@example.test" from="sip:w@example.test">{items}</request>').encode()


def refusal(body: bytes) -> codec.MrasError:
    with pytest.raises(codec.MrasError) as caught:
        codec.decode_request(body)
    return caught.value


def test_decodes_the_lync_request() -> None:
    request = codec.decode_request(LYNC_REQUEST)
    assert (request.request_id, request.version, request.from_) == ("1", "1.0", "sip:alice@example.test")
    assert request.to == "sip:mrasloc.example.test@example.test"
    assert request.credentials_requests == (
        codec.CredentialsRequest("1", "sip:alice@example.test", "intranet", 480),)


def test_location_and_duration_are_optional() -> None:
    [item] = codec.decode_request(request_with(1)).credentials_requests
    assert item.location is None and item.duration is None


def test_request_round_trip() -> None:
    request = codec.Request("r-9", "2.0", "sip:mrasloc.example.test@example.test", "sip:w@example.test",
                            (codec.CredentialsRequest("a", "sip:a&b@example.test", "internet", 60),
                             codec.CredentialsRequest("b", "sip:c@example.test")), route="directip")
    assert codec.decode_request(codec.encode_request(request)) == request


def test_response_round_trip_and_shape() -> None:
    request = codec.decode_request(LYNC_REQUEST)
    relays = (codec.MediaRelay("intranet", direct_ip_address="10.0.0.5", udp_port=3478, tcp_port=3478),
              codec.MediaRelay("internet", host_name="av.example.test", udp_port=3478, tcp_port=443))
    grant = codec.CredentialsResponse("1", codec.Credentials("1700000000:sip:alice@example.test", "pw<&>=",
                                                             480, "example.test"), relays)
    response = codec.response_to(request, codec.OK, [grant])
    body = codec.encode_response(response)
    text = body.decode()
    assert text.startswith('<?xml version="1.0" encoding="utf-8"?><response xmlns="'
                           'http://schemas.microsoft.com/2006/09/sip/mrasp" requestID="1" version="1.0" '
                           'serverVersion="2.0" to="sip:mrasloc.example.test@example.test" '
                           'from="sip:alice@example.test" reasonPhrase="OK">')
    assert "<directIPAddress>10.0.0.5</directIPAddress>" in text and "<hostName>av.example.test" in text
    assert codec.decode_response(body) == response


def test_error_response_echoes_what_was_readable() -> None:
    error = refusal(request_with(1, version="3.0"))
    assert error.reason_phrase == codec.VERSION_MISMATCH
    response = codec.decode_response(codec.encode_response(codec.error_response(error)))
    assert (response.request_id, response.version, response.reason_phrase) == ("7", "3.0", "Version Mismatch")
    assert response.credentials_responses == () and not response.ok


@pytest.mark.parametrize("body, reason", [
    (b"<request", codec.REQUEST_MALFORMED),
    (b"not xml at all", codec.REQUEST_MALFORMED),
    (b"", codec.REQUEST_MALFORMED),
    (b"\xff\xfe<\x00", codec.REQUEST_MALFORMED),
    (request_with(1).replace(b' xmlns="http://schemas.microsoft.com/2006/09/sip/mrasp"', b""),
     codec.REQUEST_MALFORMED),
    (request_with(0), codec.REQUEST_MALFORMED),
    (request_with(1).replace(b' requestID="7"', b""), codec.REQUEST_MALFORMED),
    (request_with(1).replace(b' requestID="7"', b' requestID="' + b"x" * 65 + b'"'), codec.REQUEST_MALFORMED),
    (request_with(1).replace(b"<identity>sip:u0@example.test</identity>", b""), codec.REQUEST_MALFORMED),
    (request_with(1).replace(b"<identity>sip:u0@example.test</identity>", b"<identity> </identity>"),
     codec.REQUEST_MALFORMED),
    (request_with(1, extra="<identity>sip:x@example.test</identity>"), codec.REQUEST_MALFORMED),
    (request_with(1, extra="<location>moon</location>"), codec.REQUEST_MALFORMED),
    (request_with(1, extra="<duration>0</duration>"), codec.REQUEST_MALFORMED),
    (request_with(1, extra="<duration>-5</duration>"), codec.REQUEST_MALFORMED),
    (request_with(1, extra="<duration>" + "9" * 40 + "</duration>"), codec.REQUEST_MALFORMED),
    (request_with(1).replace(b'version="2.0"', b'version="2.0" route="anycast"'), codec.REQUEST_MALFORMED),
    (request_with(1, version="3.0"), codec.VERSION_MISMATCH),
    (request_with(1, version="1.1"), codec.VERSION_MISMATCH),
    (request_with(101), codec.REQUEST_TOO_LARGE),
    (f'<response xmlns="{codec.NAMESPACE}" reasonPhrase="OK"/>'.encode(), codec.NOT_SUPPORTED),
    (EXTERNAL_ENTITY, codec.REQUEST_MALFORMED),
    (b'<?xml version="1.0"?><!DOCTYPE request SYSTEM "http://192.0.2.1/x.dtd">' + request_with(1),
     codec.REQUEST_MALFORMED),
])
def test_refusals(body: bytes, reason: str) -> None:
    assert refusal(body).reason_phrase == reason


def test_100_credentials_requests_are_allowed() -> None:
    assert len(codec.decode_request(request_with(100)).credentials_requests) == 100


def test_oversized_body_is_refused_before_parsing() -> None:
    body = request_with(1).replace(b"sip:u0@example.test", b"sip:" + b"u" * codec.MAX_REQUEST_BYTES +
                                   b"@example.test")
    started = time.process_time()
    error = refusal(body)
    assert error.reason_phrase == codec.REQUEST_TOO_LARGE and "exceeds" in error.detail
    assert time.process_time() - started < 0.01


def test_billion_laughs_is_refused_fast_without_memory_growth() -> None:
    tracemalloc.start()
    started = time.process_time()
    error = refusal(BILLION_LAUGHS)
    cpu = time.process_time() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert error.reason_phrase == codec.REQUEST_MALFORMED and "DTDForbidden" in error.detail
    assert cpu < 0.1
    assert peak < 1024 * 1024


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_mras_errors(body: bytes) -> None:
    try:
        codec.decode_request(body)
    except codec.MrasError as error:
        assert error.reason_phrase in codec.REASON_PHRASES


_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40).filter(
    lambda s: s.strip() == s)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(_text, _text, st.sampled_from([None, "intranet", "internet"]),
                          st.one_of(st.none(), st.integers(1, 10**6))), min_size=1, max_size=5),
       st.sampled_from(codec.VERSIONS))
def test_request_round_trip_property(items: list, version: str) -> None:
    request = codec.Request("1", version, "sip:m@example.test", "sip:w@example.test",
                            tuple(codec.CredentialsRequest(*item) for item in items))
    assert codec.decode_request(codec.encode_request(request)) == request
