"""MRAS over MTLS SIP against `umedge serve`: Lync's request, the MRAS client, refusals, hostile bodies."""

from __future__ import annotations

import asyncio
import ssl
import time

import pytest
from aioice import stun

from tests.auth.conftest import (
    CONTENT_TYPE,
    EdgeNode,
    allocate,
    process_cpu,
    read_sip,
    sip_exchange,
    sip_request,
    tls_connect,
    tls_context,
)
from tests.auth.test_mras_codec import BILLION_LAUGHS, LYNC_REQUEST, request_with
from um.mras import codec
from um.mras.client import MrasClient, MrasRefused, MrasSipError, client_ssl_context


def service(edge: EdgeNode, body: bytes) -> codec.Response:
    status, headers, answer = sip_exchange(edge, "SERVICE", body)
    assert status == "SIP/2.0 200 OK", status
    assert headers["content-type"] == CONTENT_TYPE
    return codec.decode_response(answer)


def test_lync_request_gets_working_credentials(edge: EdgeNode) -> None:
    started = time.time()
    status, headers, body = sip_exchange(edge, "SERVICE", LYNC_REQUEST)
    assert status == "SIP/2.0 200 OK" and headers["call-id"] == "mras-1" and headers["cseq"] == "1 SERVICE"
    assert ";tag=" in headers["to"]
    response = codec.decode_response(body)
    assert (response.request_id, response.version, response.server_version) == ("1", "1.0", "2.0")
    assert (response.to, response.from_) == ("sip:mrasloc.example.test@example.test", "sip:alice@example.test")
    assert response.reason_phrase == "OK"
    [grant] = response.credentials_responses
    assert grant.credentials_request_id == "1"
    credentials = grant.credentials
    assert credentials.duration == 60  # 480 requested, [auth].max_token_lifetime = 60 here
    expiry, _, identity = credentials.username.partition(":")
    assert identity == "sip:alice@example.test"
    assert started + 3600 - 2 <= int(expiry) <= time.time() + 3600
    [relay] = grant.media_relays
    assert relay == codec.MediaRelay("intranet", direct_ip_address="127.0.0.1",
                                     udp_port=edge.port("edge", "turn_udp_port"),
                                     tcp_port=edge.port("edge", "turn_tcp_port"))
    relayed = allocate(edge, credentials.username, credentials.password)
    assert relayed[0] == "127.0.0.1"
    assert credentials.password not in edge.process.stderr()
    assert ("token issued identity=sip:alice@example.test requester=cert:client1@127.0.0.1:"
            in edge.process.stderr())


def test_mras_client_gets_credentials_that_allocate_over_tcp(edge: EdgeNode) -> None:
    async def scenario() -> list[codec.CredentialsResponse]:
        context = client_ssl_context(edge.certs, "node1")  # the mailbox worker's own node certificate
        async with await MrasClient.connect("127.0.0.1", edge.port("auth", "mras_tls_port"), context,
                                            server_hostname="node1.example.test") as client:
            grants = await asyncio.gather(*(
                client.request_credentials(f"sip:worker{i}@example.org", location="internet", duration=5)
                for i in range(5)))  # pipelined on one connection
            with pytest.raises(MrasRefused) as refused:
                await client.request_credentials("sip:eve@elsewhere.test")
            assert refused.value.reason_phrase == "Forbidden"
            return list(grants)

    grants = asyncio.run(scenario())
    assert [g.credentials.username.split(":", 1)[1] for g in grants] == [
        f"sip:worker{i}@example.org" for i in range(5)]
    assert all(g.credentials.duration == 5 and g.credentials.realm == "example.test" for g in grants)
    relay = grants[0].media_relays[0]
    assert relay.udp_port == edge.port("edge", "turn_udp_port")
    credentials = grants[3].credentials
    assert allocate(edge, credentials.username, credentials.password, transport="tcp")[0] == "127.0.0.1"


def test_batch_of_100_is_granted_whole(edge: EdgeNode) -> None:
    response = service(edge, request_with(100))
    assert response.ok and len(response.credentials_responses) == 100
    assert len({c.credentials.password for c in response.credentials_responses}) == 100


@pytest.mark.parametrize("body, reason", [
    (b"<request xmlns='http://schemas.microsoft.com/2006/09/sip/mrasp'><credentialsRequest>", "Request Malformed"),
    (request_with(101), "Request Too Large"),
    (request_with(1, version="3.0"), "Version Mismatch"),
    (request_with(2).replace(b"sip:u1@example.test", b"sip:u1@elsewhere.test"), "Forbidden"),
    (request_with(1).replace(b"sip:u0@example.test", b"tel:+15550100"), "Request Malformed"),
    (f'<response xmlns="{codec.NAMESPACE}" reasonPhrase="OK"/>'.encode(), "Not Supported"),
])
def test_refusals_are_200_with_a_reason_phrase(edge: EdgeNode, body: bytes, reason: str) -> None:
    response = service(edge, body)
    assert response.reason_phrase == reason and response.credentials_responses == ()


def test_billion_laughs_costs_the_server_under_100ms_cpu(edge: EdgeNode) -> None:
    with tls_connect(edge.port("auth", "mras_tls_port"), tls_context(edge.certs)) as sock:
        sock.sendall(sip_request("OPTIONS"))  # handshake and connection setup outside the measurement
        read_sip(sock)
        before = process_cpu(edge.process.proc.pid)
        sock.sendall(sip_request("SERVICE", BILLION_LAUGHS, call_id="lol"))
        status, _, body = read_sip(sock)
        used = process_cpu(edge.process.proc.pid) - before
    assert status == "SIP/2.0 200 OK"
    assert codec.decode_response(body).reason_phrase == "Request Malformed"
    assert used < 0.1, used


def test_sip_level_answers(edge: EdgeNode) -> None:
    status, headers, _ = sip_exchange(edge, "OPTIONS")
    assert status == "SIP/2.0 200 OK" and headers["allow"] == "OPTIONS, SERVICE"
    assert headers["accept"] == CONTENT_TYPE
    status, headers, _ = sip_exchange(edge, "SERVICE", b"<x/>", content_type="application/sdp")
    assert status == "SIP/2.0 415 Unsupported Media Type" and headers["accept"] == CONTENT_TYPE
    status, headers, _ = sip_exchange(edge, "INVITE")
    assert status == "SIP/2.0 405 Method Not Allowed" and headers["allow"] == "OPTIONS, SERVICE"


def test_oversized_bodies_through_the_mras_client(edge: EdgeNode) -> None:
    def batch(identity_chars: int) -> codec.Request:
        return codec.Request("1", "2.0", "sip:mrasloc.example.test@example.test", "sip:w@example.test", tuple(
            codec.CredentialsRequest(str(i), "sip:" + "u" * identity_chars + "@example.test")
            for i in range(100)))

    async def scenario() -> tuple[str, int]:
        context = client_ssl_context(edge.certs, "client1")
        client = await MrasClient.connect("127.0.0.1", edge.port("auth", "mras_tls_port"), context,
                                          server_hostname="node1.example.test")
        try:
            too_large = await client.request(batch(450))  # ~55 KB: past the MRAS limit, within SIP's
            with pytest.raises(MrasSipError) as sip_error:
                await client.request(batch(800))  # ~85 KB: the SIP parser refuses the message
            return too_large.reason_phrase, sip_error.value.status
        finally:
            await client.close()

    assert asyncio.run(scenario()) == ("Request Too Large", 513)


@pytest.mark.parametrize("max_tls12", [True, False])
def test_without_a_client_certificate_the_handshake_fails(edge: EdgeNode, max_tls12: bool) -> None:
    context = tls_context(edge.certs, client=None, max_tls12=max_tls12)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        with tls_connect(edge.port("auth", "mras_tls_port"), context) as sock:
            # TLS 1.3 reports the server's certificate_required alert on the first read.
            sock.sendall(sip_request("SERVICE", LYNC_REQUEST))
            read_sip(sock)


def test_altered_username_gets_401(edge: EdgeNode) -> None:
    [grant] = service(edge, LYNC_REQUEST).credentials_responses
    altered = grant.credentials.username.replace("alice", "mallory")
    with pytest.raises(stun.TransactionFailed) as failed:
        allocate(edge, altered, grant.credentials.password)
    assert failed.value.response.attributes["ERROR-CODE"][0] == 401
