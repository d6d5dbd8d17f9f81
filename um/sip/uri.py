"""SIP, SIPS and tel URIs, name-addr / addr-spec values and generic parameters (RFC 3261 §19, §25; RFC 3966).

Sans-I/O and strict: every parse function raises `UriError` on anything the
RFC 3261 grammar does not allow. URIs of other schemes are kept as opaque
`AbsoluteUri` values (RFC 4475 §3.3.4: an element must not fail on them).
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass, field

__all__ = ["UriError", "SipUri", "TelUri", "AbsoluteUri", "Uri", "NameAddr", "parse_uri",
           "parse_name_addr", "parse_params", "unescape"]


class UriError(ValueError):
    """A URI, name-addr or parameter list does not follow the grammar; the message says how."""


# RFC 3261 §25.1 character classes, as regex fragments.
_UNRESERVED = r"A-Za-z0-9\-_.!~*'()"
_ESC = r"%[0-9A-Fa-f]{2}"
_USER = re.compile(rf"^(?:[{_UNRESERVED}&=+$,;?/]|{_ESC})+$")
_PASSWORD = re.compile(rf"^(?:[{_UNRESERVED}&=+$,]|{_ESC})*$")
_PARAMCHARS = re.compile(rf"^(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})+$")
_HNVCHARS = re.compile(rf"^(?:[{_UNRESERVED}\[\]/?:+$]|{_ESC})*$")
_HOSTNAME = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)*"
                       r"[A-Za-z](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.?$")
_IPV4 = re.compile(r"^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$")
_IPV6 = re.compile(r"^\[[0-9A-Fa-f:.]+\]$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*$")
_OPAQUE = re.compile(r"^[^\s<>\"]+$")
_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_TEL_GLOBAL = re.compile(r"^\+[0-9\-.()]*[0-9][0-9\-.()]*$")
_TEL_LOCAL = re.compile(r"^[0-9A-Fa-f*#\-.()]*[0-9A-Fa-f*#][0-9A-Fa-f*#\-.()]*$")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def unescape(text: str) -> str:
    """%HH escapes decoded (RFC 3261 §19.1.4 compares URIs after unescaping)."""
    if "%" not in text:
        return text
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)


def valid_host(host: str) -> bool:
    if _IPV4.match(host):
        return True
    if host.startswith("["):
        if not _IPV6.match(host):
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return bool(_HOSTNAME.match(host))


def is_ipv6(text: str) -> bool:
    """An IPv6 address literal without brackets (RFC 4291 text form, IPv4-embedded forms included)."""
    if ":" not in text:
        return False
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)
def address_key(host: str) -> str:
    """A host as one canonical text, to compare addresses not spellings (RFC 3261 §18.2.1).

    `[::1]`, `::1` and `0:0::1` are the same address; an IPv4-mapped IPv6
    address (a dual-stack socket's view of an IPv4 peer) is that IPv4
    address. Host names are compared case-insensitively.
    """
    text = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return host.lower().rstrip(".")
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def unmapped(host: str) -> str:
    """An IPv4-mapped IPv6 address (how a dual-stack `::` socket sees an IPv4 peer) as that IPv4 address.

    Gateway tables, trust checks and Via `received` then see the address the
    peer has, whichever socket family the listener uses.
    """
    if host[:7].lower() != "::ffff:" or "." not in host:
        return host
    key = address_key(host)
    return key if key.count(".") == 3 else host


def same_address(a: str, b: str) -> bool:
    """`a` and `b` name the same address, whatever brackets or abbreviations they use."""
    return a == b or address_key(a) == address_key(b)


@functools.lru_cache(maxsize=4096)
def bracket(host: str) -> str:
    """A host as a URI or Via names it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def split_hostport(text: str) -> tuple[str, int | None]:
    """"host[:port]" with host a name, IPv4 or [IPv6]; raises UriError."""
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[:end + 1], text[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            raise UriError(f"malformed host {text!r}")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = None
    if not valid_host(host):
        raise UriError(f"malformed host {host!r}")
    if port_text is None:
        return host, None
    if not port_text.isdigit() or not port_text.isascii() or len(port_text) > 5 or int(port_text) > 65535:
        raise UriError(f"malformed port {port_text!r}")
    return host, int(port_text)


def parse_params(text: str, chars: re.Pattern[str] = _PARAMCHARS,
                 what: str = "parameter") -> dict[str, str | None]:
    """";a=b;c" (leading ';' included) into {"a": "b", "c": None}; names lower-cased."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    if text[0] != ";":
        raise UriError(f"malformed {what}s {text!r}")
    for item in text[1:].split(";"):
        name, eq, value = item.partition("=")
        if not name or not chars.match(name) or (eq and not chars.match(value)):
            raise UriError(f"malformed {what} {item!r}")
        params[name.lower()] = value if eq else None
    return params


@dataclass
class SipUri:
    """sip: or sips: URI. `params` keys are lower case; `headers` keep their escapes."""

    scheme: str  # "sip" or "sips"
    user: str | None
    host: str
    port: int | None = None
    password: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    def __str__(self) -> str:
        text = self.scheme + ":"
        if self.user is not None:
            text += self.user + (f":{self.password}" if self.password is not None else "") + "@"
        text += self.host + (f":{self.port}" if self.port is not None else "")
        text += "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())
        if self.headers:
            text += "?" + "&".join(f"{k}={v}" for k, v in self.headers.items())
        return text


@dataclass
class TelUri:
    """tel: URI (RFC 3966): a global (+E.164) or local number with parameters."""

    number: str
    params: dict[str, str | None] = field(default_factory=dict)
    scheme: str = "tel"

    @property
    def user(self) -> str:
        return self.number

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    def __str__(self) -> str:
        return "tel:" + self.number + "".join(
            f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())


@dataclass
class AbsoluteUri:
    """A URI of a scheme SIP does not define (isbn:, http:, soap.beep:...), kept opaque."""

    scheme: str
    rest: str

    user = None

    def __str__(self) -> str:
        return f"{self.scheme}:{self.rest}"


Uri = SipUri | TelUri | AbsoluteUri
_TEL_PARAM = re.compile(rf"^(?:[{_UNRESERVED}\[\]/:&+$]|{_ESC})+$")


def _parse_sip(scheme: str, rest: str, *, allow_headers: bool) -> SipUri:
    headers: dict[str, str] = {}
    if "?" in rest:
        at = rest.find("@")
        q = rest.find("?", at + 1 if at >= 0 else 0)
        if q >= 0:
            rest, header_text = rest[:q], rest[q + 1:]
            if not allow_headers:
                raise UriError("headers not allowed in this URI")
            for item in header_text.split("&"):
                name, eq, value = item.partition("=")
                if not eq or not name or not _HNVCHARS.match(name) or not _HNVCHARS.match(value):
                    raise UriError(f"malformed URI header {item!r}")
                headers[name] = value
    user = password = None
    at = rest.find("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        user, colon, pw = userinfo.partition(":")
        if not user or not _USER.match(user):
            raise UriError(f"malformed user {user!r}")
        if colon:
            if not _PASSWORD.match(pw):
                raise UriError("malformed password")
            password = pw
    semi = rest.find(";")
    hostport, param_text = (rest, "") if semi < 0 else (rest[:semi], rest[semi:])
    host, port = split_hostport(hostport)
    return SipUri(scheme, user, host, port, password, parse_params(param_text, what="URI parameter"),
                  headers)


def parse_uri(text: str, *, request_uri: bool = False) -> Uri:
    """Parse a URI; `request_uri` forbids what RFC 3261 §19.1.1 forbids there (headers).

    Results are cached (bounded LRU): gateways repeat the same URIs call after
    call. The returned value is shared: treat it as read-only.
    """
    return _parse_uri_cached(text, request_uri)


@functools.lru_cache(maxsize=4096)
def _parse_uri_cached(text: str, request_uri: bool) -> Uri:
    scheme, colon, rest = text.partition(":")
    if not colon or not _SCHEME.match(scheme) or not rest:
        raise UriError(f"malformed URI {text!r}")
    lower = scheme.lower()
    if lower in ("sip", "sips"):
        return _parse_sip(lower, rest, allow_headers=not request_uri)
    if lower == "tel":
        number, _, param_text = rest.partition(";")
        if not (_TEL_GLOBAL.match(number) or _TEL_LOCAL.match(number)):
            raise UriError(f"malformed telephone number {number!r}")
        params = parse_params(";" + param_text, _TEL_PARAM, "tel parameter") if param_text else {}
        return TelUri(number, params)
    if not _OPAQUE.match(rest):
        raise UriError(f"malformed URI {text!r}")
    return AbsoluteUri(lower, rest)


@dataclass
class NameAddr:
    """A From/To/Contact-style value: optional display name, URI, header parameters."""

    uri: Uri
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    bracketed: bool = True

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        text = (f"{self.display} " if self.display else "") + f"<{self.uri}>"
        return text + "".join(f";{k}" if v is None else f";{k}={v}" for k, v in self.params.items())


_DISPLAY_TOKENS = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*$")
_GENERIC_VALUE = re.compile(r'^(?:[A-Za-z0-9\-.!%*_+`\'~]+|\[[0-9A-Fa-f:.]+\]|"(?:[^"\\]|\\.)*")$')


_SIMPLE_PARAMS = re.compile(r"^(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=(?:[A-Za-z0-9\-.!%*_+`'~]+|\[[0-9A-Fa-f:.]+\]))?)+$")


def parse_header_params(text: str, address_params: tuple[str, ...] = ()) -> dict[str, str | None]:
    """Header parameters (generic-param of RFC 3261 §25.1): ';' separated, token or quoted values.

    Parameters named in `address_params` may also hold an unbracketed IPv6
    address: RFC 3261's ABNF gives Via's `received` as IPv6address (no
    brackets), RFC 5118 §4.5 says to accept it with and without them.
    """
    params: dict[str, str | None] = {}
    if not text:
        return params
    if _SIMPLE_PARAMS.match(text):  # the usual case: no spaces, no quotes; one regex checks it all
        for item in text[1:].split(";"):
            name, eq, value = item.partition("=")
            params[name.lower()] = value if eq else None
        return params
    if not text.strip():
        return params
    text = text.strip()
    if text[0] != ";":
        raise UriError(f"malformed parameters {text!r}")
    for item in _split_quoted(text[1:], ";"):
        name, eq, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not name or not _TOKEN.match(name) or (eq and not _GENERIC_VALUE.match(value)
                                                   and not (name.lower() in address_params and is_ipv6(value))):
            raise UriError(f"malformed parameter {item.strip()!r}")
        params[name.lower()] = value if eq else None
    return params


def _split_quoted(text: str, sep: str) -> list[str]:
    """Split on `sep` outside double quotes; raises on an unterminated quote."""
    if '"' not in text:
        return text.split(sep)
    parts: list[str] = []
    current: list[str] = []
    quoted = escape = False
    for ch in text:
        if escape:
            escape = False
        elif ch == "\\" and quoted:
            escape = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if quoted:
        raise UriError("unterminated quoted string")
    parts.append("".join(current))
    return parts


def split_header_values(text: str) -> list[str]:
    """A comma-separated header value (RFC 3261 §7.3.1) split outside quotes and <...>."""
    if "," not in text:
        return [text]
    parts: list[str] = []
    current: list[str] = []
    quoted = angle = escape = False
    for ch in text:
        if escape:
            escape = False
        elif quoted:
            if ch == "\\":
                escape = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle = True
        elif ch == ">":
            angle = False
        elif ch == "," and not angle:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    if quoted:
        raise UriError("unterminated quoted string")
    parts.append("".join(current).strip())
    return parts


@functools.lru_cache(maxsize=4096)
def _bracketed(text: str, lt: int) -> tuple[str | None, Uri]:
    """`[display-name] <URI>` (cached: gateways repeat them); the quoted display, if any, is checked by the caller."""
    name = text[:lt].strip(" \t")
    display = None
    if name and not name.startswith('"'):
        if not _DISPLAY_TOKENS.match(name):
            raise UriError(f"malformed display name {name!r}")
        display = name
    inner = text[lt + 1:-1]
    if inner != inner.strip(" \t") or not inner:
        raise UriError("whitespace inside <URI>")
    return display, parse_uri(inner)


def parse_name_addr(text: str, *, allow_star: bool = False) -> NameAddr:
    """name-addr ("Display" <uri>;params) or addr-spec (uri;params), RFC 3261 §20.10 rules.

    In the addr-spec form the URI ends at the first ';' (those are header
    parameters) and it may not contain ',', '?' or ';' of its own.
    """
    text = text.strip(" \t")
    if allow_star and text == "*":
        return NameAddr(AbsoluteUri("*", ""), None, {}, False)
    if not text:
        raise UriError("empty address")
    display = None
    if text[0] == '"':
        end, escape = 1, False
        while end < len(text):
            ch = text[end]
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                break
            end += 1
        else:
            raise UriError("unterminated quoted display name")
        display, text = text[:end + 1], text[end + 1:].lstrip(" \t")
        if not text.startswith("<"):
            raise UriError("quoted display name without <URI>")
    lt = text.find("<")
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise UriError("'<' without '>'")
        bracket_display, uri = _bracketed(text[:gt + 1], lt)
        return NameAddr(uri, display if display is not None else bracket_display,
                        parse_header_params(text[gt + 1:]), True)
    semi = text.find(";")
    uri_text, param_text = (text, "") if semi < 0 else (text[:semi], text[semi:])
    uri_text = uri_text.rstrip(" \t")
    if not uri_text or any(c in uri_text for c in ' \t,?"'):
        raise UriError(f"malformed address {uri_text!r} (use <URI> for URIs with '?', ',' or ';')")
    return NameAddr(parse_uri(uri_text), None, parse_header_params(param_text), False)


def contact_style(request_uri: Uri | None, configured: str = "") -> str:
    """How to write a TLS Contact for a peer: "sips", or "sip-tls" (sip: + transport=tls, RFC 5630 §3.2).

    `configured` wins; else mirror the peer's own Request-URI: a peer that
    sent `sip:...;transport=tls` may not handle a `sips:` target (libre/baresip
    cannot), one that sent `sips:` expects `sips:` back.
    """
    if configured in ("sips", "sip-tls"):
        return configured
    return "sips" if isinstance(request_uri, SipUri) and request_uri.scheme == "sips" else "sip-tls"


def secure_contact(value: str, style: str) -> str:
    """A Contact value (`<sips:...>` or a bare URI) in `style`; anything not sips: is returned unchanged."""
    if style != "sip-tls" or "sips:" not in value:
        return value
    try:
        address = parse_name_addr(value)
    except UriError:
        return value
    uri = address.uri
    if not isinstance(uri, SipUri) or uri.scheme != "sips":
        return value
    params = {k: v for k, v in uri.params.items() if k != "transport"}
    params["transport"] = "tls"
    plain = SipUri("sip", uri.user, uri.host, uri.port, uri.password, params, dict(uri.headers))
    return str(NameAddr(plain, address.display, dict(address.params)))
