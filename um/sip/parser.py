"""Parse SIP from bytes: one message (datagram) or a stream framed by Content-Length.

Sans-I/O and strict. Parsing happens in two steps:

1. framing (`_parse_head`): start line, header lines (folding, compact forms,
   bounded count and size) and Content-Length. Only what breaks framing is
   raised here; on a stream that is fatal (the next message's start can no
   longer be found), so the connection closes.
2. validation (`validate_request` / `validate_response`): everything else
   RFC 3261 requires (Request-URI, Via, CSeq, From/To, Contact, Max-Forwards,
   single-valued headers, Date...). A bad request gets a 400 whose reason
   phrase names the problem (or 416/505/513); a bad response is dropped.

Errors carry the status code and reason phrase a server answers with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from um.sip.headers import check_date, parse_addresses, parse_cseq, parse_via
from um.sip.message import Headers, Message, Request, Response, canonical_name
from um.sip.uri import UriError, parse_name_addr, parse_uri

MAX_MESSAGE_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 128
SUPPORTED_SCHEMES = ("sip", "sips", "tel")
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 ([1-6]\d\d) ([^\r\n]*)$")
_VERSION = re.compile(r"^SIP/\d+\.\d+$")
_SINGLE = frozenset(("Call-ID", "CSeq", "From", "To", "Max-Forwards", "Content-Length", "Content-Type",
                     "Expires", "Date"))
_KNOWN_NAMES: dict[str, str] = {}  # raw header name -> canonical name, for names that passed the check


class SipParseError(ValueError):
    """A message is malformed: answer `status` `reason`; `fatal` closes a stream."""

    def __init__(self, status: int, reason: str, *, fatal: bool = False,
                 partial: Request | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.fatal, self.partial = status, reason, fatal, partial


def _bad(reason: str, partial: Request | None = None, status: int = 400) -> SipParseError:
    phrase = reason if status != 400 else f"Bad Request - {reason}"
    return SipParseError(status, phrase, partial=partial)


def _unfold(text: str) -> list[str]:
    """Header lines with RFC 3261 §7.3.1 folding (CRLF + whitespace) joined."""
    lines: list[str] = []
    for line in text.split("\r\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] = lines[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            lines.append(line)
    return lines


def _parse_start(start: str) -> tuple[Request | Response, SipParseError | None]:
    if start.startswith("SIP/"):
        status = _STATUS_LINE.match(start)
        response = Response(int(status.group(1)) if status else 0, status.group(2) if status else "")
        if not status:
            version = start.split(" ", 1)[0]
            if _VERSION.match(version) and version != "SIP/2.0":
                return response, SipParseError(505, "Version Not Supported")
            return response, SipParseError(400, "Bad Request - malformed status line")
        return response, None
    parts = start.split(" ")
    if len(parts) != 3 or not all(parts):
        method = parts[0] if parts and _TOKEN.match(parts[0]) else "UNKNOWN"
        request = Request(method, parts[1] if len(parts) > 1 else "")
        return request, _bad("malformed Request-Line (extra or missing spaces)")
    method, uri, version = parts
    request = Request(method, uri, version=version)
    if not _TOKEN.match(method):
        return request, _bad("malformed method")
    if version != "SIP/2.0":
        if _VERSION.match(version):
            return request, SipParseError(505, "Version Not Supported")
        return request, _bad("malformed SIP-Version")
    return request, None


def _parse_head(head: bytes) -> tuple[Request | Response, int | None]:
    """Start line, headers and Content-Length. Raises only for errors that break framing."""
    try:
        text = head.decode("utf-8")
        defect: SipParseError | None = None
    except UnicodeDecodeError:
        text = head.decode("latin-1")
        defect = _bad("header section not UTF-8")
    if "\r\n " in text or "\r\n\t" in text:
        lines = _unfold(text)
    else:
        lines = text.split("\r\n")
    message, start_defect = _parse_start(lines[0])
    defect = defect or start_defect
    if len(lines) - 1 > MAX_HEADERS:
        defect = defect or SipParseError(513, "Message Too Large - too many header fields")
    items: list[tuple[str, str]] = []
    lengths: list[str] = []
    known = _KNOWN_NAMES
    singles: set[str] = set()
    repeated: list[str] = []
    first: dict[str, str] = {}  # the Headers index (first value per name), built in the same pass
    for line in lines[1:]:
        colon = line.find(":")
        name = line[:colon].rstrip(" \t") if colon > 0 else ""
        canonical = known.get(name)
        if canonical is None:
            if not name or not _TOKEN.match(name):
                defect = defect or _bad(f"malformed header line {line[:40]!r}")
                continue
            canonical = canonical_name(name)
            if len(known) < 4096:
                known[name] = canonical
        value = line[colon + 1:].strip(" \t")
        if canonical in _SINGLE:
            if canonical in singles:
                repeated.append(canonical)
            else:
                singles.add(canonical)
            if canonical == "Content-Length":
                lengths.append(value)
        items.append((canonical, value))
        if canonical not in first:
            first[canonical] = value
    headers = message.headers = Headers(items)
    headers._index, headers._indexed = first, (id(items), len(items))
    if repeated:
        message.repeated = repeated
    crlf = text.count("\r\n")
    if text.count("\r") != crlf or text.count("\n") != crlf:
        defect = defect or _bad("bare CR or LF in the header section")
    if defect is not None:
        message.defect = defect
    if not lengths:
        return message, None
    if len(lengths) > 1 and len(set(lengths)) > 1:
        raise SipParseError(400, "Bad Request - multiple Content-Length values", fatal=True,
                            partial=_partial(message))
    length = lengths[0]
    if not length.isdigit() or not length.isascii() or len(length) > 9:
        raise SipParseError(400, "Bad Request - malformed Content-Length", fatal=True,
                            partial=_partial(message))
    return message, int(length)


def _partial(message: Message) -> Request | None:
    return message if isinstance(message, Request) else None


def validate_request(request: Request) -> None:
    """RFC 3261 checks on a framed request; raises SipParseError (400/416/505/513) naming the problem.

    Fills request.ruri, .vias, .cseq_number, .from_addr and .to_addr.
    """
    if request.defect is not None:
        request.defect.partial = request
        raise request.defect
    headers = request.headers
    missing = [h for h in ("Via", "From", "To", "Call-ID", "CSeq") if headers.get(h) is None]
    if missing:
        raise _bad(f"missing {', '.join(missing)}", request)
    if request.repeated:
        multiple = sorted(set(request.repeated) - {"Content-Length"})  # equal repeated lengths frame fine
        if multiple:
            raise _bad(f"multiple {', '.join(multiple)} header fields", request)
    try:
        vias = []
        for name, value in headers.items:
            if name == "Via":
                vias.extend(parse_via(value))
    except UriError as error:
        raise _bad(str(error), request) from None
    request.vias = vias
    try:
        number, method = parse_cseq(headers.get("CSeq") or "")
    except UriError as error:
        raise _bad(str(error), request) from None
    if method != request.method:
        raise _bad("CSeq method does not match the request method", request)
    request.cseq_number = number
    try:
        request.from_addr = parse_name_addr(headers.get("From") or "")
    except UriError as error:
        raise _bad(f"From: {error}", request) from None
    try:
        request.to_addr = parse_name_addr(headers.get("To") or "")
    except UriError as error:
        raise _bad(f"To: {error}", request) from None
    uri = request.uri
    if uri.startswith("<") or not uri:
        raise _bad("malformed Request-URI", request)
    try:
        request.ruri = parse_uri(uri, request_uri=True)
    except UriError as error:
        raise _bad(f"malformed Request-URI ({error})", request) from None
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None and (not max_forwards.isdigit() or not max_forwards.isascii()
                                     or int(max_forwards) > 255):
        raise _bad("malformed Max-Forwards", request)
    if "Contact" in headers:
        try:
            for value in headers.get_all("Contact"):
                parse_addresses(value, allow_star=request.method == "REGISTER")
        except UriError as error:
            raise _bad(f"Contact: {error}", request) from None
    if "Date" in headers:
        try:
            check_date(headers.get("Date") or "")
        except UriError as error:
            raise _bad(str(error), request) from None
    if request.ruri.scheme not in SUPPORTED_SCHEMES:
        raise SipParseError(416, "Unsupported URI Scheme", partial=request)


def validate_response(response: Response) -> None:
    """Checks a received response needs before it can be matched; raises (the response is dropped)."""
    if response.defect is not None:
        raise response.defect
    headers = response.headers
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if headers.get(name) is None:
            raise _bad(f"missing {name}")
    try:
        response.vias = parse_via(headers.get("Via") or "")
        response.cseq_number, response.cseq_method = parse_cseq(headers.get("CSeq") or "")
    except UriError as error:
        raise _bad(str(error)) from None


def validate(message: Message) -> None:
    if isinstance(message, Request):
        validate_request(message)
    else:
        validate_response(message)


def parse_datagram(data: bytes) -> Message:
    """One message from a datagram (RFC 3261 §18.3: the body ends with the datagram), validated."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(513, "Message Too Large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipParseError(400, "Bad Request - no end of headers")
    if len(head) > MAX_HEADER_BYTES:
        raise SipParseError(513, "Message Too Large - header section too large")
    message, length = _parse_head(head)
    if length is not None:
        if length > len(body):
            raise SipParseError(400, "Bad Request - Content-Length larger than the body",
                                partial=_partial(message))
        body = body[:length]
    message.body = body
    validate(message)
    return message


@dataclass
class StreamEvent:
    """What a stream parser found: a message, a keepalive ping, or an error."""

    message: Message | None = None
    ping: bool = False
    error: SipParseError | None = None


class StreamParser:
    """Frames SIP messages on a TCP/TLS byte stream; bounded buffering.

    `validate` (default) runs the strict checks on each framed message; an
    invalid request becomes an error event (answer it, the stream goes on),
    an invalid response is dropped silently. After a fatal error, feed no more.
    """

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES, validate: bool = True) -> None:
        self._buffer = bytearray()
        self._max_message = max_message
        self._validate = validate
        self._pending: tuple[Message, int, int] | None = None  # message, head end, total length

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Add bytes; return the events now complete."""
        buffer = self._buffer
        buffer += data
        events: list[StreamEvent] = []
        while buffer:
            if self._pending is not None:
                message, end, total = self._pending
                if len(buffer) < total:
                    return events
                self._pending = None
                message.body = bytes(buffer[end + 4:total])
                del buffer[:total]
                self._emit(message, events)
                continue
            if buffer[0] == 13:  # CR: a keepalive or a stray CRLF before a message
                if buffer.startswith(b"\r\n\r\n"):  # RFC 5626 §4.4.1 keepalive ping
                    del buffer[:4]
                    events.append(StreamEvent(ping=True))
                    continue
                if len(buffer) < 4 and b"\r\n\r\n".startswith(bytes(buffer)):
                    return events  # maybe the first half of a ping
                if buffer.startswith(b"\r\n"):
                    del buffer[:2]  # a stray CRLF before a message (RFC 3261 §7.5)
                    continue
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEADER_BYTES:
                    events.append(StreamEvent(error=SipParseError(
                        513, "Message Too Large - header section too large", fatal=True)))
                    buffer.clear()
                return events
            if end > MAX_HEADER_BYTES:
                events.append(StreamEvent(error=SipParseError(
                    513, "Message Too Large - header section too large", fatal=True)))
                buffer.clear()
                return events
            try:
                message, length = _parse_head(bytes(buffer[:end]))
            except SipParseError as error:
                error.fatal = True  # the body length is unknowable: resynchronising is guesswork
                events.append(StreamEvent(error=error))
                buffer.clear()
                return events
            if length is None:
                events.append(StreamEvent(error=SipParseError(
                    400, "Bad Request - missing Content-Length", fatal=True, partial=_partial(message))))
                buffer.clear()
                return events
            total = end + 4 + length
            if total > self._max_message:
                events.append(StreamEvent(error=SipParseError(
                    513, "Message Too Large", fatal=True, partial=_partial(message))))
                buffer.clear()
                return events
            if len(buffer) < total:
                self._pending = (message, end, total)
                return events
            message.body = bytes(buffer[end + 4:total]) if length else b""
            del buffer[:total]
            self._emit(message, events)
        return events

    def _emit(self, message: Message, events: list[StreamEvent]) -> None:
        if self._validate:
            try:
                validate(message)
            except SipParseError as error:
                if isinstance(message, Request):
                    events.append(StreamEvent(error=error))
                return  # an invalid response is dropped (RFC 4475 §3.1.2.18/19)
        events.append(StreamEvent(message=message))
