"""Call router policy, in process: gateways, hunt groups, dial plans, directory, diversion, health."""

from __future__ import annotations

import pytest
from twisted.internet import defer, task

from tests.fakes.standin_worker import StandInCalls
from um.callrouter import CallRouter, GatewayTable, ProbeSettings, diverting_user
from um.directory import (
    Directory,
    DirectoryError,
    MailboxServer,
    load_file,
    parse_dial_plans,
    parse_gateways,
    parse_hunt_groups,
    parse_mailboxes,
    parse_servers,
)
from um.mailbox import MailboxService
from um.sip.message import Headers, Request, Response
from um.sip.parser import parse_datagram
from um.sip.stream import Peer

GW = Peer("192.0.2.10", 5060, "tcp")
GW_TLS = Peer("192.0.2.50", 5061, "tls", "gw1.example.test", ("gw1.example.test",))


def invite(pilot: str = "5000", to: str = "1001", extra: str = "", branch: str = "z9hG4bK-7") -> Request:
    return parse_datagram((f"INVITE sip:{pilot}@192.0.2.1 SIP/2.0\r\n"
                           f"Via: SIP/2.0/TCP 192.0.2.10:5060;branch={branch}\r\n"
                           f"Max-Forwards: 70\r\nFrom: <sip:gw@192.0.2.10>;tag=1\r\nTo: <sip:{to}@192.0.2.1>\r\n"
                           f"Call-ID: c-{branch}\r\nCSeq: 1 INVITE\r\nContact: <sip:gw@192.0.2.10>\r\n{extra}"
                           "Content-Length: 0\r\n\r\n").encode())


def options() -> Request:
    return parse_datagram(b"OPTIONS sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.10;branch=z9hG4bK-o\r\n"
                          b"From: <sip:gw@192.0.2.10>;tag=1\r\nTo: <sip:192.0.2.1>\r\nCall-ID: o\r\n"
                          b"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


def make_router(gateways: list[dict] | None = None, mode: str = "dual", servers: tuple = (),
                mailboxes: list[dict] | None = None, client: object = None) -> CallRouter:
    plans = parse_dial_plans([
        {"name": "default", "extension_length": 4, "access_numbers": ["5001"], "auto_attendant_numbers": ["5002"]},
        {"name": "secure", "extension_length": 4, "voip_security": "secured"},
        {"name": "e164", "extension_length": 4, "uri_type": "e164"},
    ])
    groups = parse_hunt_groups([{"pilot": "5000", "dial_plan": "default"}, {"pilot": "5001", "dial_plan": "default"},
                                {"pilot": "5002", "dial_plan": "default"}, {"pilot": "6000", "dial_plan": "secure"},
                                {"pilot": "7000", "dial_plan": "e164"},
                                {"pilot": "8000", "dial_plan": "secure", "gateway": "gw-b"}])
    directory = Directory({p.name: p for p in plans}, parse_mailboxes(mailboxes or [
        {"extension": "1000-1009"}, {"extension": "2000", "e164": "+4930123452000", "dial_plan": "e164"}]),
        {s.name: s for s in servers})
    local = MailboxService("192.0.2.1", mode, (5065, 5067), (5066, 5068), call_handler=StandInCalls())
    table = GatewayTable(parse_gateways(gateways if gateways is not None else [
        {"address": "192.0.2.10"}, {"address": "198.51.100.0/24", "status": "no-new-calls"},
        {"address": "203.0.113.7", "status": "disabled"}, {"address": "gw1.example.test", "name": "gw-b"}]))
    return CallRouter(table, groups, directory, local, client=client, probe=ProbeSettings(retry_after=42))


def contact(response: Response) -> str:
    assert response.status == 302, (response.status, response.reason)
    return response.headers.get("Contact")


def test_redirects_to_the_called_mailbox_worker() -> None:
    router = make_router()
    assert contact(router(invite(), GW)) == "<sip:5000@192.0.2.1:5065;transport=tcp>"
    assert router.local.active.redirects == 1


def test_unknown_gateway_disabled_and_no_new_calls() -> None:
    router = make_router()
    refused = router(invite(), Peer("192.0.2.99", 5060, "tcp"))
    assert refused.status == 403 and refused.reason == "Forbidden"  # generic toward strangers
    assert router(options(), Peer("192.0.2.99", 5060, "tcp")).status == 403
    assert router(invite(), Peer("203.0.113.7", 5060, "tcp")).status == 403  # disabled
    assert router(options(), Peer("203.0.113.7", 5060, "tcp")).status == 403
    cidr = Peer("198.51.100.42", 5060, "tcp")  # inside the CIDR, no-new-calls
    assert router(options(), cidr).status == 200
    assert "no new calls" in router(invite(), cidr).reason


def test_fqdn_gateway_by_certificate_name_or_resolved_address() -> None:
    router = make_router()
    assert router(invite("6000"), GW_TLS).status == 302  # TLS peer named gw1.example.test
    stranger = Peer("192.0.2.77", 5060, "tcp")
    assert router(invite(), stranger).status == 403
    router.gateways.set_resolved({"gw1.example.test.": ["192.0.2.77"]})
    assert router(invite(), stranger).status == 302


def test_hunt_groups_and_unknown_extension() -> None:
    router = make_router()
    missing = router(invite("4999"), GW)
    assert missing.status == 404 and "hunt group" in missing.reason
    unknown = router(invite(to="1099"), GW)
    assert unknown.status == 404 and "no mailbox" in unknown.reason
    assert router(invite("8000"), GW_TLS).status == 302      # gateway-specific hunt group, its gateway
    assert router(invite("8000"), Peer("192.0.2.10", 1, "tls")).status == 404  # another gateway


def test_secured_dial_plan_needs_mtls_and_gets_a_tls_contact_in_the_gateways_scheme() -> None:
    router = make_router()
    assert "requires MTLS" in router(invite("6000"), GW).reason
    tls_peer = Peer("192.0.2.10", 5061, "tls")
    # Default: mirror the gateway's Request-URI: sip: (over TLS) gets sip:...;transport=tls, sips: gets sips:.
    assert contact(router(invite("6000"), tls_peer)) == "<sip:6000@192.0.2.1:5066;transport=tls>"
    sips = parse_datagram(invite("6000").encode().replace(b"INVITE sip:6000", b"INVITE sips:6000"))
    assert contact(router(sips, tls_peer)) == "<sips:6000@192.0.2.1:5066>"
    tls_mode = make_router(mode="tls")
    assert contact(tls_mode(sips, tls_peer)) == "<sips:6000@192.0.2.1:5065>"
    # Configured per gateway ([[callrouter.gateways]] contact_scheme), whatever the Request-URI says.
    for scheme, expected in (("sips", "<sips:6000@192.0.2.1:5066>"),
                             ("sip-tls", "<sip:6000@192.0.2.1:5066;transport=tls>")):
        configured = make_router(gateways=[{"address": "192.0.2.10", "contact_scheme": scheme}])
        assert contact(configured(invite("6000"), tls_peer)) == expected
        assert contact(configured(sips, tls_peer)) == expected
    assert contact(router(invite(), tls_peer)).endswith(";transport=tcp>")  # unsecured plans: untouched
    with pytest.raises(DirectoryError, match='"sips" or "sip-tls"'):
        parse_gateways([{"address": "192.0.2.10", "contact_scheme": "tls"}])
    unavailable = tls_mode(invite(), GW)  # an unsecured plan, but the workers only speak MTLS
    assert unavailable.status == 503 and unavailable.headers.get("Retry-After") == "42"
    tcp_mode = make_router(mode="tcp")
    assert tcp_mode(invite("6000"), Peer("192.0.2.10", 5061, "tls")).status == 503


def test_diversion_and_history_info_name_the_called_user() -> None:
    router = make_router()
    diverted = invite(to="5000", extra="Diversion: <sip:1003@192.0.2.1>;reason=no-answer\r\n")
    assert diverting_user(diverted, "5000") == ("1003", "192.0.2.1")
    assert router(diverted, GW).status == 302
    history = invite(to="5000", extra="History-Info: <sip:1004@192.0.2.1>;index=1, <sip:5000@192.0.2.1>;index=1.1\r\n")
    assert diverting_user(history, "5000") == ("1004", "192.0.2.1")
    bad = invite(to="5000", extra="Diversion: <sip:1099@192.0.2.1>\r\n")
    assert router(bad, GW).status == 404


def test_subscriber_access_auto_attendant_and_e164() -> None:
    router = make_router()
    assert router(invite("5001", to="5001"), GW).status == 302  # subscriber access number
    assert router(invite("5002", to="5002"), GW).status == 302  # auto attendant
    assert router(invite("5000", to="5000"), GW).status == 404  # the pilot is not an access number
    assert router(invite("7000", to="+4930123452000"), GW).status == 302
    assert router(invite("7000", to="+4930999"), GW).status == 404


def test_options_keepalive_require_and_methods() -> None:
    router = make_router()
    ok = router(options(), GW)
    assert ok.status == 200 and "INVITE" in ok.headers.get("Allow")
    required = router(invite(extra="Require: 100rel\r\n"), GW)
    assert required.status == 420 and required.headers.get("Unsupported") == "100rel"
    bye = parse_datagram(options().encode().replace(b"OPTIONS", b"BYE"))
    assert router(bye, GW).status == 405
    ack = parse_datagram(options().encode().replace(b"OPTIONS", b"ACK"))
    assert router(ack, GW) is None


class FakeClient:
    """Answers like a remote UM service would, recording what it was asked."""

    def __init__(self, answer: Response | Exception) -> None:
        self.answer, self.asked = answer, []

    def request(self, host, port, transport, request, timeout=None):  # type: ignore[no-untyped-def]
        self.asked.append((host, port, transport, request))
        if isinstance(self.answer, Exception):
            return defer.fail(self.answer)
        return defer.succeed(self.answer)


def test_remote_mailbox_server_is_asked_and_its_worker_returned() -> None:
    remote = MailboxServer("mbx2", "192.0.2.20", 5062, 5063, "tls")
    ok = Response(302, "Moved Temporarily", Headers([("Contact", "<sip:5000@192.0.2.20:5067;transport=tcp>")]))
    client = FakeClient(ok)
    router = make_router(servers=(remote,), mailboxes=[{"extension": "1000-1009", "server": "mbx2"}], client=client)
    results = []
    router(invite(extra="Diversion: <sip:1001@192.0.2.1>\r\n"), GW).addCallback(results.append)
    assert contact(results[0]) == "<sip:5000@192.0.2.20:5067;transport=tcp>"
    host, port, transport, asked = client.asked[0]
    assert (host, port, transport) == ("192.0.2.20", 5063, "tls")
    assert asked.uri == "sip:5000@192.0.2.20:5063" and asked.headers.get("Diversion")
    assert asked.headers.get("Max-Forwards") == "69"


def test_down_servers_are_skipped_and_503_when_all_are_down() -> None:
    remote = MailboxServer("mbx2", "192.0.2.20")
    client = FakeClient(ConnectionError("refused"))
    router = make_router(servers=(remote,), mailboxes=[{"extension": "1000-1009", "server": "mbx2"}], client=client)
    router.probe.failure_threshold = 2
    results = []
    router(invite(), GW).addCallback(results.append)
    assert results[-1].status == 503 and results[-1].headers.get("Retry-After") == "42"
    assert router.health["mbx2"].up  # one failure: not yet down
    router(invite(branch="z9hG4bK-8"), GW).addCallback(results.append)
    assert not router.health["mbx2"].up
    answered = router(invite(branch="z9hG4bK-9"), GW)
    assert isinstance(answered, Response) and answered.status == 503  # skipped without asking
    assert len(client.asked) == 2
    # Subscriber access goes to a healthy server: the local one.
    assert router(invite("5001", to="5001"), GW).status == 302


def test_probes_mark_servers_down_and_up_like_the_dispatcher() -> None:
    remote = MailboxServer("mbx2", "192.0.2.20")
    client = FakeClient(ConnectionError("refused"))
    router = make_router(servers=(remote,), client=client)
    router.probe.failure_threshold, router.probe.success_threshold = 3, 2
    make = lambda server: Request("OPTIONS", "sip:x", Headers())  # noqa: E731
    for _ in range(3):
        router.probe_all(make)
    assert not router.health["mbx2"].up
    client.answer = Response(200, "OK", Headers())
    router.probe_all(make)
    assert not router.health["mbx2"].up  # one success of two
    router.probe_all(make)
    assert router.health["mbx2"].up


def test_directory_parsing_errors_and_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DirectoryError, match="host bits zero"):
        parse_gateways([{"address": "10.0.0.1/8"}])
    with pytest.raises(DirectoryError, match="status"):
        parse_gateways([{"address": "10.0.0.1", "status": "maybe"}])
    with pytest.raises(DirectoryError, match="unknown key"):
        parse_hunt_groups([{"pilot": "5000", "dial_plan": "d", "color": "red"}])
    with pytest.raises(DirectoryError, match="range"):
        parse_mailboxes([{"extension": "1009-1000"}])
    with pytest.raises(DirectoryError, match="reserved"):
        parse_servers([{"name": "local", "address": "192.0.2.1"}])
    path = tmp_path / "dir.toml"
    path.write_text('mailboxes = [{ extension = "3000", server = "mbx3" }]\n'
                    'servers = [{ name = "mbx3", address = "127.0.0.1", tcp_port = 6062 }]\n')
    mailboxes, servers = load_file(path)
    assert mailboxes[0].server == "mbx3" and servers[0].port == 6062


def test_mailbox_service_recycle_and_drain() -> None:
    clock = task.Clock()
    service = MailboxService("192.0.2.1", "dual", (5065, 5067), (5066, 5068), clock=clock, drain_timeout=100,
                             call_handler=StandInCalls(), gateway=lambda peer: "gw" if peer.host == GW.host else None)
    worker1 = service.worker_handler(1)
    sdp = b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
    call = invite(extra="Content-Type: application/sdp\r\n").encode().replace(
        b"Content-Length: 0", b"Content-Length: %d" % len(sdp)) + sdp
    stranger = worker1(parse_datagram(call), Peer("198.51.100.7", 5060, "tcp"))  # not a gateway: nothing to learn
    assert (stranger.status, stranger.reason, service.untrusted) == (403, "Forbidden", 1)
    answered = worker1(parse_datagram(call), GW)
    assert answered.status == 200 and b"m=audio 0 RTP/AVP 0" in answered.body
    assert len(service.slots[0].calls) == 1
    status = service.recycle()
    assert status["active_slot"] == 2 and service.slots[0].state == "draining"
    assert service.worker_contact("5000", False) == "sip:5000@192.0.2.1:5067;transport=tcp"
    with pytest.raises(RuntimeError, match="draining"):
        service.recycle()
    to_tag = answered.headers.get("To").split("tag=")[1]
    bye = call.replace(b"INVITE sip:5000@192.0.2.1", b"BYE sip:gw@192.0.2.10").replace(b"1 INVITE", b"2 BYE")
    bye = bye.replace(b"To: <sip:1001@192.0.2.1>", b"To: <sip:1001@192.0.2.1>;tag=" + to_tag.encode())
    assert worker1(parse_datagram(bye), GW).status == 200
    assert service.slots[0].state == "idle" and service.slots[0].calls == {}
    assert service.recycle()["active_slot"] == 1  # slot 1 exited: it can start again
    assert worker1(parse_datagram(call.replace(b"z9hG4bK-7", b"z9hG4bK-x")), GW).status == 200
    service.recycle()
    clock.advance(100)  # drain timeout: the old worker exits anyway
    assert service.slots[0].state == "idle"


def test_um_service_accepts_only_call_routers() -> None:
    service = MailboxService("192.0.2.1", "dual", (5065, 5067), (5066, 5068), call_routers=("192.0.2.0/28",),
                             call_handler=StandInCalls())
    assert contact(service.handle_um_service(invite(), GW)) == "<sip:5000@192.0.2.1:5065;transport=tcp>"
    refused = service.handle_um_service(invite(), Peer("192.0.2.99", 1, "tcp"))
    assert (refused.status, refused.reason) == (403, "Forbidden")
    assert contact(service.handle_um_service(invite(), Peer("203.0.113.1", 1, "tls"))).startswith("<sip:")
    secure = parse_datagram(invite().encode().replace(b"INVITE sip:5000", b"INVITE sips:5000"))
    assert contact(service.handle_um_service(secure, GW)) == "<sips:5000@192.0.2.1:5066>"
