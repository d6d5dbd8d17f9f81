"""SIP messages as plain values: requests, responses and their headers (RFC 3261 §7).

No I/O here. Headers keep their order and every value; names are compared
case-insensitively and compact forms (RFC 3261 §7.3.3) map to full names.
The strict validator (um.sip.parser) fills the parsed views (`ruri`, `vias`,
`cseq_number`, `from_addr`, `to_addr`) so handlers never parse twice.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from um.sip.headers import Via
    from um.sip.parser import SipParseError
    from um.sip.uri import NameAddr, Uri

COMPACT_FORMS = {
    "a": "Accept-Contact", "b": "Referred-By", "c": "Content-Type", "d": "Request-Disposition",
    "e": "Content-Encoding", "f": "From", "i": "Call-ID", "j": "Reject-Contact", "k": "Supported",
    "l": "Content-Length", "m": "Contact", "n": "Identity-Info", "o": "Event", "r": "Refer-To",
    "s": "Subject", "t": "To", "u": "Allow-Events", "v": "Via", "x": "Session-Expires", "y": "Identity",
}
_CANONICAL = {name.lower(): name for name in (
    *COMPACT_FORMS.values(), "CSeq", "Max-Forwards", "Allow", "Accept", "Server", "User-Agent",
    "Expires", "Require", "Unsupported", "Retry-After", "Record-Route", "Route", "WWW-Authenticate",
    "Authorization", "Proxy-Authenticate", "Proxy-Authorization", "Warning", "Date", "Timestamp",
    "Proxy-Require", "History-Info", "Diversion", "Min-Expires", "Accept-Encoding", "Accept-Language",
    "Authentication-Info", "Organization", "Priority", "Reply-To", "In-Reply-To", "MIME-Version",
    "Content-Disposition", "Content-Language", "Error-Info", "Alert-Info", "Call-Info",
)}
_CANONICAL["call-id"] = "Call-ID"
_CANONICAL["cseq"] = "CSeq"
_CANONICAL["www-authenticate"] = "WWW-Authenticate"
_CANONICAL["mime-version"] = "MIME-Version"
for _short, _full in COMPACT_FORMS.items():
    _CANONICAL[_short] = _full
_CANONICAL_NAMES = frozenset(_CANONICAL.values())
_CACHE_LIMIT = 4096  # hostile peers may send endless distinct names: cache only so many

REASONS = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued", 183: "Session Progress",
    200: "OK", 202: "Accepted", 300: "Multiple Choices", 301: "Moved Permanently", 302: "Moved Temporarily",
    305: "Use Proxy", 380: "Alternative Service",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 407: "Proxy Authentication Required",
    408: "Request Timeout", 410: "Gone", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 421: "Extension Required", 423: "Interval Too Brief",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 484: "Address Incomplete", 485: "Ambiguous",
    486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 491: "Request Pending", 493: "Undecipherable",
    500: "Server Internal Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Server Time-out", 505: "Version Not Supported", 513: "Message Too Large",
    600: "Busy Everywhere", 603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


def canonical_name(name: str) -> str:
    """The full, conventionally cased header name (compact forms expanded)."""
    known = _CANONICAL.get(name)
    if known is not None:
        return known
    lower = name.lower()
    known = _CANONICAL.get(lower)
    if known is None:
        known = "-".join(part.capitalize() for part in name.split("-"))
        if len(_CANONICAL) < _CACHE_LIMIT:
            _CANONICAL[lower] = known
    if len(_CANONICAL) < _CACHE_LIMIT:
        _CANONICAL[name] = known
    return known


@dataclass
class Headers:
    """Ordered (name, value) pairs; lookups by name ignore case and compact forms.

    `get` uses an index of first values built on first use; the methods below
    keep it current. Assigning `items` resets it; code that changes
    `items[i]` in place must call `changed()`.
    """

    items: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._index: dict[str, str] | None = None
        self._indexed: tuple[int, int] = (0, -1)  # (id, len) of the items list the index describes

    def changed(self) -> None:
        self._index = None

    def add(self, name: str, value: str) -> None:
        self.items.append((canonical_name(name), value))
        self._index = None

    def get_all(self, name: str) -> list[str]:
        wanted = canonical_name(name)
        return [value for key, value in self.items if key == wanted]

    def get(self, name: str) -> str | None:
        items = self.items
        index = self._index
        if index is None or self._indexed != (id(items), len(items)):
            index = {}
            for key, value in items:
                if key not in index:
                    index[key] = value
            self._index = index
            self._indexed = (id(items), len(items))
        found = index.get(name)
        if found is None and name not in _CANONICAL_NAMES:
            found = index.get(canonical_name(name))
        return found

    def set(self, name: str, value: str) -> None:
        wanted = canonical_name(name)
        self.items = [(k, v) for k, v in self.items if k != wanted]
        self.items.append((wanted, value))
        self._index = None

    def replace_first(self, name: str, value: str) -> None:
        """Change the first `name` value in place (keeps its position), or add it."""
        wanted = canonical_name(name)
        for index, (key, _) in enumerate(self.items):
            if key == wanted:
                self.items[index] = (key, value)
                break
        else:
            self.items.append((wanted, value))
        self._index = None

    def remove(self, name: str) -> None:
        wanted = canonical_name(name)
        self.items = [(k, v) for k, v in self.items if k != wanted]

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None


@dataclass
class Request:
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"
    # Parsed views, filled by um.sip.parser.validate_request. Class attributes, not
    # dataclass fields: the defaults cost nothing per message. The type checker sees
    # them (as optional fields) only so that it knows their types.
    if TYPE_CHECKING:
        ruri: Uri | None = None
        vias: list[Via] | None = None            # top first
        cseq_number: int | None = None
        from_addr: NameAddr | None = None
        to_addr: NameAddr | None = None
        defect: SipParseError | None = None      # found while framing, raised by validation
        repeated: list[str] | None = None        # single-valued header names that appeared more than once
    else:
        ruri = vias = cseq_number = from_addr = to_addr = defect = repeated = None

    def encode(self) -> bytes:
        return _encode(f"{self.method} {self.uri} {self.version}", self.headers, self.body)

    @property
    def top_via(self) -> Any:
        return self.vias[0] if self.vias else None


@dataclass
class Response:
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"
    if TYPE_CHECKING:
        vias: list[Via] | None = None
        cseq_number: int | None = None
        cseq_method: str | None = None
        defect: SipParseError | None = None
        repeated: list[str] | None = None
    else:
        vias = cseq_number = cseq_method = defect = repeated = None

    def encode(self) -> bytes:
        return _encode(f"{self.version} {self.status} {self.reason}", self.headers, self.body)

    @property
    def top_via(self) -> Any:
        return self.vias[0] if self.vias else None


Message = Request | Response


def _encode(start_line: str, headers: Headers, body: bytes) -> bytes:
    parts = [start_line]
    for name, value in headers.items:
        if name != "Content-Length":
            parts.append(f"{name}: {value}")
    parts.append(f"Content-Length: {len(body)}\r\n\r\n")
    wire = "\r\n".join(parts).encode("utf-8")
    return wire + body if body else wire


_RANDOM = bytearray()


def new_tag() -> str:
    """48 cryptographically random bits (RFC 3261 §19.3 asks for at least 32), from a pooled read."""
    global _RANDOM
    if len(_RANDOM) < 6:
        _RANDOM = bytearray(secrets.token_bytes(6 * 1024))
    tag = _RANDOM[-6:].hex()
    del _RANDOM[-6:]
    return tag


def _has_tag(to_value: str) -> bool:
    params = to_value[to_value.rfind(">") + 1:] if "<" in to_value else to_value
    return ";tag=" in params.replace(" ", "").lower()


def _with_tag(to_value: str, tag: str | None = None) -> str:
    if _has_tag(to_value):
        return to_value
    return f"{to_value};tag={tag or new_tag()}"


_COPIED = ("Via", "From", "To", "Call-ID", "CSeq")
_COPIED_DIALOG = (*_COPIED, "Record-Route")
_DIALOG_METHODS = ("INVITE", "SUBSCRIBE")


def make_response(request: Request, status: int, reason: str | None = None,
                  extra: list[tuple[str, str]] | None = None, body: bytes = b"",
                  to_tag: str | None = None) -> Response:
    """A response to `request` that copies the headers RFC 3261 §8.2.6.2 says to copy.

    Via, From, To, Call-ID and CSeq are copied in the request's order; To gets
    a tag (`to_tag`, or a random one) unless it has one or the status is 100.
    A response that creates a dialog (101-299 to INVITE or SUBSCRIBE) also
    copies Record-Route, values and order unchanged (§12.1.1): without it a
    record-routing proxy drops out of the caller's route set and the ACK and
    BYE bypass it.
    """
    items = []
    copied = _COPIED_DIALOG if 100 < status < 300 and request.method in _DIALOG_METHODS else _COPIED
    for name, value in request.headers.items:
        if name in copied:
            if name == "To" and status > 100:
                value = _with_tag(value, to_tag)
            items.append((name, value))
    if extra:
        for name, value in extra:
            items.append((name if name in _CANONICAL_NAMES else canonical_name(name), value))
    return Response(status, reason or REASONS.get(status, "Unknown"), Headers(items), body)
