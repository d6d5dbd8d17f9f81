"""Typed views of the header fields the core acts on: Via, CSeq, Require, Date, History-Info...

Each parser raises `UriError` (a ValueError) with a message naming the
problem; the strict validator turns it into a 400 reason phrase.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from um.sip.uri import NameAddr, UriError, parse_header_params, parse_name_addr, split_header_values, split_hostport

MAGIC_COOKIE = "z9hG4bK"
_ADDRESS_PARAMS = ("received",)  # RFC 3261 via-received: IPv4address / IPv6address (RFC 5118 §4.5: or [IPv6])
MAX_CSEQ = 2**31 - 1  # RFC 3261 §8.1.1.5: CSeq numbers are below 2**31
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_VIA = re.compile(r"^SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]+([^;]+?)[ \t]*(;.*)?$",
                  re.S)
_DATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                   r"\d{4} \d{2}:\d{2}:\d{2} GMT$")


@dataclass
class Via:
    """One Via value: transport, sent-by and parameters (branch, received, rport...)."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    @property
    def rfc3261_branch(self) -> bool:
        """The branch carries the magic cookie and more (RFC 3261 §8.1.1.7); else RFC 2543 matching."""
        branch = self.branch
        return branch is not None and branch.startswith(MAGIC_COOKIE) and len(branch) > len(MAGIC_COOKIE)

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}" + "".join(
            f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())


def parse_via(value: str) -> list[Via]:
    """All Via values in one header line (comma separated)."""
    vias = []
    for part in split_header_values(value):
        match = _VIA.match(part)
        if not match:
            raise UriError(f"malformed Via {part!r}")
        transport, sent_by, param_text = match.groups()
        host, port = split_hostport(sent_by.replace(" ", "").replace("\t", ""))
        params = parse_header_params(param_text or "", _ADDRESS_PARAMS)
        for name in ("received", "rport", "ttl", "maddr"):
            if name in params and params[name] is None and name != "rport":
                raise UriError(f"Via {name} without a value")
        received = params.get("received")
        if received is not None and not _is_address(received):
            raise UriError(f"malformed Via received {received!r} (an IPv4 or IPv6 address)")
        rport = params.get("rport")
        if rport is not None and (not rport.isdigit() or int(rport) > 65535):
            raise UriError("malformed Via rport")
        vias.append(Via(transport.upper(), host, port, params))
    return vias


def _is_address(text: str) -> bool:
    """received= holds an IP address: IPv4, IPv6, or IPv6 in brackets (RFC 5118 §4.5 accepts both)."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_cseq(value: str) -> tuple[int, str]:
    number, _, method = value.strip(" \t").partition(" ")
    method = method.strip(" \t")
    if not number.isdigit() or not number.isascii() or not method or not _TOKEN.match(method):
        raise UriError("malformed CSeq")
    if len(number) > 10 or int(number) > MAX_CSEQ:
        raise UriError("CSeq number out of range")
    return int(number), method


def parse_token_list(value: str) -> list[str]:
    """Require, Supported, Allow...: comma separated tokens."""
    items = [item.strip(" \t") for item in value.split(",")]
    if not all(_TOKEN.match(item) for item in items):
        raise UriError(f"malformed token list {value!r}")
    return items


def check_date(value: str) -> None:
    """Date (RFC 3261 §20.17): rfc1123-date, always in GMT."""
    if not _DATE.match(value.strip(" \t")):
        raise UriError("malformed Date (rfc1123-date in GMT)")


def parse_addresses(value: str, *, allow_star: bool = False) -> list[NameAddr]:
    """Contact, Route, History-Info, Diversion...: comma separated name-addr / addr-spec values."""
    return [parse_name_addr(part, allow_star=allow_star) for part in split_header_values(value)]


def parse_content_type(value: str) -> tuple[str, dict[str, str | None]]:
    media, _, params = value.partition(";")
    media = media.strip(" \t").lower()
    kind, slash, sub = media.partition("/")
    if not slash or not _TOKEN.match(kind) or not _TOKEN.match(sub):
        raise UriError(f"malformed Content-Type {value!r}")
    return media, parse_header_params(";" + params if params else "")
