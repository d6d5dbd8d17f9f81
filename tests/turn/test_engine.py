"""The sans-I/O TURN engine with fake sockets and a fake clock: every RFC 8656 rule we serve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from edge import stun
from edge.stun import Attr
from edge.tokens import mint
from edge.turn.auth import OFFERED_ALGORITHMS, Authenticator
from edge.turn.dialect import TurnDialect
from edge.turn.engine import RelayAddresses, TurnEngine
from edge.turn.policy import Limits, PeerPolicy
from edge.turn.ports import PortPool

SECRET = "engine-secret-0123456789"
REALM = "example.test"
CLIENT = ("192.0.2.10", 40000)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass(eq=False)
class FakeRelay:
    address: tuple[str, int]
    family: int
    sent: list[tuple[bytes, tuple[str, int]]] = field(default_factory=list)
    closed: bool = False
    receiver: object = None
    df_ok: bool = True

    def sendto(self, data: bytes, address: tuple[str, int]) -> bool:
        self.sent.append((data, address))
        return True

    def set_dont_fragment(self) -> bool:
        return self.df_ok

    def close(self) -> None:
        self.closed = True


@dataclass(eq=False)
class FakeLink:
    address: tuple[str, int] = CLIENT
    kind: str = "udp"
    stream: bool = False
    allocation: object = None
    inbox: list[bytes] = field(default_factory=list)

    def send(self, data: bytes) -> None:
        self.inbox.append(data)

    def last(self) -> stun.Message:
        return stun.decode(self.inbox[-1])


class Harness:
    def __init__(self, limits: Limits | None = None, allowed: tuple[str, ...] = (),
                 v6: bool = False, alternates: tuple[tuple[str, int], ...] = (),
                 df_ok: bool = True, advertise: str = "", dialects: Sequence[TurnDialect] = ()) -> None:
        self.clock = Clock()
        self.relays: list[FakeRelay] = []
        self.taken: set[tuple[int, int]] = set()

        def bind(family: int, port: int, host: str) -> FakeRelay | None:
            if (family, port) in self.taken:
                return None
            relay = FakeRelay((host, port), family, df_ok=df_ok)
            self.relays.append(relay)
            return relay

        auth = Authenticator(REALM, lambda: [SECRET], b"k" * 32, 600, self.clock)
        bind_addresses = {4: "198.51.100.1", **({6: "2001:db8::1"} if v6 else {})}
        self.engine = TurnEngine(
            auth, limits or Limits(),
            PeerPolicy.from_config(allowed, (), {"198.51.100.2"}, {"198.51.100.1"}, {3478, 5349}),
            RelayAddresses(bind_addresses, {4: advertise} if advertise else {}),
            PortPool(50000, 50099), bind, self.clock, alternates, dialects=dialects)
        self.link = FakeLink()
        self.nonce = b""
        self.token = mint(SECRET, "sip:alice@example.test", 3600, self.clock.now)

    def key(self, username: str | None = None, password: str | None = None, algorithm: int = stun.MD5) -> bytes:
        return stun.long_term_key(username or self.token.username, REALM, password or self.token.password,
                                  algorithm)

    def request(self, method: int, attrs: list[tuple[int, bytes]], link: FakeLink | None = None,
                *, auth: bool = True, username: str | None = None, password: str | None = None,
                extra_auth: list[tuple[int, bytes]] | None = None, algorithm: int = stun.MD5,
                sha256: bool = False, tid: bytes | None = None) -> stun.Message:
        link = link or self.link
        if auth and not self.nonce:
            self.engine.from_client(link, stun.Message(method, stun.REQUEST, None, []).encode())
            self.nonce = link.last().get(Attr.NONCE) or b""
        attributes = list(attrs)
        key = None
        if auth:
            attributes += [(Attr.USERNAME, (username or self.token.username).encode()),
                           (Attr.REALM, REALM.encode()), (Attr.NONCE, self.nonce)]
            attributes += extra_auth or []
            key = self.key(username, password, algorithm)
        message = stun.Message(method, stun.REQUEST, tid, attributes)
        self.engine.from_client(link, message.encode(key, sha256=sha256, fingerprint=True))
        return link.last()

    def allocate(self, extra: list[tuple[int, bytes]] | None = None, link: FakeLink | None = None,
                 **kwargs: object) -> stun.Message:
        attrs = [(Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17))] + (extra or [])
        return self.request(stun.ALLOCATE, attrs, link, **kwargs)  # type: ignore[arg-type]

    def peer_attr(self, host: str, port: int, tid: bytes) -> tuple[int, bytes]:
        return Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(host, port, tid)

    def permission(self, host: str, link: FakeLink | None = None) -> stun.Message:
        tid = b"p" * 12
        return self.request(stun.CREATE_PERMISSION, [self.peer_attr(host, 9, tid)], link, tid=tid)

    def bind_channel(self, number: int, host: str, port: int) -> stun.Message:
        tid = bytes([number & 0xFF]) * 12
        return self.request(stun.CHANNEL_BIND, [
            (Attr.CHANNEL_NUMBER, stun.encode_channel_number(number)), self.peer_attr(host, port, tid)], tid=tid)


def code(message: stun.Message) -> int | None:
    value = message.error_code()
    return value[0] if value else None


def test_binding_needs_no_credentials() -> None:
    h = Harness()
    h.engine.from_client(h.link, stun.Message(stun.BINDING, stun.REQUEST).encode())
    reply = h.link.last()
    assert reply.msg_class == stun.SUCCESS and reply.xor_address() == CLIENT


def test_change_request_without_a_second_address_gets_420() -> None:
    h = Harness()
    for flags, expected in ((b"\0\0\0\x06", 420), (b"\0\0\0\x02", 420), (b"\0\0\0\x00", None), (b"\x06", 400)):
        h.engine.from_client(h.link, stun.Message(stun.BINDING, stun.REQUEST, None,
                                                  [(Attr.CHANGE_REQUEST, flags)]).encode())
        reply = h.link.last()
        assert code(reply) == expected, flags
        if expected == 420:
            assert reply.get(Attr.UNKNOWN_ATTRIBUTES) == Attr.CHANGE_REQUEST.to_bytes(2, "big")


def classic_request(tid: bytes, attributes: bytes = b"") -> bytes:
    return (0x0001).to_bytes(2, "big") + len(attributes).to_bytes(2, "big") + tid + attributes


def test_a_classic_binding_gets_mapped_address_and_its_whole_transaction_id() -> None:
    h = Harness()
    tid = bytes(range(1, 17))  # 128 bits, no magic cookie (RFC 3489)
    h.engine.from_client(h.link, classic_request(tid))
    answer = h.link.inbox[-1]
    assert answer[:2] == b"\x01\x01" and answer[4:20] == tid
    assert answer[20:24] == b"\x00\x01\x00\x08"  # MAPPED-ADDRESS, 8 bytes
    assert stun.decode_address(answer[24:32])[:2] == CLIENT
    sent = len(h.link.inbox)
    change = (0x0003).to_bytes(2, "big") + (4).to_bytes(2, "big") + b"\0\0\0\x06"
    h.engine.from_client(h.link, classic_request(tid, change))  # answer from another address: can't
    h.engine.from_client(h.link, classic_request(tid)[:-1] + b"\x00\x00")  # length field lies: not classic
    assert len(h.link.inbox) == sent
    assert h.engine.stats["classic_bindings"] == 2 and h.engine.stats["malformed"] == 1


def test_the_first_challenge_is_not_an_authentication_failure() -> None:
    h = Harness()
    h.allocate()
    assert h.engine.stats["auth_challenged_missing"] == 1
    assert not [k for k in h.engine.stats if k.startswith("auth_failed_")]


def test_unauthenticated_allocate_is_challenged_with_a_cookie_nonce() -> None:
    h = Harness()
    reply = h.allocate(auth=False)
    assert code(reply) == 401
    nonce = reply.get(Attr.NONCE)
    assert nonce.startswith(b"obMatJos2") and stun.nonce_features(nonce) == stun.SecurityFeature.PASSWORD_ALGORITHMS
    assert reply.get(Attr.REALM) == REALM.encode()
    offered = [n for n, _ in stun.decode_password_algorithms(reply.get(Attr.PASSWORD_ALGORITHMS))]
    assert offered == list(OFFERED_ALGORITHMS)
    assert not h.engine.allocations  # an unauthenticated packet costs no state


def test_allocate_success_and_response_integrity() -> None:
    h = Harness()
    reply = h.allocate()
    assert reply.msg_class == stun.SUCCESS
    assert reply.verify_integrity(h.key()) and reply.verify_fingerprint()
    host, port = stun.decode_xor_address(reply.get(Attr.XOR_RELAYED_ADDRESS), reply.transaction_id)
    assert host == "198.51.100.1" and 50000 <= port <= 50099
    assert stun.decode_lifetime(reply.get(Attr.LIFETIME)) == 600
    assert reply.xor_address() == CLIENT


def test_retransmitted_allocate_gets_the_same_answer_and_another_gets_437() -> None:
    h = Harness()
    first = h.allocate(tid=b"a" * 12)
    again = h.allocate(tid=b"a" * 12)
    assert again.raw == first.raw and len(h.engine.allocations) == 1
    assert code(h.allocate(tid=b"b" * 12)) == 437


@pytest.mark.parametrize("attrs, expected", [
    ([], 400),  # no REQUESTED-TRANSPORT
    ([(Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(6))], 442),
    ([(Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17)),
      (Attr.REQUESTED_ADDRESS_FAMILY, stun.encode_address_family(0x02))], 440),  # no IPv6 relay here
    ([(Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17)),
      (Attr.REQUESTED_ADDRESS_FAMILY, stun.encode_address_family(0x01)),
      (Attr.ADDITIONAL_ADDRESS_FAMILY, stun.encode_address_family(0x02))], 400),
    ([(Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17)),
      (Attr.EVEN_PORT, stun.encode_even_port(False)),
      (Attr.RESERVATION_TOKEN, b"12345678")], 400),
    ([(Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17)),
      (Attr.RESERVATION_TOKEN, b"12345678")], 508),
])
def test_allocate_errors(attrs: list[tuple[int, bytes]], expected: int) -> None:
    h = Harness()
    reply = h.request(stun.ALLOCATE, attrs)
    assert code(reply) == expected
    assert reply.verify_integrity(h.key())  # errors after authentication are authenticated
    assert not h.engine.allocations and all(r.closed for r in h.relays)


def test_unknown_comprehension_required_attribute_gets_420() -> None:
    h = Harness()
    reply = h.allocate([(0x0055, b"????")])
    assert code(reply) == 420
    assert stun.decode_unknown_attributes(reply.get(Attr.UNKNOWN_ATTRIBUTES)) == [0x0055]


def test_stale_nonce_gets_438_with_a_fresh_one() -> None:
    h = Harness()
    h.allocate()
    h.clock.now += 601
    reply = h.request(stun.REFRESH, [])
    assert code(reply) == 438 and reply.get(Attr.NONCE) != h.nonce
    h.nonce = reply.get(Attr.NONCE)
    assert h.request(stun.REFRESH, []).msg_class == stun.SUCCESS


def test_nonce_bound_to_the_client_address() -> None:
    h = Harness()
    h.allocate()
    other = FakeLink(address=("192.0.2.99", 1234))
    assert code(h.allocate(link=other)) == 438


@pytest.mark.parametrize("case", ["wrong password", "expired", "altered"])
def test_bad_credentials_get_401(case: str) -> None:
    h = Harness()
    username, password = h.token.username, h.token.password
    if case == "wrong password":
        password = mint("some-other-secret-123", "sip:alice@example.test", 3600, h.clock.now).password
    elif case == "expired":
        old = mint(SECRET, "sip:alice@example.test", 60, h.clock.now - 120)
        username, password = old.username, old.password
    else:
        username = username.replace("alice", "mallory")
    assert code(h.allocate(username=username, password=password)) == 401


def test_bid_down_of_password_algorithms_is_refused() -> None:
    h = Harness()
    tampered = [(Attr.PASSWORD_ALGORITHMS, stun.encode_password_algorithms([stun.MD5])),
                (Attr.PASSWORD_ALGORITHM, stun.encode_password_algorithm(stun.MD5))]
    assert code(h.allocate(extra_auth=tampered)) == 400
    only_one = [(Attr.PASSWORD_ALGORITHM, stun.encode_password_algorithm(stun.MD5))]
    assert code(h.allocate(extra_auth=only_one)) == 400


def test_sha256_password_algorithm_and_message_integrity_sha256() -> None:
    h = Harness()
    chosen = [(Attr.PASSWORD_ALGORITHMS, stun.encode_password_algorithms(list(OFFERED_ALGORITHMS))),
              (Attr.PASSWORD_ALGORITHM, stun.encode_password_algorithm(stun.SHA256))]
    reply = h.allocate(extra_auth=chosen, algorithm=stun.SHA256, sha256=True)
    assert reply.msg_class == stun.SUCCESS
    assert reply.get(Attr.MESSAGE_INTEGRITY_SHA256) is not None
    assert reply.verify_integrity(h.key(algorithm=stun.SHA256))


def test_userhash_resolves_on_an_existing_allocation() -> None:
    h = Harness()
    h.allocate()
    message = stun.Message(stun.REFRESH, stun.REQUEST, None, [
        (Attr.USERHASH, stun.userhash(h.token.username, REALM)), (Attr.REALM, REALM.encode()),
        (Attr.NONCE, h.nonce)])
    h.engine.from_client(h.link, message.encode(h.key(), fingerprint=True))
    assert h.link.last().msg_class == stun.SUCCESS


def test_refresh_lifetimes_and_deletion_free_the_port() -> None:
    h = Harness()
    assert code(h.request(stun.REFRESH, [])) == 437
    h.allocate()
    reply = h.request(stun.REFRESH, [(Attr.LIFETIME, stun.encode_lifetime(7200))])
    assert stun.decode_lifetime(reply.get(Attr.LIFETIME)) == 3600
    reply = h.request(stun.REFRESH, [(Attr.LIFETIME, stun.encode_lifetime(10))])
    assert stun.decode_lifetime(reply.get(Attr.LIFETIME)) == 600
    reply = h.request(stun.REFRESH, [(Attr.LIFETIME, stun.encode_lifetime(0))])
    assert stun.decode_lifetime(reply.get(Attr.LIFETIME)) == 0
    assert not h.engine.allocations and h.relays[0].closed and h.engine.ports.in_use == 0


def test_another_username_on_the_allocation_gets_441() -> None:
    h = Harness()
    h.allocate()
    other = mint(SECRET, "sip:bob@example.test", 3600, h.clock.now)
    assert code(h.request(stun.REFRESH, [], username=other.username, password=other.password)) == 441


def test_peer_policy() -> None:
    h = Harness()
    h.allocate()
    for denied in ("127.0.0.1", "0.1.2.3", "169.254.1.1", "224.0.0.5", "255.255.255.255", "198.51.100.2",
                   "10.1.2.3", "172.16.0.9", "192.168.1.1", "100.64.0.1"):
        assert code(h.permission(denied)) == 403, denied
    assert h.permission("198.51.100.1").msg_class == stun.SUCCESS  # another relay of this edge
    assert code(h.bind_channel(0x4005, "198.51.100.1", 3478)) == 403  # but not the edge's own TURN port
    assert h.bind_channel(0x4006, "198.51.100.1", 50001).msg_class == stun.SUCCESS
    assert code(h.permission("2001:db8::5")) == 443
    assert h.permission("203.0.113.5").msg_class == stun.SUCCESS
    assert code(h.request(stun.CREATE_PERMISSION, [])) == 400
    opened = Harness(allowed=("127.0.0.0/8", "10.1.0.0/16"))
    opened.allocate()
    assert opened.permission("127.0.0.1").msg_class == stun.SUCCESS
    assert opened.permission("10.1.2.3").msg_class == stun.SUCCESS  # an internal network opened by name
    assert code(opened.permission("10.2.0.1")) == 403  # the rest of 10/8 stays closed


def test_private_ipv6_peers_are_denied_by_default() -> None:
    h = Harness(v6=True)
    h.allocate([(Attr.REQUESTED_ADDRESS_FAMILY, stun.encode_address_family(0x02))])
    assert code(h.permission("fd00::5")) == 403
    assert h.permission("2001:db8::5").msg_class == stun.SUCCESS


def test_channels_and_the_data_path() -> None:
    h = Harness()
    h.allocate()
    relay = h.relays[0]
    peer = ("203.0.113.5", 7000)
    assert code(h.bind_channel(0x3FFF, *peer)) == 400
    assert h.bind_channel(0x4001, *peer).msg_class == stun.SUCCESS
    assert h.bind_channel(0x4001, *peer).msg_class == stun.SUCCESS  # refresh
    assert code(h.bind_channel(0x4001, "203.0.113.6", 7000)) == 400  # channel taken
    assert code(h.bind_channel(0x4002, *peer)) == 400  # peer has a channel
    h.engine.from_client(h.link, stun.encode_channel_data(0x4001, b"rtp!"))
    h.engine.from_client(h.link, stun.encode_channel_data(0x4003, b"lost"))  # unbound: dropped
    assert relay.sent == [(b"rtp!", peer)]
    relay.receiver(b"back", peer)
    assert stun.decode_channel_data(h.link.inbox[-1]) == (0x4001, b"back")
    relay.receiver(b"stranger", ("203.0.113.77", 1))  # no permission: dropped
    assert stun.decode_channel_data(h.link.inbox[-1]) == (0x4001, b"back")
    assert h.engine.traffic()["packets_to_peer"] == 1 and h.engine.traffic()["packets_to_client"] == 1


def test_stream_clients_get_padded_channel_data() -> None:
    h = Harness()
    h.link = FakeLink(kind="tcp", stream=True)
    h.allocate()
    h.bind_channel(0x4001, "203.0.113.5", 7000)
    h.relays[0].receiver(b"abcde", ("203.0.113.5", 7000))
    assert len(h.link.inbox[-1]) == 4 + 8


def test_send_and_data_indications() -> None:
    h = Harness()
    h.allocate()
    relay = h.relays[0]
    peer = ("203.0.113.9", 5004)

    def send(payload: bytes) -> None:
        tid = b"s" * 12
        h.engine.from_client(h.link, stun.Message(stun.SEND, stun.INDICATION, tid, [
            h.peer_attr(*peer, tid), (Attr.DATA, payload)]).encode())

    send(b"no permission yet")
    assert relay.sent == []
    h.permission(peer[0])
    send(b"hello")
    assert relay.sent == [(b"hello", peer)]
    relay.receiver(b"reply", peer)
    data = h.link.last()
    assert data.method == stun.DATA and data.msg_class == stun.INDICATION
    assert data.get(Attr.DATA) == b"reply"
    assert stun.decode_xor_address(data.get(Attr.XOR_PEER_ADDRESS), data.transaction_id) == peer


def test_lifetimes_expire_permissions_channels_and_allocations() -> None:
    h = Harness()
    h.allocate()
    relay = h.relays[0]
    h.bind_channel(0x4001, "203.0.113.5", 7000)
    h.clock.now += 301
    h.engine.tick()
    h.engine.from_client(h.link, stun.encode_channel_data(0x4001, b"late"))
    assert relay.sent == []  # the permission (300 s) ran out before the channel (600 s)
    h.clock.now += 300
    h.engine.tick()
    assert not h.engine.allocations and relay.closed and h.engine.ports.in_use == 0
    assert h.engine.stats["allocations_expired"] == 1


def test_quotas_and_alternate_server() -> None:
    h = Harness(Limits(max_allocations_per_user=2, max_allocations=3))
    links = [FakeLink(address=("192.0.2.10", 40000 + i)) for i in range(4)]
    results = []
    for link in links[:3]:
        h.nonce = b""
        results.append(code(h.allocate(link=link)))
    assert results == [None, None, 486]
    bob = mint(SECRET, "sip:bob@example.test", 3600, h.clock.now)
    h.nonce = b""
    assert h.allocate(link=links[3], username=bob.username, password=bob.password).msg_class == stun.SUCCESS
    h.nonce = b""
    carol = mint(SECRET, "sip:carol@example.test", 3600, h.clock.now)
    fifth = FakeLink(address=("192.0.2.10", 50000))
    assert code(h.allocate(link=fifth, username=carol.username, password=carol.password)) == 508
    redirect = Harness(Limits(max_allocations=1), alternates=(("192.0.2.200", 3478),))
    redirect.allocate()
    redirect.nonce = b""
    reply = redirect.allocate(link=FakeLink(address=("192.0.2.11", 1)))
    assert code(reply) == 300
    assert stun.decode_address(reply.get(Attr.ALTERNATE_SERVER)) == ("192.0.2.200", 3478)


def test_even_port_reservation_token_pairs() -> None:
    h = Harness()
    first = h.allocate([(Attr.EVEN_PORT, stun.encode_even_port(True))])
    port = stun.decode_xor_address(first.get(Attr.XOR_RELAYED_ADDRESS), first.transaction_id)[1]
    token = first.get(Attr.RESERVATION_TOKEN)
    assert port % 2 == 0 and token is not None and len(token) == 8
    h.nonce = b""
    second_link = FakeLink(address=("192.0.2.10", 40001))
    second = h.allocate([(Attr.RESERVATION_TOKEN, token)], link=second_link)
    assert stun.decode_xor_address(second.get(Attr.XOR_RELAYED_ADDRESS), second.transaction_id)[1] == port + 1
    h.nonce = b""
    assert code(h.allocate([(Attr.RESERVATION_TOKEN, token)], link=FakeLink(address=("192.0.2.10", 2)))) == 508


def test_unclaimed_reservation_is_released_after_30_seconds() -> None:
    h = Harness()
    h.allocate([(Attr.EVEN_PORT, stun.encode_even_port(True))])
    held = h.relays[1]
    assert h.engine.ports.in_use == 2 and not held.closed  # the odd port is bound, not just noted
    h.clock.now += 31
    h.engine.tick()
    assert held.closed and h.engine.ports.in_use == 1


def test_address_families() -> None:
    h = Harness(v6=True)
    v6 = h.allocate([(Attr.REQUESTED_ADDRESS_FAMILY, stun.encode_address_family(0x02))])
    assert stun.decode_xor_address(v6.get(Attr.XOR_RELAYED_ADDRESS), v6.transaction_id)[0] == "2001:db8::1"
    h.nonce = b""
    dual = h.allocate([(Attr.ADDITIONAL_ADDRESS_FAMILY, stun.encode_address_family(0x02))],
                      link=FakeLink(address=("192.0.2.10", 1)))
    relayed = [stun.decode_xor_address(v, dual.transaction_id)[0] for v in dual.get_all(Attr.XOR_RELAYED_ADDRESS)]
    assert relayed == ["198.51.100.1", "2001:db8::1"]
    v4_only = Harness()
    reply = v4_only.allocate([(Attr.ADDITIONAL_ADDRESS_FAMILY, stun.encode_address_family(0x02))])
    assert reply.msg_class == stun.SUCCESS and len(reply.get_all(Attr.XOR_RELAYED_ADDRESS)) == 1
    assert stun.decode_address_error_code(reply.get(Attr.ADDRESS_ERROR_CODE))[:2] == (0x02, 440)
    assert code(v4_only.request(stun.REFRESH, [(Attr.REQUESTED_ADDRESS_FAMILY,
                                                stun.encode_address_family(0x02))])) == 443


def test_dont_fragment() -> None:
    assert Harness().allocate([(Attr.DONT_FRAGMENT, b"")]).msg_class == stun.SUCCESS
    refused = Harness(df_ok=False)
    reply = refused.allocate([(Attr.DONT_FRAGMENT, b"")])
    assert code(reply) == 420 and all(r.closed for r in refused.relays)


def test_bandwidth_cap_drops_the_excess() -> None:
    h = Harness(Limits(bandwidth_bytes_per_second=1000))
    h.allocate()
    h.bind_channel(0x4001, "203.0.113.5", 7000)
    for _ in range(20):
        h.engine.from_client(h.link, stun.encode_channel_data(0x4001, b"x" * 100))
    assert len(h.relays[0].sent) == 10
    h.engine.tick()  # a new second, a new budget
    h.engine.from_client(h.link, stun.encode_channel_data(0x4001, b"x" * 100))
    assert len(h.relays[0].sent) == 11


def test_external_address_is_advertised() -> None:
    h = Harness(advertise="203.0.113.100")
    reply = h.allocate()
    assert stun.decode_xor_address(reply.get(Attr.XOR_RELAYED_ADDRESS), reply.transaction_id)[0] == "203.0.113.100"


def test_no_leak_under_churn() -> None:
    h = Harness(Limits(max_allocations_per_user=10_000))
    for round_ in range(300):
        link = FakeLink(address=("192.0.2.10", 1000 + round_))
        h.nonce = b""
        assert h.allocate(link=link).msg_class == stun.SUCCESS
        if round_ % 2:
            h.request(stun.REFRESH, [(Attr.LIFETIME, stun.encode_lifetime(0))], link)
        else:
            h.engine.client_closed(link)
    assert not h.engine.allocations and h.engine.ports.in_use == 0
    assert all(relay.closed for relay in h.relays) and not h.engine.per_identity


def test_garbage_never_raises() -> None:
    h = Harness()
    for data in (b"", b"\x00", b"\x40\x01", b"\x40\x01\xff\xff", b"\x01\x01\x00\x00" + b"\x00" * 16, b"\xff" * 40):
        h.engine.from_client(h.link, data)


def test_pending_pool_answers_are_capped() -> None:
    import asyncio

    class SlowPool:
        """A pool store that never answers: every Allocate waits for it."""

        def __init__(self) -> None:
            self.loop = asyncio.new_event_loop()

        def acquire(self, identity: str) -> asyncio.Future[bool]:
            return self.loop.create_future()

        def release(self, identity: str) -> None:
            pass

    h = Harness(Limits(max_pending=2))
    pool = SlowPool()
    h.engine.quota = pool
    answers = []
    for index in range(3):
        link = FakeLink(address=("192.0.2.10", 3000 + index))
        h.nonce = b""
        h.allocate(link=link)
        answers.append(link.last() if link.inbox else None)
    assert [code(a) if a is not None else None for a in answers[:2]] == [401, 401]  # challenges only
    assert len(h.engine._pending) == 2
    assert code(answers[2]) == 508  # the third waits for nothing: refused
    pool.loop.close()


def test_a_pending_allocate_survives_link_eviction_and_a_gone_link_gives_its_quota_back() -> None:
    """Issue 21 item 5: a grant must land on the client's live link, or release what it took."""
    import asyncio
    import socket

    from edge.turn.io import UdpTurnListener

    class ManualPool:
        def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
            self.loop, self.waiting, self.released = loop, [], []

        def acquire(self, identity: str) -> asyncio.Future[bool]:
            future = self.loop.create_future()
            self.waiting.append(future)
            return future

        def release(self, identity: str) -> None:
            self.released.append(identity)

    loop = asyncio.new_event_loop()
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.setblocking(False)
    h = Harness()
    pool = h.engine.quota = ManualPool(loop)
    listener = UdpTurnListener(loop, server, h.engine)
    listener.MAX_LINKS = 3
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.settimeout(2)
    try:
        def answer(request: stun.Message, key: bytes | None = None) -> stun.Message:
            client.sendto(request.encode(key, fingerprint=key is not None), server.getsockname())
            loop.run_until_complete(asyncio.sleep(0.05))
            return stun.decode(client.recv(2048))

        transport = (Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17))
        nonce = answer(stun.Message(stun.ALLOCATE, stun.REQUEST, None, [transport])).get(Attr.NONCE)
        key = h.key()
        creds = [(Attr.USERNAME, h.token.username.encode()), (Attr.REALM, REALM.encode()), (Attr.NONCE, nonce)]
        client.sendto(stun.Message(stun.ALLOCATE, stun.REQUEST, None, [transport, *creds]).encode(
            key, fingerprint=True), server.getsockname())
        loop.run_until_complete(asyncio.sleep(0.05))
        assert len(pool.waiting) == 1  # parked until the pool answers
        others = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(6)]
        for other in others:  # new sources fill the link table past MAX_LINKS: eviction
            other.sendto(stun.Message(stun.BINDING, stun.REQUEST).encode(), server.getsockname())
        loop.run_until_complete(asyncio.sleep(0.05))
        for other in others:
            other.close()
        pool.waiting[0].set_result(True)
        loop.run_until_complete(asyncio.sleep(0.05))
        granted = stun.decode(client.recv(2048))
        assert granted.msg_class == stun.SUCCESS  # the grant landed on the client's link, which was kept
        refresh = answer(stun.Message(stun.REFRESH, stun.REQUEST, None, creds), key)
        assert refresh.msg_class == stun.SUCCESS  # not 437: the same allocation answers
        assert len(h.engine.allocations) == 1 and pool.released == []

        gone = FakeLink(address=("192.0.2.30", 4000))  # a link that goes away while its Allocate waits
        h.nonce = b""
        h.allocate(link=gone)
        assert len(pool.waiting) == 2
        gone.connected = False  # type: ignore[attr-defined]
        sent = len(gone.inbox)
        pool.waiting[1].set_result(True)
        loop.run_until_complete(asyncio.sleep(0))
        assert pool.released == ["sip:alice@example.test"] and len(h.engine.allocations) == 1
        assert len(gone.inbox) == sent and h.engine.ports.in_use == 1
    finally:
        listener.close()
        client.close()
        loop.close()
