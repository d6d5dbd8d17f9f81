"""SIP messages as plain values: requests, responses and their headers (RFC 3261 §7).

No I/O here. Headers keep their order and every value; names are compared
case-insensitively and compact forms (RFC 3261 §7.3.3) map to full names.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

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
)}
_CANONICAL["call-id"] = "Call-ID"
_CANONICAL["cseq"] = "CSeq"

REASONS = {
    100: "Trying", 180: "Ringing", 200: "OK", 202: "Accepted", 302: "Moved Temporarily",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 413: "Request Entity Too Large",
    414: "Request-URI Too Long", 415: "Unsupported Media Type", 416: "Unsupported URI Scheme",
    420: "Bad Extension", 480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist",
    482: "Loop Detected", 483: "Too Many Hops", 486: "Busy Here", 487: "Request Terminated",
    488: "Not Acceptable Here", 500: "Server Internal Error", 501: "Not Implemented",
    503: "Service Unavailable", 505: "Version Not Supported", 513: "Message Too Large",
}


def canonical_name(name: str) -> str:
    """The full, conventionally cased header name (compact forms expanded)."""
    lower = name.lower()
    if len(lower) == 1 and lower in COMPACT_FORMS:
        return COMPACT_FORMS[lower]
    return _CANONICAL.get(lower, "-".join(part.capitalize() for part in name.split("-")))


@dataclass
class Headers:
    """Ordered (name, value) pairs; lookups by name ignore case and compact forms."""

    items: list[tuple[str, str]] = field(default_factory=list)

    def add(self, name: str, value: str) -> None:
        self.items.append((canonical_name(name), value))

    def get_all(self, name: str) -> list[str]:
        wanted = canonical_name(name)
        return [value for key, value in self.items if key == wanted]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None

    def set(self, name: str, value: str) -> None:
        wanted = canonical_name(name)
        self.items = [(k, v) for k, v in self.items if k != wanted]
        self.items.append((wanted, value))

    def __contains__(self, name: str) -> bool:
        return self.get(name) is not None


@dataclass
class Request:
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"

    def encode(self) -> bytes:
        return _encode(f"{self.method} {self.uri} {self.version}", self.headers, self.body)


@dataclass
class Response:
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = "SIP/2.0"

    def encode(self) -> bytes:
        return _encode(f"{self.version} {self.status} {self.reason}", self.headers, self.body)


Message = Request | Response


def _encode(start_line: str, headers: Headers, body: bytes) -> bytes:
    lines = [start_line]
    lines += [f"{name}: {value}" for name, value in headers.items if name != "Content-Length"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def _with_tag(to_value: str) -> str:
    params = to_value.split(">", 1)[-1] if "<" in to_value else to_value
    if ";tag=" in params.replace(" ", "").lower():
        return to_value
    return f"{to_value};tag={secrets.token_hex(6)}"


def make_response(request: Request, status: int, reason: str | None = None,
                  extra: list[tuple[str, str]] | None = None, body: bytes = b"") -> Response:
    """A response to `request` that copies the headers RFC 3261 §8.2.6.2 says to copy."""
    response = Response(status, reason or REASONS.get(status, "Unknown"))
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        for value in request.headers.get_all(name):
            if name == "To" and status > 100:
                value = _with_tag(value)
            response.headers.add(name, value)
    for name, value in extra or []:
        response.headers.add(name, value)
    response.body = body
    return response
