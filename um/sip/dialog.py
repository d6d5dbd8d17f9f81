"""Dialogs (RFC 3261 §12), sans-I/O: the state the UM worker keeps per call, as UAS or UAC.

A dialog is created from an INVITE and its 2xx (the one the worker sends as
UAS, or the one it receives as UAC: play-on-phone); it matches in-dialog
requests by Call-ID and tags, checks their CSeq order and builds the
requests the worker sends itself (ACK of the 2xx, BYE).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from um.sip.headers import parse_addresses
from um.sip.message import Headers, Request, Response, new_tag
from um.sip.transaction import new_branch
from um.sip.uri import SipUri, parse_name_addr, split_header_values


class DialogError(ValueError):
    """An in-dialog request does not fit the dialog: `status` says how to answer it."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason = status, reason


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: str          # our To value (without tag) as the UAS
    remote_uri: str         # the caller's From value (without tag)
    remote_target: str      # the caller's Contact URI
    route_set: list[str] = field(default_factory=list)
    remote_seq: int | None = None
    local_seq: int = 0
    secure: bool = False
    state: str = "early"    # early/confirmed/terminated
    data: dict[str, object] = field(default_factory=dict)

    @property
    def id(self) -> tuple[str, str, str | None]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def uas(cls, invite: Request, local_tag: str | None = None) -> Dialog:
        """The UAS dialog state of RFC 3261 §12.1.1 for `invite` (answered with our tag)."""
        headers = invite.headers
        contacts = parse_addresses(headers.get("Contact") or "")
        if len(contacts) != 1:
            raise DialogError(400, "Bad Request - INVITE needs exactly one Contact")
        record_route = _route_values(headers.get_all("Record-Route"))
        from_addr = invite.from_addr or parse_name_addr(headers.get("From") or "")
        to_value = headers.get("To") or ""
        return cls(
            call_id=headers.get("Call-ID") or "",
            local_tag=local_tag or new_tag(),
            remote_tag=from_addr.tag,
            local_uri=to_value.split(";tag=")[0],
            remote_uri=(headers.get("From") or "").split(";tag=")[0],
            remote_target=str(contacts[0].uri),
            route_set=record_route,
            remote_seq=invite.cseq_number,
            secure=bool(invite.ruri is not None and invite.ruri.scheme == "sips"),
        )

    @classmethod
    def uac(cls, invite: Request, response: Response) -> Dialog:
        """The UAC dialog state of RFC 3261 §12.1.2 from our `invite` and the 2xx answering it."""
        headers, answer = invite.headers, response.headers
        contacts = parse_addresses(answer.get("Contact") or "")
        record_route = _route_values(answer.get_all("Record-Route"))
        from_value, to_value = headers.get("From") or "", answer.get("To") or ""
        cseq = (headers.get("CSeq") or "1").split(" ", 1)[0]
        return cls(
            call_id=headers.get("Call-ID") or "",
            local_tag=parse_name_addr(from_value).tag or "",
            remote_tag=parse_name_addr(to_value).tag,
            local_uri=from_value.split(";tag=")[0],
            remote_uri=to_value.split(";tag=")[0],
            remote_target=str(contacts[0].uri) if contacts else invite.uri,
            route_set=list(reversed(record_route)),
            local_seq=int(cseq) if cseq.isdigit() else 1,
            secure=invite.uri.startswith("sips:"),
            state="confirmed",
        )

    def create_ack(self, via_host: str, transport: str) -> Request:
        """The ACK of the 2xx to the INVITE (§13.2.2.4): the INVITE's CSeq number, method ACK."""
        self.local_seq -= 1  # create_request counts it up again
        return self.create_request("ACK", via_host, transport)

    def check_request(self, request: Request) -> None:
        """RFC 3261 §12.2.2: CSeq must grow; a lower one gets 500."""
        number = request.cseq_number
        if request.method in ("ACK", "CANCEL"):
            return
        if self.remote_seq is not None and number is not None and number <= self.remote_seq:
            raise DialogError(500, "Server Internal Error - CSeq out of order")
        self.remote_seq = number

    def create_request(self, method: str, via_host: str, transport: str) -> Request:
        """A request inside the dialog (BYE, re-INVITE...), §12.2.1.1."""
        self.local_seq += 1
        items = [("Via", f"SIP/2.0/{transport.upper()} {via_host};branch={new_branch()};rport"),
                 ("Max-Forwards", "70"),
                 ("From", f"{self.local_uri};tag={self.local_tag}"),
                 ("To", self.remote_uri + (f";tag={self.remote_tag}" if self.remote_tag else "")),
                 ("Call-ID", self.call_id),
                 ("CSeq", f"{self.local_seq} {method}")]
        target, routes = self.route()
        items.extend(("Route", route) for route in routes)
        return Request(method, target, Headers(items))

    def route(self) -> tuple[str, list[str]]:
        """Request-URI and Route values of an in-dialog request (RFC 3261 §12.2.1.1).

        Loose routing (the first route has `lr`): the remote target is the
        Request-URI and the route set the Route header. Strict routing (an
        RFC 2543 proxy): the first route becomes the Request-URI and the
        remote target goes last in Route.
        """
        if not self.route_set:
            return self.remote_target, []
        first = parse_name_addr(self.route_set[0]).uri
        if isinstance(first, SipUri) and "lr" not in first.params:
            strict = SipUri(first.scheme, first.user, first.host, first.port, first.password,
                            {k: v for k, v in first.params.items() if k != "method"})
            return str(strict), [*self.route_set[1:], f"<{self.remote_target}>"]
        return self.remote_target, list(self.route_set)


def dialog_key(request: Request) -> tuple[str, str | None, str | None]:
    """(Call-ID, our tag = To tag, their tag = From tag) of an in-dialog request to a UAS."""
    to_addr = request.to_addr
    from_addr = request.from_addr
    return (request.headers.get("Call-ID") or "", to_addr.tag if to_addr else None,
            from_addr.tag if from_addr else None)


def _route_values(values: list[str]) -> list[str]:
    """Record-Route header lines into single name-addr values, in order (commas inside <...> kept)."""
    routes = [part.strip() for value in values for part in split_header_values(value)]
    for route in routes:
        try:
            address = parse_name_addr(route)
        except ValueError:
            raise DialogError(400, "Bad Request - malformed Record-Route") from None
        if not isinstance(address.uri, SipUri) or not address.bracketed:
            raise DialogError(400, "Bad Request - Record-Route needs <sip: or sips: URI>")
    return routes
