"""The token policy without a network: identities, caps, relays, API keys, the audit line, MRAS answers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from edge.auth.issuer import IdentityError, TokenIssuer, identity_domain
from edge.auth.mras_sip import MrasHandler
from edge.auth.relays import for_location, media_relays, turn_uris
from edge.node.config import load
from edge.tokens import password_for
from tests.auth.test_mras_codec import LYNC_REQUEST, request_with
from um.apikeys import ApiKeys, bearer, key_id
from um.mras import codec

SECRET = "unit-test-secret-0123456789"


@pytest.fixture
def audit_lines() -> Iterator[list[str]]:
    lines: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        if event.get("log_namespace") == "umedge.auth.audit":
            lines.append(formatEvent(event) + " " + repr(sorted(event.items(), key=lambda kv: kv[0])))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


def issuer(max_minutes: int = 480) -> TokenIssuer:
    return TokenIssuer(SECRET, max_minutes * 60, frozenset({"example.test", "example.org"}), lambda: 1_700_000_000)


@pytest.mark.parametrize("identity, domain", [
    ("sip:alice@example.test", "example.test"),
    ("sips:alice@Example.TEST", "example.test"),
    ("sip:+15550100@example.org", "example.org"),
])
def test_identity_domain(identity: str, domain: str) -> None:
    assert identity_domain(identity) == domain


@pytest.mark.parametrize("identity", [
    "alice@example.test", "tel:+15550100", "sip:example.test", "sip:alice@example.test;transport=tls",
    "sip:alice@example..test", "sip:al ice@example.test", "<sip:alice@example.test>",
    "sip:alice:pw@example.test", "sip:" + "a" * 490 + "@example.test", "sip:alice@\nexample.test",
])
def test_malformed_identities(identity: str) -> None:
    with pytest.raises(IdentityError) as caught:
        issuer().check(identity)
    assert not caught.value.forbidden


def test_foreign_domain_is_forbidden() -> None:
    with pytest.raises(IdentityError) as caught:
        issuer().check("sip:alice@example.com")
    assert caught.value.forbidden


def test_lifetime_is_capped_and_defaulted() -> None:
    tokens = issuer(max_minutes=60)
    assert [tokens.grant(t) for t in (None, 1, 3600, 3601, 10**12)] == [3600, 1, 3600, 3600, 3600]
    with pytest.raises(ValueError):
        tokens.grant(0)


def test_issue_mints_a_turn_rest_token_and_audits_without_the_password(audit_lines: list[str]) -> None:
    issued = issuer().issue("sip:alice@example.test", 600, "cert:node2@192.0.2.7:5061", "mras")
    assert issued.token.username == "1700000600:sip:alice@example.test"
    assert issued.token.password == password_for(SECRET, issued.token.username)
    [line] = audit_lines
    assert line.startswith("token issued identity=sip:alice@example.test requester=cert:node2@192.0.2.7:5061 "
                           "path=mras ttl=600 expiry=2023-11-14T22:23:20Z")
    assert issued.token.password not in line and SECRET not in line


def test_relays_and_uris_follow_the_edge_addresses() -> None:
    config = load()
    assert turn_uris(config) == ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp",
                                 "turns:127.0.0.1:5349?transport=tcp"]
    natted = replace(config, edge=replace(config.edge, listen_address="0.0.0.0", external_address="2001:db8::5"))
    assert turn_uris(natted)[2] == "turns:[2001:db8::5]:5349?transport=tcp"
    relays = media_relays(natted)
    assert relays == (codec.MediaRelay("intranet", host_name="umedge1.example.test", udp_port=3478, tcp_port=3478),
                      codec.MediaRelay("internet", direct_ip_address="2001:db8::5", udp_port=3478, tcp_port=3478))
    assert [r.location for r in for_location(relays, "internet")] == ["internet", "intranet"]
    assert for_location(relays, "intranet") == relays == for_location(relays, None)


def test_api_keys() -> None:
    keys = ApiKeys(["first-key-0123456789", "second-key-0123456789"])
    assert keys.match("second-key-0123456789") == key_id("second-key-0123456789")
    assert key_id("second-key-0123456789").startswith("key-") and len(key_id("x")) == 12
    assert keys.match("second-key-012345678") is None and keys.match("") is None
    assert not ApiKeys([]) and ApiKeys([]).match("anything") is None
    assert bearer("Bearer abc") == "abc" and bearer("bearer  abc ") == "abc"
    assert bearer("Basic abc") is None and bearer("Bearer ") is None and bearer(None) is None


def test_mras_answers_sans_io(audit_lines: list[str]) -> None:
    relays = (codec.MediaRelay("intranet", direct_ip_address="10.0.0.5", udp_port=3478, tcp_port=3478),)
    handler = MrasHandler(issuer(max_minutes=60), relays, "example.test")
    response = handler.answer(LYNC_REQUEST, "cert:node2@10.0.0.9:40000")
    [grant] = response.credentials_responses
    assert response.ok and grant.credentials.duration == 60 and grant.media_relays == relays
    assert grant.credentials.username == "1700003600:sip:alice@example.test"
    forbidden = handler.answer(request_with(3).replace(b"u2@example.test", b"u2@example.com"), "cert:x")
    assert forbidden.reason_phrase == "Forbidden" and forbidden.credentials_responses == ()
    assert len(audit_lines) == 2 and "token refused" in audit_lines[1]  # nothing issued for the batch
