"""Parse SIP from bytes: one message (datagram) or a stream framed by Content-Length.

Sans-I/O. Errors carry the status code and reason phrase a server should
answer with; framing errors on a stream say the connection must close, since
the next message's start can no longer be found.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from um.sip.message import Headers, Message, Request, Response

MAX_MESSAGE_BYTES = 64 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 128
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_STATUS_LINE = re.compile(r"^SIP/(\d+\.\d+) (\d{3}) ?(.*)$")
_REQUEST_LINE = re.compile(r"^([^ ]+) ([^ ]+) ([^ ]+)$")


class SipParseError(ValueError):
    """A message is malformed: answer `status` `reason`; `fatal` closes a stream."""

    def __init__(self, status: int, reason: str, *, fatal: bool = False,
                 partial: Request | None = None) -> None:
        super().__init__(f"{status} {reason}")
        self.status, self.reason, self.fatal, self.partial = status, reason, fatal, partial


def _unfold(head: str) -> list[str]:
    """Header lines with RFC 3261 §7.3.1 folding (CRLF + whitespace) joined."""
    lines: list[str] = []
    for line in head.split("\r\n"):
        if line[:1] in (" ", "\t") and lines:
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    return lines


def _parse_head(head: bytes) -> tuple[Request | Response, int | None]:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError(400, "Bad Request - header not UTF-8") from None
    lines = _unfold(text)
    start, header_lines = lines[0], lines[1:]
    if len(header_lines) > MAX_HEADERS:
        raise SipParseError(513, "Message Too Large - too many headers")
    message: Request | Response
    status = _STATUS_LINE.match(start)
    if start.startswith("SIP/") and status:
        if status.group(1) != "2.0":
            raise SipParseError(505, "Version Not Supported")
        message = Response(int(status.group(2)), status.group(3))
    else:
        request = _REQUEST_LINE.match(start)
        if not request:
            raise SipParseError(400, "Bad Request - malformed request line")
        method, uri, version = request.groups()
        if not _TOKEN.match(method):
            raise SipParseError(400, "Bad Request - malformed method")
        message = Request(method, uri, version=version)
    headers = Headers()
    for line in header_lines:
        name, colon, value = line.partition(":")
        name = name.rstrip(" \t")
        if not colon or not name or not _TOKEN.match(name):
            raise SipParseError(400, "Bad Request - malformed header line", fatal=True)
        headers.add(name, value.strip(" \t"))
    message.headers = headers
    length = headers.get("Content-Length")
    if length is None:
        return message, None
    if not length.isdigit():
        raise SipParseError(400, "Bad Request - malformed Content-Length", fatal=True,
                            partial=_partial(message))
    return message, int(length)


def _partial(message: Message) -> Request | None:
    return message if isinstance(message, Request) else None


def _check_request(message: Message) -> None:
    """Checks that need the whole head but leave the stream's framing intact."""
    if not isinstance(message, Request):
        return
    if message.version != "SIP/2.0":
        raise SipParseError(505, "Version Not Supported", partial=message)
    missing = [h for h in ("Via", "From", "To", "Call-ID", "CSeq") if h not in message.headers]
    if missing:
        raise SipParseError(400, f"Bad Request - missing {', '.join(missing)}", partial=message)
    cseq = message.headers.get("CSeq") or ""
    number, _, method = cseq.partition(" ")
    if not number.isdigit() or method.strip() != message.method:
        raise SipParseError(400, "Bad Request - CSeq does not match the request", partial=message)


def parse_datagram(data: bytes) -> Message:
    """One message from a datagram (RFC 3261 §18.3: the body ends with the datagram)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError(513, "Message Too Large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise SipParseError(400, "Bad Request - no end of headers")
    message, length = _parse_head(head)
    if length is not None:
        if length > len(body):
            raise SipParseError(400, "Bad Request - Content-Length larger than the body",
                                partial=_partial(message))
        body = body[:length]
    message.body = body
    _check_request(message)
    return message


@dataclass
class StreamEvent:
    """What a stream parser found: a message, a keepalive ping, or an error."""

    message: Message | None = None
    ping: bool = False
    error: SipParseError | None = None


class StreamParser:
    """Frames SIP messages on a TCP/TLS byte stream; bounded buffering."""

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self._max_message = max_message

    def feed(self, data: bytes) -> list[StreamEvent]:
        """Add bytes; return the events now complete. After a fatal error, feed no more."""
        self._buffer += data
        events: list[StreamEvent] = []
        while True:
            if self._buffer.startswith(b"\r\n\r\n"):  # RFC 5626 §4.4.1 keepalive ping
                del self._buffer[:4]
                events.append(StreamEvent(ping=True))
                continue
            if self._buffer.startswith(b"\r\n"):
                if len(self._buffer) < 4:
                    return events  # maybe the first half of a ping
                del self._buffer[:2]  # a stray CRLF before a message (RFC 3261 §7.5)
                continue
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > MAX_HEADER_BYTES:
                    events.append(StreamEvent(error=SipParseError(
                        513, "Message Too Large - header section too large", fatal=True)))
                return events
            try:
                message, length = _parse_head(bytes(self._buffer[:end]))
            except SipParseError as error:
                error.fatal = True  # the body length is unknowable: resynchronising is guesswork
                events.append(StreamEvent(error=error))
                return events
            if length is None:
                events.append(StreamEvent(error=SipParseError(
                    400, "Bad Request - missing Content-Length", fatal=True, partial=_partial(message))))
                return events
            total = end + 4 + length
            if total > self._max_message:
                events.append(StreamEvent(error=SipParseError(
                    513, "Message Too Large", fatal=True, partial=_partial(message))))
                return events
            if len(self._buffer) < total:
                return events
            message.body = bytes(self._buffer[end + 4:total])
            del self._buffer[:total]
            try:
                _check_request(message)
            except SipParseError as error:
                events.append(StreamEvent(error=error))
                continue
            events.append(StreamEvent(message=message))
