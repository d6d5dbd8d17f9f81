"""message-summary subscriptions (RFC 6665 + RFC 3842), sans-I/O: SUBSCRIBE in, responses and NOTIFYs out.

A SUBSCRIBE without a To tag creates a subscription (a dialog: our tag, the
subscriber's Contact as the NOTIFY target); one with our tag refreshes it;
Expires: 0 ends it. Every accepted SUBSCRIBE is followed by a NOTIFY (§4.2.1.2),
and so is every change of the mailbox's counts. A subscription whose lifetime
runs out gets a final NOTIFY (Subscription-State: terminated;reason=timeout)
and is removed; one whose NOTIFY is refused (481, or any failure) is removed.

Who may subscribe is decided by the caller (the UM service's trust: gateways,
call routers, MTLS peers); others may authenticate with SIP digest (RFC 7616,
qop=auth) as the mailbox's extension in `[mwi] digest_realm`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from um.mwi.summary import CONTENT_TYPE, EVENT
from um.sip.digest import DigestError, compute, parse_auth_params
from um.sip.message import Headers, Request, Response, make_response
from um.sip.uri import SipUri, UriError, parse_name_addr, split_header_values

NONCE_LIFETIME = 300.0
ALLOW = "INVITE, ACK, CANCEL, OPTIONS, SERVICE, SUBSCRIBE"


@dataclass(eq=False)
class Subscription:
    call_id: str
    remote_tag: str
    local_tag: str
    mailbox: str
    account: str             # Message-Account: sip:<mailbox>@<domain>
    remote: str              # the subscriber's From value (To of our NOTIFYs)
    local: str               # our To value with our tag (From of our NOTIFYs)
    target_uri: str          # the subscriber's Contact URI: Request-URI of our NOTIFYs
    target: tuple[str, int, str]  # host, port, transport the NOTIFYs go to
    event_id: str | None
    expires_at: float
    cseq: int = 0
    sent: tuple[int, ...] | None = None  # the counts the last NOTIFY carried (new, old, urgent new, urgent old)
    busy: bool = False       # a NOTIFY is in flight
    again: bool = False      # a change came while it was
    ended: bool = False
    source: str = ""
    routes: list[str] = field(default_factory=list)  # the SUBSCRIBE's Record-Route values: our NOTIFYs' Route

    @property
    def key(self) -> tuple[str, str, str]:
        return self.call_id, self.remote_tag, self.local_tag


@dataclass
class Decision:
    response: Response
    subscription: Subscription | None = None
    notify: bool = False      # send a NOTIFY now (new, refreshed, or ending with Expires: 0)
    ending: bool = False


@dataclass
class DigestGate:
    """SIP digest for phones outside the trusted sources: stateless nonces (HMAC of their time)."""

    realm: str
    password: Callable[[str], str | None]   # extension -> password
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    def nonce(self, now: float) -> str:
        stamp = f"{int(now):x}"
        return stamp + "." + hmac.new(self.secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]

    def _fresh(self, nonce: str, now: float) -> bool:
        stamp, _, mac = nonce.partition(".")
        good = hmac.new(self.secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        try:
            return hmac.compare_digest(mac, good) and 0 <= now - int(stamp, 16) <= NONCE_LIFETIME
        except ValueError:
            return False

    def challenge(self, request: Request, now: float, stale: bool = False) -> Response:
        value = (f'Digest realm="{self.realm}", nonce="{self.nonce(now)}", algorithm=SHA-256, qop="auth"'
                 + (", stale=true" if stale else ""))
        md5 = f'Digest realm="{self.realm}", nonce="{self.nonce(now)}", algorithm=MD5, qop="auth"'
        return make_response(request, 401, None, [("WWW-Authenticate", value), ("WWW-Authenticate", md5)])

    def check(self, request: Request, mailbox: str, now: float) -> Response | None:
        """None when the request carries valid credentials of `mailbox`; else the 401/403 to send."""
        header = request.headers.get("Authorization")
        if not header:
            return self.challenge(request, now)
        try:
            scheme, params = parse_auth_params(header)
        except DigestError:
            return make_response(request, 400, "Bad Request - malformed Authorization")
        if scheme.lower() != "digest" or params.get("realm") != self.realm:
            return self.challenge(request, now)
        if params.get("username") != mailbox:
            return make_response(request, 403, "Forbidden - credentials of another mailbox")
        password = self.password(mailbox)
        if password is None:
            return make_response(request, 403, "Forbidden")
        if not self._fresh(params.get("nonce", ""), now):
            return self.challenge(request, now, stale=True)
        qop = params.get("qop")
        try:
            expected = compute(params.get("algorithm", "MD5"), mailbox, self.realm, password, request.method,
                               params.get("uri", ""), params.get("nonce", ""), qop=qop,
                               nc=params.get("nc", "00000001"), cnonce=params.get("cnonce", ""))
        except DigestError:
            return self.challenge(request, now)
        if not hmac.compare_digest(expected, params.get("response", "")):
            return make_response(request, 403, "Forbidden - wrong credentials")
        return None


def _expires(request: Request) -> int | None:
    text = request.headers.get("Expires")
    if text is None:
        return None
    text = text.strip()
    return int(text) if text.isdigit() and len(text) < 10 else -1


class SubscriptionTable:
    def __init__(self, domain: str, contact: str, *, min_expires: int = 60, max_expires: int = 3600,
                 default_expires: int = 3600, limit: int = 10000) -> None:
        self.domain, self.contact = domain, contact
        self.min_expires, self.max_expires = min_expires, max_expires
        self.default_expires, self.limit = min(default_expires, max_expires), limit
        self.by_key: dict[tuple[str, str, str], Subscription] = {}

    def of(self, mailbox: str) -> list[Subscription]:
        return [s for s in self.by_key.values() if s.mailbox == mailbox and not s.ended]

    def mailboxes(self) -> set[str]:
        return {s.mailbox for s in self.by_key.values() if not s.ended}

    def remove(self, subscription: Subscription) -> None:
        subscription.ended = True
        self.by_key.pop(subscription.key, None)

    def expired(self, now: float) -> list[Subscription]:
        return [s for s in self.by_key.values() if s.expires_at <= now and not s.ended]

    def subscribe(self, request: Request, now: float, mailbox_of: Callable[[str | None], str | None],
                  source: str = "") -> Decision:
        """Answer one SUBSCRIBE from a source already judged trustworthy (or authenticated)."""
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if event != EVENT:
            return Decision(make_response(request, 489, None, [("Allow-Events", EVENT)]))
        accept = request.headers.get("Accept")
        if accept is not None and CONTENT_TYPE not in accept.lower() and "*/*" not in accept:
            return Decision(make_response(request, 406, None, [("Accept", CONTENT_TYPE)]))
        expires = _expires(request)
        if expires is not None and expires < 0:
            return Decision(make_response(request, 400, "Bad Request - Expires must be a number of seconds"))
        if expires is not None and 0 < expires < self.min_expires:
            return Decision(make_response(request, 423, None, [("Min-Expires", str(self.min_expires))]))
        granted = self.default_expires if expires is None else min(expires, self.max_expires)
        to_tag = request.to_addr.tag if request.to_addr is not None else None
        from_tag = request.from_addr.tag if request.from_addr is not None else None
        call_id = request.headers.get("Call-ID") or ""
        if not from_tag:
            return Decision(make_response(request, 400, "Bad Request - From has no tag"))
        extra = [("Expires", str(granted)), ("Contact", f"<{self.contact}>"), ("Allow", ALLOW)]
        if to_tag:  # a refresh (or an end) of an existing subscription
            existing = self.by_key.get((call_id, from_tag, to_tag))
            if existing is None:
                return Decision(make_response(request, 481, None))
            existing.expires_at = now + granted
            return Decision(make_response(request, 200, None, extra), existing, notify=True, ending=granted == 0)
        ruri = request.ruri
        user = ruri.user if isinstance(ruri, SipUri) else None
        if user is None and request.to_addr is not None and isinstance(request.to_addr.uri, SipUri):
            user = request.to_addr.uri.user
        mailbox = mailbox_of(user)
        if mailbox is None:
            return Decision(make_response(request, 404, "Not Found - no such mailbox"))
        target = _target(request)
        if target is None:
            return Decision(make_response(request, 400, "Bad Request - Contact must be a sip: URI over TCP or TLS"))
        if len(self.by_key) >= self.limit and granted:
            return Decision(make_response(request, 503, "Service Unavailable - too many subscriptions",
                                          [("Retry-After", "300")]))
        routes = [value for header in request.headers.get_all("Record-Route") for value in split_header_values(header)]
        first_hop = hop(routes[0]) if routes else target[1]
        if first_hop is None:
            return Decision(make_response(request, 400, "Bad Request - Record-Route must be a sip: URI over TCP "
                                          "or TLS"))
        local_tag = secrets.token_hex(6)
        response = make_response(request, 200, None, extra, to_tag=local_tag)
        subscription = Subscription(
            call_id, from_tag, local_tag, mailbox, f"sip:{mailbox}@{self.domain}",
            request.headers.get("From") or "", response.headers.get("To") or "", target[0], first_hop,
            _event_id(request), now + granted, cseq=0, source=source, routes=routes)
        if granted:
            self.by_key[subscription.key] = subscription
        return Decision(response, subscription, notify=True, ending=granted == 0)

    def notify(self, subscription: Subscription, body: bytes, now: float, reason: str | None = None) -> Request:
        """The NOTIFY for one subscription (its state: active with the time left, or terminated)."""
        subscription.cseq += 1
        if reason is None and subscription.expires_at > now:
            state = f"active;expires={max(1, int(subscription.expires_at - now))}"
        else:
            state = f"terminated;reason={reason or 'timeout'}"
        event = EVENT + (f";id={subscription.event_id}" if subscription.event_id else "")
        headers = Headers([
            ("Via", "SIP/2.0/TCP placeholder"),  # the client stamps its own
            ("Max-Forwards", "70"), ("From", subscription.local), ("To", subscription.remote),
            ("Call-ID", subscription.call_id), ("CSeq", f"{subscription.cseq} NOTIFY"),
            *(("Route", route) for route in subscription.routes),  # RFC 3261 §12.2.1.1, loose routing
            ("Contact", f"<{self.contact}>"), ("Event", event), ("Subscription-State", state),
            ("Content-Type", CONTENT_TYPE)])
        return Request("NOTIFY", subscription.target_uri, headers, body)


def _event_id(request: Request) -> str | None:
    _, _, params = (request.headers.get("Event") or "").partition(";")
    for part in params.split(";"):
        name, _, value = part.strip().partition("=")
        if name.lower() == "id" and value:
            return value
    return None


def hop(text: str) -> tuple[str, int, str] | None:
    """Where a sip: URI (a Contact or a Route) is reached: host, port, "tcp" or "tls"; None for anything else."""
    try:
        uri = parse_name_addr(text).uri
    except (UriError, ValueError):
        return None
    if not isinstance(uri, SipUri):
        return None
    transport = "tls" if uri.secure or uri.transport == "tls" else (uri.transport or "tcp")
    if transport not in ("tcp", "tls"):
        return None
    return uri.host.strip("[]"), uri.port or (5061 if transport == "tls" else 5060), transport


def _target(request: Request) -> tuple[str, tuple[str, int, str]] | None:
    """The subscriber's Contact: the Request-URI of our NOTIFYs and where they go (TCP or TLS)."""
    contact = request.headers.get("Contact")
    if not contact:
        return None
    first = split_header_values(contact)[0]
    where = hop(first)
    if where is None:
        return None
    return str(parse_name_addr(first).uri), where


__all__ = ["ALLOW", "Decision", "DigestGate", "Subscription", "SubscriptionTable", "hop"]
