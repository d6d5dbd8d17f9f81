"""The MRAS XML bodies (MS-AVEDGEA): credentials requests and responses, sans-I/O.

A Lync-style client (here: the mailbox worker) asks the A/V Authentication
service for media relay credentials with a SIP SERVICE whose body is a
`<request>` in the namespace http://schemas.microsoft.com/2006/09/sip/mrasp
and Content-Type application/msrtc-media-relay-auth+xml; the answer is a SIP
200 carrying a `<response>` whose `reasonPhrase` says whether it worked.

This module only turns bytes into values and back; no socket, clock or
policy. The edge (edge.auth) decides what to grant, the client (um.mras.client)
moves the bytes.

Hostile input: bodies are size-checked before parsing and parsed with
defusedxml with DTDs, entity declarations and external references forbidden,
so a billion-laughs or external-entity body fails at its DOCTYPE in
microseconds without growing memory. Every refusal is an MrasError carrying
the reasonPhrase to answer with.

Credentials: real Lync A/V Edges put base64 of an opaque binary token in
`<username>` and `<password>`. umedge issues TURN REST API tokens
(username "<expiry>:<identity>", password base64(HMAC-SHA1(secret,
username)), see edge.tokens) and carries those texts as they are, so a TURN
client uses them unchanged on any edge of the pool. (MS-TURN's binary
encoding is a later step; only the mapping of these two values changes.)
`<duration>` is in minutes, as in Lync.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape, quoteattr

import defusedxml.ElementTree as safe_xml
from defusedxml import DefusedXmlException

NAMESPACE = "http://schemas.microsoft.com/2006/09/sip/mrasp"
CONTENT_TYPE = "application/msrtc-media-relay-auth+xml"
VERSIONS = ("1.0", "2.0")
SERVER_VERSION = "2.0"
LOCATIONS = ("intranet", "internet")
ROUTES = ("loadbalanced", "directip")
MAX_CREDENTIALS_REQUESTS = 100  # the schema's maxOccurs
MAX_ID_CHARS = 64  # max64CharStringType: requestID, credentialsRequestID
MAX_REQUEST_BYTES = 48 * 1024  # 100 credentialsRequests of generous size fit; checked before parsing
MAX_RESPONSE_BYTES = 1024 * 1024  # a client trusts its edge more, but not without bound

OK = "OK"
REQUEST_MALFORMED = "Request Malformed"
REQUEST_TOO_LARGE = "Request Too Large"
NOT_SUPPORTED = "Not Supported"
SERVER_BUSY = "Server Busy"
TIME_OUT = "Time Out"
FORBIDDEN = "Forbidden"
INTERNAL_SERVER_ERROR = "Internal Server Error"
OTHER_FAILURE = "Other Failure"
VERSION_MISMATCH = "Version Mismatch"
REASON_PHRASES = (OK, REQUEST_MALFORMED, REQUEST_TOO_LARGE, NOT_SUPPORTED, SERVER_BUSY, TIME_OUT,
                  FORBIDDEN, INTERNAL_SERVER_ERROR, OTHER_FAILURE, VERSION_MISMATCH)

_REQUEST_ATTRIBUTES = ("requestID", "version", "to", "from")


class MrasError(ValueError):
    """A body cannot be served: answer `reason_phrase`; `detail` is short and safe to log.

    `request` holds the request's root attributes that were readable (requestID,
    version, to, from), so the error response can still echo them.
    """

    def __init__(self, reason_phrase: str, detail: str, request: dict[str, str] | None = None) -> None:
        super().__init__(f"{reason_phrase}: {detail}")
        self.reason_phrase = reason_phrase
        self.detail = detail
        self.request = request or {}


@dataclass(frozen=True)
class CredentialsRequest:
    credentials_request_id: str
    identity: str
    location: str | None = None  # "intranet", "internet" or not given
    duration: int | None = None  # minutes; None: the server's maximum


@dataclass(frozen=True)
class Request:
    request_id: str
    version: str
    to: str
    from_: str
    credentials_requests: tuple[CredentialsRequest, ...]
    route: str | None = None  # "loadbalanced" (the default) or "directip"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    duration: int  # minutes granted
    realm: str | None = None


@dataclass(frozen=True)
class MediaRelay:
    location: str  # "intranet" or "internet"
    host_name: str | None = None
    direct_ip_address: str | None = None
    udp_port: int | None = None
    tcp_port: int | None = None

    def __post_init__(self) -> None:
        if (self.host_name is None) == (self.direct_ip_address is None):
            raise ValueError("a mediaRelay has exactly one of hostName and directIPAddress")

    @property
    def host(self) -> str:
        return self.host_name if self.host_name is not None else self.direct_ip_address  # type: ignore[return-value]


@dataclass(frozen=True)
class CredentialsResponse:
    credentials_request_id: str
    credentials: Credentials
    media_relays: tuple[MediaRelay, ...]


@dataclass(frozen=True)
class Response:
    request_id: str | None
    version: str | None
    server_version: str
    to: str | None
    from_: str | None
    reason_phrase: str
    credentials_responses: tuple[CredentialsResponse, ...] = ()

    @property
    def ok(self) -> bool:
        return self.reason_phrase == OK


# --- parsing helpers ---------------------------------------------------------------

def _q(name: str) -> str:
    return f"{{{NAMESPACE}}}{name}"


def _parse(body: bytes, max_bytes: int, too_large: str) -> Element:
    if len(body) > max_bytes:
        raise MrasError(too_large, f"body of {len(body)} bytes exceeds {max_bytes}")
    try:
        return safe_xml.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as error:
        raise MrasError(REQUEST_MALFORMED, f"forbidden XML construct ({type(error).__name__})") from None
    except (ParseError, ValueError, UnicodeError) as error:
        raise MrasError(REQUEST_MALFORMED, f"not well-formed XML ({str(error)[:80]})") from None


def _children(element: Element, name: str) -> list[Element]:
    return element.findall(_q(name))


def _one_text(parent: Element, name: str, required: bool, partial: dict[str, str]) -> str | None:
    found = _children(parent, name)
    if len(found) > 1:
        raise MrasError(REQUEST_MALFORMED, f"more than one <{name}>", partial)
    if not found:
        if required:
            raise MrasError(REQUEST_MALFORMED, f"<{name}> missing", partial)
        return None
    if len(found[0]):
        raise MrasError(REQUEST_MALFORMED, f"<{name}> has child elements", partial)
    return (found[0].text or "").strip()


def _positive(text: str, what: str, partial: dict[str, str], limit: int = 10**15) -> int:
    if not text.isdigit() or len(text) > 16 or int(text) <= 0 or int(text) > limit:
        raise MrasError(REQUEST_MALFORMED, f"<{what}> is not a positive integer", partial)
    return int(text)


def _attribute(element: Element, name: str, partial: dict[str, str], max_chars: int | None = None) -> str:
    value = element.get(name)
    if value is None or not value.strip():
        raise MrasError(REQUEST_MALFORMED, f"attribute {name} missing", partial)
    if max_chars is not None and len(value) > max_chars:
        raise MrasError(REQUEST_MALFORMED, f"attribute {name} longer than {max_chars}", partial)
    return value


# --- request -----------------------------------------------------------------------

def decode_request(body: bytes, max_bytes: int = MAX_REQUEST_BYTES) -> Request:
    """The Request in `body`; MrasError naming the reasonPhrase to answer otherwise.

    Checks, in order: size (Request Too Large), well-formed XML without DTDs or
    entities (Request Malformed), a <request> root in the MRAS namespace (Not
    Supported for other MRAS roots), a supported version (Version Mismatch),
    required attributes, and 1 to 100 credentialsRequest elements (Request Too
    Large beyond).
    """
    root = _parse(body, max_bytes, REQUEST_TOO_LARGE)
    partial = {name: value for name in _REQUEST_ATTRIBUTES if (value := root.get(name)) is not None}
    if root.tag != _q("request"):
        if root.tag.startswith("{" + NAMESPACE + "}"):
            raise MrasError(NOT_SUPPORTED, f"root element <{root.tag.split('}', 1)[1]}>", partial)
        raise MrasError(REQUEST_MALFORMED, "root is not an MRAS <request>", partial)
    version = _attribute(root, "version", partial)
    if version not in VERSIONS:
        raise MrasError(VERSION_MISMATCH, f"version {version[:16]!r} (supported: {', '.join(VERSIONS)})",
                        partial)
    request_id = _attribute(root, "requestID", partial, MAX_ID_CHARS)
    to, from_ = _attribute(root, "to", partial), _attribute(root, "from", partial)
    route = root.get("route")
    if route is not None and route not in ROUTES:
        raise MrasError(REQUEST_MALFORMED, "route is neither loadbalanced nor directip", partial)
    elements = _children(root, "credentialsRequest")
    if not elements:
        raise MrasError(REQUEST_MALFORMED, "no credentialsRequest", partial)
    if len(elements) > MAX_CREDENTIALS_REQUESTS:
        raise MrasError(REQUEST_TOO_LARGE, f"{len(elements)} credentialsRequest elements "
                        f"(at most {MAX_CREDENTIALS_REQUESTS})", partial)
    requests = tuple(_credentials_request(element, partial) for element in elements)
    return Request(request_id, version, to, from_, requests, route)


def _credentials_request(element: Element, partial: dict[str, str]) -> CredentialsRequest:
    request_id = _attribute(element, "credentialsRequestID", partial, MAX_ID_CHARS)
    identity = _one_text(element, "identity", True, partial)
    if not identity:
        raise MrasError(REQUEST_MALFORMED, "<identity> empty", partial)
    location = _one_text(element, "location", False, partial)
    if location is not None and location not in LOCATIONS:
        raise MrasError(REQUEST_MALFORMED, "<location> is neither intranet nor internet", partial)
    duration_text = _one_text(element, "duration", False, partial)
    duration = None if duration_text is None else _positive(duration_text, "duration", partial)
    return CredentialsRequest(request_id, identity, location, duration)


def encode_request(request: Request) -> bytes:
    attrs = [("requestID", request.request_id), ("from", request.from_), ("version", request.version),
             ("to", request.to)]
    if request.route is not None:
        attrs.append(("route", request.route))
    parts = [_start("request", attrs, namespaces=True)]
    for item in request.credentials_requests:
        parts.append(_start("credentialsRequest", [("credentialsRequestID", item.credentials_request_id)]))
        parts.append(_leaf("identity", item.identity))
        if item.location is not None:
            parts.append(_leaf("location", item.location))
        if item.duration is not None:
            parts.append(_leaf("duration", str(item.duration)))
        parts.append("</credentialsRequest>")
    parts.append("</request>")
    return _document(parts)


# --- response ----------------------------------------------------------------------

def encode_response(response: Response) -> bytes:
    attrs = [(name, value) for name, value in (
        ("requestID", response.request_id), ("version", response.version),
        ("serverVersion", response.server_version), ("to", response.to), ("from", response.from_),
        ("reasonPhrase", response.reason_phrase)) if value is not None]
    if not response.credentials_responses:
        return _document([_start("response", attrs, namespaces=True, empty=True)])
    parts = [_start("response", attrs, namespaces=True)]
    for item in response.credentials_responses:
        parts.append(_start("credentialsResponse", [("credentialsRequestID", item.credentials_request_id)]))
        c = item.credentials
        parts += ["<credentials>", _leaf("username", c.username), _leaf("password", c.password),
                  _leaf("duration", str(c.duration))]
        if c.realm is not None:
            parts.append(_leaf("realm", c.realm))
        parts.append("</credentials><mediaRelayList>")
        for relay in item.media_relays:
            parts += ["<mediaRelay>", _leaf("location", relay.location)]
            if relay.host_name is not None:
                parts.append(_leaf("hostName", relay.host_name))
            else:
                parts.append(_leaf("directIPAddress", relay.direct_ip_address or ""))
            if relay.udp_port is not None:
                parts.append(_leaf("udpPort", str(relay.udp_port)))
            if relay.tcp_port is not None:
                parts.append(_leaf("tcpPort", str(relay.tcp_port)))
            parts.append("</mediaRelay>")
        parts.append("</mediaRelayList></credentialsResponse>")
    parts.append("</response>")
    return _document(parts)


def error_response(error: MrasError, server_version: str = SERVER_VERSION) -> Response:
    """The <response> for a refused request: its reasonPhrase and whatever attributes were readable."""
    r = error.request
    return Response(r.get("requestID"), r.get("version"), server_version, r.get("to"), r.get("from"),
                    error.reason_phrase)


def response_to(request: Request, reason_phrase: str = OK,
                credentials_responses: Iterable[CredentialsResponse] = (),
                server_version: str = SERVER_VERSION) -> Response:
    """A response echoing the request's requestID, version, to and from."""
    return Response(request.request_id, request.version, server_version, request.to, request.from_,
                    reason_phrase, tuple(credentials_responses))


def decode_response(body: bytes, max_bytes: int = MAX_RESPONSE_BYTES) -> Response:
    """The Response in `body` (client side); MrasError if it is not a well-formed MRAS response."""
    root = _parse(body, max_bytes, REQUEST_TOO_LARGE)
    partial: dict[str, str] = {}
    if root.tag != _q("response"):
        raise MrasError(REQUEST_MALFORMED, "root is not an MRAS <response>")
    reason = _attribute(root, "reasonPhrase", partial)
    items = []
    for element in _children(root, "credentialsResponse"):
        credentials_elements = _children(element, "credentials")
        if len(credentials_elements) != 1:
            raise MrasError(REQUEST_MALFORMED, "credentialsResponse without one <credentials>")
        c = credentials_elements[0]
        credentials = Credentials(
            _one_text(c, "username", True, partial) or "", _one_text(c, "password", True, partial) or "",
            _positive(_one_text(c, "duration", True, partial) or "", "duration", partial),
            _one_text(c, "realm", False, partial))
        relays = []
        for list_element in _children(element, "mediaRelayList"):
            for relay in _children(list_element, "mediaRelay"):
                relays.append(_media_relay(relay, partial))
        items.append(CredentialsResponse(_attribute(element, "credentialsRequestID", partial),
                                         credentials, tuple(relays)))
    return Response(root.get("requestID"), root.get("version"), root.get("serverVersion") or "",
                    root.get("to"), root.get("from"), reason, tuple(items))


def _media_relay(element: Element, partial: dict[str, str]) -> MediaRelay:
    location = _one_text(element, "location", True, partial) or ""
    host_name = _one_text(element, "hostName", False, partial)
    direct = _one_text(element, "directIPAddress", False, partial)
    if (host_name is None) == (direct is None):
        raise MrasError(REQUEST_MALFORMED, "mediaRelay needs one of hostName and directIPAddress")
    ports = []
    for name in ("udpPort", "tcpPort"):
        text = _one_text(element, name, False, partial)
        ports.append(None if text is None else _positive(text, name, partial, limit=65535))
    return MediaRelay(location, host_name, direct, ports[0], ports[1])


# --- writing -----------------------------------------------------------------------

def _start(name: str, attrs: list[tuple[str, str]], namespaces: bool = False, empty: bool = False) -> str:
    text = "<" + name
    if namespaces:
        text += f' xmlns="{NAMESPACE}"'
    text += "".join(f" {key}={quoteattr(value)}" for key, value in attrs)
    return text + ("/>" if empty else ">")


def _leaf(name: str, value: str) -> str:
    return f"<{name}>{escape(value)}</{name}>"


def _document(parts: list[str]) -> bytes:
    return ('<?xml version="1.0" encoding="utf-8"?>' + "".join(parts)).encode("utf-8")
