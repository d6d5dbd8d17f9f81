"""HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616 algorithms as RFC 8760 adds them to SIP).

Sans-I/O, the client side: answer a 401/407 challenge (MD5, MD5-sess,
SHA-256, SHA-256-sess, SHA-512-256, SHA-512-256-sess; qop auth and
auth-int, or none as RFC 2069/2617 allow). When a 401/407 carries several challenges
(RFC 8760 §2.4), the client takes the strongest algorithm it supports.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field

from um.sip.message import Headers, Request, Response

ALGORITHMS = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
    "SHA-512-256": lambda data=b"": hashlib.new("sha512_256", data),
}
PREFERENCE = ("SHA-512-256", "SHA-256", "MD5")  # strongest first
_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]+)\s*(?:,|$)')


class DigestError(ValueError):
    """A challenge or credentials value cannot be used; the message says why."""


@dataclass
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def algorithm(self) -> str:
        return self.params.get("algorithm", "MD5")

    @property
    def base_algorithm(self) -> str:
        algorithm = self.algorithm.upper()
        return algorithm[:-5] if algorithm.endswith("-SESS") else algorithm

    @property
    def qops(self) -> list[str]:
        return [q.strip().lower() for q in self.params.get("qop", "").split(",") if q.strip()]


def parse_auth_params(text: str) -> tuple[str, dict[str, str]]:
    """'Digest realm="x", nonce="y"' -> ("Digest", {"realm": "x", "nonce": "y"}); raises DigestError."""
    scheme, _, rest = text.strip().partition(" ")
    params: dict[str, str] = {}
    pos = 0
    rest = rest.strip()
    while pos < len(rest):
        match = _PARAM.match(rest, pos)
        if not match:
            raise DigestError(f"malformed auth parameters {rest[pos:pos + 40]!r}")
        name, value = match.group(1).lower(), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name] = value
        pos = match.end()
    return scheme, params


def parse_challenges(response: Response) -> list[Challenge]:
    """Every Digest challenge of a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate)."""
    name = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    found = []
    for value in response.headers.get_all(name):
        scheme, params = parse_auth_params(value)
        if scheme.lower() == "digest" and "nonce" in params and "realm" in params:
            found.append(Challenge(scheme, params))
    return found


def choose(challenges: list[Challenge]) -> Challenge:
    """The strongest supported challenge (RFC 8760 §2.4: the client uses the topmost it supports... best)."""
    usable = [c for c in challenges if c.base_algorithm in ALGORITHMS]
    if not usable:
        raise DigestError("no challenge with a supported algorithm")
    return min(usable, key=lambda c: PREFERENCE.index(c.base_algorithm))


def _h(algorithm: str, text: str | bytes) -> str:
    data = text.encode("utf-8") if isinstance(text, str) else text
    return ALGORITHMS[algorithm](data).hexdigest()


def compute(algorithm: str, username: str, realm: str, password: str, method: str, uri: str, nonce: str,
            *, qop: str | None = None, nc: str = "00000001", cnonce: str = "", body: bytes = b"") -> str:
    """The response value (RFC 7616 §3.4.1, with the RFC 2617 no-qop form)."""
    upper = algorithm.upper()
    sess = upper.endswith("-SESS")
    base = upper[:-5] if sess else upper
    if base not in ALGORITHMS:
        raise DigestError(f"unsupported algorithm {algorithm}")
    ha1 = _h(base, f"{username}:{realm}:{password}")
    if sess:
        ha1 = _h(base, f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}"
    if qop == "auth-int":
        a2 += ":" + _h(base, body)
    ha2 = _h(base, a2)
    if qop in ("auth", "auth-int"):
        return _h(base, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(base, f"{ha1}:{nonce}:{ha2}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(challenge: Challenge, username: str, password: str, method: str, uri: str,
                  body: bytes = b"", nc: int = 1, cnonce: str | None = None) -> str:
    """The Authorization / Proxy-Authorization value answering `challenge`."""
    params = challenge.params
    qops = challenge.qops
    qop = "auth" if "auth" in qops else ("auth-int" if "auth-int" in qops else None)
    if qops and qop is None:
        raise DigestError(f"unsupported qop {params.get('qop')}")
    cnonce = cnonce or secrets.token_hex(8)
    nc_text = f"{nc:08x}"
    response = compute(challenge.algorithm, username, params["realm"], password, method, uri,
                       params["nonce"], qop=qop, nc=nc_text, cnonce=cnonce, body=body)
    parts = [f"username={_quote(username)}", f"realm={_quote(params['realm'])}",
             f"nonce={_quote(params['nonce'])}", f"uri={_quote(uri)}", f"response={_quote(response)}",
             f"algorithm={challenge.algorithm}"]
    if qop:
        parts += [f"qop={qop}", f"nc={nc_text}", f"cnonce={_quote(cnonce)}"]
    if "opaque" in params:
        parts.append(f"opaque={_quote(params['opaque'])}")
    return "Digest " + ", ".join(parts)


def authorize(request: Request, response: Response, username: str, password: str) -> Request:
    """A copy of `request` answering `response`'s challenge: CSeq + 1, new branch, credentials added."""
    from um.sip.transaction import new_branch

    challenge = choose(parse_challenges(response))
    header = "Authorization" if response.status == 401 else "Proxy-Authorization"
    items: list[tuple[str, str]] = []
    for name, value in request.headers.items:
        if name == "CSeq":
            number, _, method = value.partition(" ")
            value = f"{int(number) + 1} {method}"
        elif name == "Via" and not any(n == "Via" for n, _ in items):
            value = re.sub(r"branch=[^;,\s]+", f"branch={new_branch()}", value)
        elif name == header:
            continue
        items.append((name, value))
    items.append((header, authorization(challenge, username, password, request.method, request.uri,
                                        request.body)))
    return Request(request.method, request.uri, Headers(items), request.body)
