"""Lync's multipart SDP offers: split the body, pick the part the worker answers, sans-I/O.

What the sources say (and what this module does with it):

* [MS-SIPRE] 3.15.4.1 "Outgoing INVITE": a Lync/Skype for Business UA sends its SDP as
  ``multipart/alternative`` with two ``application/sdp`` parts, the first "SDP ICEv6 (with
  ms-proxy-2007fallback parameter)" ([IETFDRAFT-ICENAT-06], the legacy MS-ICE candidates
  ``a=candidate:<username> <component> <password> UDP <q-value> <ip> <port>``, no ``typ``, no
  ``a=ice-ufrag``), the other "SDP ICEv19" ([IETFDRAFT-ICENAT-19], [MS-ICE2]: ``a=ice-ufrag`` /
  ``a=ice-pwd`` and ``a=candidate:1 1 UDP 2130706431 192.0.2.1 50000 typ host``, TCP-ACT/TCP-PASS,
  ``a=x-candidate-ipv6``). "If ICEv19 SDP is carried in the multi-part MIME, it MUST be placed in the
  last part"; a part may also carry no ICE at all. With a call context the alternative is itself a
  part of a ``multipart/mixed`` (the "3-level deep" form): handled here by looking into it.
* RFC 2046 §5.1.4: the alternatives are in increasing order of preference, the receiver takes the
  last one it can use. The worker does the same: the last ``application/sdp`` part whose ICE
  flavour it can answer (ICEv19 or no ICE; ICEv6 only where ICE is not used, see um.worker.handler).
* The answer is one ``application/sdp`` (the offer/answer of RFC 3264 pairs one offer with one
  answer; the ICE form of the answer tells the Lync caller which alternative was taken).
* [MS-SIPRE] 3.9.5.5 / 3.15.5.2: the Lync fallback to a single part is driven by a 415 to the
  multipart body (a proxy or the UA resends the ICEv6 part alone, without
  ``ms-proxy-2007fallback``). The worker takes multipart, so it never sends that 415.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from um.worker import sdp

MULTIPART_TYPES = ("multipart/alternative", "multipart/mixed")
MAX_DEPTH = 3


class MultipartError(ValueError):
    """A malformed multipart body (no boundary, no parts): a 400."""


@dataclass
class Part:
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "text/plain").split(";")[0].strip().lower()

    @property
    def content_type_header(self) -> str:
        return self.headers.get("content-type", "text/plain")


@dataclass
class Choice:
    """The part the worker answers: its SDP, its ICE flavour and where it was."""

    offer: sdp.Session
    body: bytes             # the part's SDP as sent
    flavour: str            # "ice19", "ice6" or "none" (um.worker.sdp.ice_flavour)
    index: int              # position among the application/sdp parts, 0-based
    content_id: str | None
    parts: int              # how many application/sdp parts were offered


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


def is_multipart(content_type: str) -> bool:
    return media_type(content_type) in MULTIPART_TYPES


def _params(content_type: str) -> dict[str, str]:
    """The parameters of a Content-Type value; quoted values may hold ';' and '='."""
    params: dict[str, str] = {}
    text = content_type.partition(";")[2]
    index = 0
    while index < len(text):
        while index < len(text) and text[index] in " \t;":
            index += 1
        start = index
        while index < len(text) and text[index] not in "=;":
            index += 1
        name = text[start:index].strip().lower()
        value = ""
        if index < len(text) and text[index] == "=":
            index += 1
            while index < len(text) and text[index] in " \t":
                index += 1
            if index < len(text) and text[index] == '"':
                end = text.find('"', index + 1)
                end = len(text) if end < 0 else end
                value = text[index + 1:end]
                index = end + 1
            else:
                start = index
                while index < len(text) and text[index] != ";":
                    index += 1
                value = text[start:index].strip()
        if name:
            params[name] = value
    return params


def boundary(content_type: str) -> str:
    value = _params(content_type).get("boundary", "")
    if not value or len(value) > 70:
        raise MultipartError("multipart body without a usable boundary parameter")
    return value


def _part(raw: bytes) -> Part:
    text = raw.replace(b"\r\n", b"\n")
    headers: dict[str, str] = {}
    lines = text.split(b"\n")
    index = 0
    last = None
    while index < len(lines):
        line = lines[index].decode("utf-8", "replace")
        if line == "":
            index += 1
            break
        if line[:1] in (" ", "\t") and last is not None:  # a folded header line
            headers[last] += " " + line.strip()
        else:
            name, sep, value = line.partition(":")
            if not sep or not name.strip() or " " in name.strip() or "=" in name:
                break  # no blank line before the body (seen in the wild): the body starts here
            last = name.strip().lower()
            headers[last] = value.strip()
        index += 1
    body = b"\r\n".join(lines[index:])
    return Part(headers, body)


def split(content_type: str, body: bytes) -> list[Part]:
    """The body parts of a multipart body (RFC 2046 §5.1.1), preamble and epilogue dropped."""
    delimiter = b"--" + boundary(content_type).encode()
    text = body.replace(b"\r\n", b"\n")
    parts: list[Part] = []
    current: list[bytes] | None = None
    closed = False
    for line in text.split(b"\n"):
        stripped = line.rstrip(b" \t")
        if stripped == delimiter + b"--":
            if current is not None:
                parts.append(_part(b"\n".join(current)))
            current, closed = None, True
            break
        if stripped == delimiter:
            if current is not None:
                parts.append(_part(b"\n".join(current)))
            current = []
            continue
        if current is not None:
            current.append(line)
    if current is not None and not closed:  # no close delimiter: take what came
        parts.append(_part(b"\n".join(current)))
    if not parts:
        raise MultipartError("multipart body without a part")
    return parts


def sdp_parts(content_type: str, body: bytes, depth: int = 0) -> list[Part]:
    """Every application/sdp part, in order, looking into nested multiparts (the 3-level form)."""
    found: list[Part] = []
    for part in split(content_type, body):
        if part.content_type == "application/sdp":
            found.append(part)
        elif part.content_type in MULTIPART_TYPES and depth + 1 < MAX_DEPTH:
            found += sdp_parts(part.content_type_header, part.body, depth + 1)
    return found


def choose(content_type: str, body: bytes, acceptable: tuple[str, ...] = ("ice19", "none")) -> Choice:
    """The application/sdp part to answer: the last one whose ICE flavour is in `acceptable`.

    MultipartError: malformed; SdpError(488, warning set): no SDP part, or none the worker can
    answer (e.g. only ICEv6 while the worker needs ICE).
    """
    parts = sdp_parts(content_type, body)
    if not parts:
        raise sdp.SdpError(488, "Not Acceptable Here - no application/sdp part in the multipart body",
                           warning="no application/sdp part in the multipart body")
    seen: list[str] = []
    for index in range(len(parts) - 1, -1, -1):
        part = parts[index]
        try:
            offer = sdp.parse(part.body)
        except sdp.SdpError:
            seen.append("malformed")
            continue
        flavour = sdp.ice_flavour(offer)
        seen.append(flavour)
        if flavour in acceptable:
            content_id = part.headers.get("content-id")
            return Choice(offer, part.body, flavour, index, content_id.strip("<> ") if content_id else None, len(parts))
    if "ice6" in seen:
        raise sdp.SdpError(488, "Not Acceptable Here - ICE version not supported",
                           warning=sdp.ICE6_WARNING)
    raise sdp.SdpError(488, "Not Acceptable Here - no usable SDP part",
                       warning="no application/sdp part could be used (" + ", ".join(seen) + ")")
