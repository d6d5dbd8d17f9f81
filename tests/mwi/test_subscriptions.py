"""The sans-I/O subscription table and digest gate (um.mwi.subscriptions): what a SUBSCRIBE gets, what a NOTIFY
carries. Bad input gets a specific 4xx and leaves no state; the body is RFC 3842's."""

from __future__ import annotations

from um.mwi.subscriptions import DigestGate, SubscriptionTable
from um.mwi.summary import body, parse
from um.sip.digest import authorization, parse_challenges
from um.sip.message import Request
from um.sip.parser import SipParseError, parse_datagram


def subscribe(extra: str = "", user: str = "1001", to_tag: str = "", expires: str = "Expires: 600\r\n",
              event: str = "Event: message-summary\r\n", contact: str = "<sip:p@192.0.2.9:5070;transport=tcp>"
              ) -> Request:
    text = (f"SUBSCRIBE sip:{user}@um.example.test SIP/2.0\r\n"
            "Via: SIP/2.0/TCP 192.0.2.9:5070;branch=z9hG4bK-1\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:{user}@example.test>;tag=abc\r\n"
            f"To: <sip:{user}@example.test>{';tag=' + to_tag if to_tag else ''}\r\n"
            "Call-ID: call-1@phone\r\nCSeq: 1 SUBSCRIBE\r\n"
            f"Contact: {contact}\r\n{event}{expires}{extra}Content-Length: 0\r\n\r\n")
    message = parse_datagram(text.encode())
    assert isinstance(message, Request)
    return message


def mailbox_of(user: str | None) -> str | None:
    return user if user in ("1001", "1002") else None


def test_subscribe_refresh_unsubscribe_and_the_notify() -> None:
    table = SubscriptionTable("example.test", "sip:voicemail@um:5062;transport=tcp", min_expires=60, max_expires=3600)
    decision = table.subscribe(subscribe(expires="Expires: 7200\r\n"), 1000.0, mailbox_of)
    assert decision.response.status == 200 and decision.response.headers.get("Expires") == "3600"
    sub = decision.subscription
    assert sub is not None and sub.target == ("192.0.2.9", 5070, "tcp") and sub.mailbox == "1001"
    notify = table.notify(sub, body(1, 2, sub.account), 1000.0)
    assert notify.method == "NOTIFY" and notify.uri == "sip:p@192.0.2.9:5070;transport=tcp"
    assert notify.headers.get("Subscription-State") == "active;expires=3600"
    assert notify.headers.get("To") == "<sip:1001@example.test>;tag=abc"
    assert f"tag={sub.local_tag}" in (notify.headers.get("From") or "")
    assert parse(notify.body) == {"messages-waiting": "yes", "message-account": "sip:1001@example.test",
                                  "voice-message": "1/2 (0/0)"}
    refresh = table.subscribe(subscribe(to_tag=sub.local_tag, expires="Expires: 120\r\n"), 1100.0, mailbox_of)
    assert refresh.response.status == 200 and refresh.subscription is sub and sub.expires_at == 1220.0
    assert table.expired(1221.0) == [sub]
    end = table.subscribe(subscribe(to_tag=sub.local_tag, expires="Expires: 0\r\n"), 1101.0, mailbox_of)
    assert end.ending and end.response.status == 200
    table.remove(sub)
    assert table.notify(sub, b"", 1102.0).headers.get("Subscription-State") == "terminated;reason=timeout"
    assert table.by_key == {}


def test_bad_subscribes_get_specific_answers_and_leave_nothing() -> None:
    table = SubscriptionTable("example.test", "sip:vm@um", min_expires=60, max_expires=3600, limit=1)
    cases = [
        (subscribe(event="Event: presence\r\n"), 489),
        (subscribe(extra="Accept: application/pidf+xml\r\n"), 406),
        (subscribe(expires="Expires: 10\r\n"), 423),
        (subscribe(expires="Expires: soon\r\n"), 400),
        (subscribe(user="7777"), 404),
        (subscribe(contact="<sip:p@192.0.2.9;transport=udp>"), 400),
        (subscribe(to_tag="nosuchdialog"), 481),
    ]
    for request, status in cases:
        assert table.subscribe(request, 0.0, mailbox_of).response.status == status, status
    assert table.by_key == {}
    assert table.subscribe(subscribe(), 0.0, mailbox_of).response.status == 200
    assert table.subscribe(subscribe(user="1002"), 0.0, mailbox_of).response.status == 503  # max_subscriptions


def test_digest_gate() -> None:
    gate = DigestGate("example.test", lambda ext: "s3cret" if ext == "1001" else None)
    request = subscribe()
    challenge = gate.check(request, "1001", 100.0)
    assert challenge is not None and challenge.status == 401
    chosen = parse_challenges(challenge)[0]
    good = subscribe(extra=f"Authorization: {authorization(chosen, '1001', 's3cret', 'SUBSCRIBE', request.uri)}\r\n")
    assert gate.check(good, "1001", 101.0) is None
    wrong = subscribe(extra=f"Authorization: {authorization(chosen, '1001', 'guess', 'SUBSCRIBE', request.uri)}\r\n")
    assert gate.check(wrong, "1001", 101.0).status == 403  # type: ignore[union-attr]
    stale = gate.check(good, "1001", 100.0 + 3600)
    assert stale is not None and stale.status == 401 and "stale=true" in (stale.headers.get("WWW-Authenticate") or "")
    assert gate.check(good, "1002", 101.0).status == 403  # type: ignore[union-attr]


def test_garbage_in_every_field_gets_an_answer_not_an_exception() -> None:
    """Whatever a trusted peer puts in the fields the table reads (and the parser lets through), it answers."""
    table = SubscriptionTable("example.test", "sip:vm@um", limit=5)
    garbage = ["", "<>", "<sip:>", "<tel:+1>", "<sip:a@[::1]:99999>", "<sips:p@h:0>", "x" * 300, ",,,",
               '"a,b" <sip:x@y>', "<sip:p@192.0.2.9;transport=sctp>", "<sip:p@192.0.2.9:5070;lr>, <http://x>"]
    answered = 0
    for value in garbage:
        line = f"{{}}: {value}\r\n"
        builders = [{"contact": value}, {"extra": line.format("Record-Route")}, {"event": line.format("Event")},
                    {"expires": line.format("Expires")}, {"extra": line.format("Accept")}]
        for fields in builders:
            try:
                request = subscribe(**fields)
            except SipParseError:
                continue  # refused before the table sees it
            decision = table.subscribe(request, 0.0, mailbox_of)
            assert 200 <= decision.response.status < 700
            answered += 1
            for sub in list(table.by_key.values()):
                table.remove(sub)
    assert answered > len(garbage) * 2
