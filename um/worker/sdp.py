"""SDP (RFC 8866) parsing and the RFC 3264 offer/answer the worker needs, sans-I/O.

Audio only: G.711 PCMU and PCMA, telephone-event (RFC 4733), SDES keys
(RFC 4568, RTP/SAVP), ICE attributes (RFC 8839), rtcp-mux (RFC 5761), a=rtcp
(RFC 3605), direction attributes and the RFC 2543 hold (c=0.0.0.0). An
answer keeps the offer's m-lines in order and declines (port 0) what it
cannot take (RFC 3264 §6); no acceptable audio stream is a 488.

Lync's dialect ([MS-SDPEXT], [MS-ICE2]; the multipart offer is um.worker.multipart's):

* ICE flavours (`ice_flavour`): "ice19" is [IETFDRAFT-ICENAT-19]/[MS-ICE2]/RFC 8839 (a=ice-ufrag,
  a=ice-pwd, ``a=candidate:1 1 UDP 2130706431 192.0.2.1 50000 typ host``); "ice6" is the legacy
  [IETFDRAFT-ICENAT-06] form Lync puts in its ms-proxy-2007fallback part
  (``a=candidate:<username> 1 <password> UDP 0.830 192.0.2.1 50000``, no typ, no a=ice-ufrag), which
  the worker cannot run (its checks are not RFC 5389 STUN); "none" has no ICE.
* [MS-ICE2] candidates carry the transports UDP, TCP-ACT and TCP-PASS ([MS-SDPEXT] 3.1.5.22.2:
  no passive TCP host candidates for audio) and typ host/srflx/relay with raddr/rport. All are
  parsed; only UDP candidates are used (the worker's media run over UDP through the edge's relay),
  of component 1 with rtcp-mux, of components 1 (RTP) and 2 (RTCP) without; TCP ones are ignored,
  not refused.
* [MS-SDPEXT] 3.1.5.21.1/.2: a UA without IPv6 "SHOULD ignore an a=candidate attribute containing an
  IPv6 connection-address" but "MUST accept ... an IPv4 connection-address field with an IPv6
  rel-addr"; IPv6 candidates may come in ``a=x-candidate-ipv6`` (same syntax as a=candidate). The
  worker's relay is of the offer's default address family (its c=, um.worker.families): ICE uses the
  a=candidate candidates of that family, so an IPv6-only offer runs ICE over an IPv6 relay and a
  dual-stack one with an IPv4 c= over an IPv4 relay; the others, and a=x-candidate-ipv6
  (`ipv6_candidates`), are parsed and left out.
* RFC 5245 §9.1.2.2: ``a=remote-candidates`` (in the offer that follows a completed ICE) names the
  pairs the offerer selected; parsed (`remote_candidates`), the answer needs nothing from it.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field

from um.worker.g711 import PCMA, PCMU, STATIC_PT

SUPPORTED_PROTOS = ("RTP/AVP", "RTP/AVPF", "RTP/SAVP", "RTP/SAVPF")
SECURE_PROTOS = ("RTP/SAVP", "RTP/SAVPF")
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
REVERSE = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
CRYPTO_SUITES = ("AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32")
DEFAULT_DTMF_PT = 101


class SdpError(ValueError):
    """The SDP cannot be used: `status` is the SIP answer (400 malformed, 488 nothing acceptable)."""

    def __init__(self, status: int, reason: str, warning: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason
        self.warning = warning  # text for a Warning header (RFC 3261 §20.43, code 399), if any


ICE6_WARNING = ("ICE version 6 (draft-ietf-mmusic-ice-06, MS-ICE) is not supported: "
                "offer ICE version 19 (MS-ICE2) or no ICE")


@dataclass
class Media:
    kind: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def attr(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value if value is not None else ""
        return None

    def attrs(self, name: str) -> list[str]:
        return [value or "" for key, value in self.attributes if key == name]

    def has(self, name: str) -> bool:
        return any(key == name for key, _ in self.attributes)

    @property
    def rtpmap(self) -> dict[int, tuple[str, int]]:
        """payload type -> (encoding name upper-cased, clock rate), static types filled in."""
        found: dict[int, tuple[str, int]] = {}
        for value in self.attrs("rtpmap"):
            pt, _, encoding = value.partition(" ")
            parts = encoding.strip().split("/")
            if pt.isdigit() and len(parts) >= 2 and parts[1].isdigit():
                found[int(pt)] = (parts[0].upper(), int(parts[1]))
        for fmt in self.formats:
            if fmt.isdigit() and int(fmt) not in found:
                if int(fmt) == 0:
                    found[0] = (PCMU, 8000)
                elif int(fmt) == 8:
                    found[8] = (PCMA, 8000)
        return found

    @property
    def direction(self) -> str:
        for key, _ in self.attributes:
            if key in DIRECTIONS:
                return key
        return "sendrecv"


@dataclass
class Session:
    origin: str = "- 0 0 IN IP4 0.0.0.0"
    name: str = "-"
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[Media] = field(default_factory=list)

    def attr(self, name: str) -> str | None:
        for key, value in self.attributes:
            if key == name:
                return value if value is not None else ""
        return None


def _address(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(400, f"malformed c= line {value[:80]!r}")
    address = parts[2].split("/")[0]
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        ip = None
    if ip is None or ip.version != (4 if parts[1] == "IP4" else 6):
        # RFC 4566 allows a domain name here; media go to addresses only, so say what is needed.
        raise SdpError(488, f"Not Acceptable Here - c= address is not an {parts[1]} address",
                       warning=f"c= connection address {address[:64]!r} is not an {parts[1]} address literal")
    return str(ip)


def parse(body: bytes | str) -> Session:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    session = Session()
    current: Media | None = None
    seen_v = False
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip("\r")
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(400, f"malformed SDP line {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "v":
            if value.strip() != "0":
                raise SdpError(400, "SDP version must be 0")
            seen_v = True
        elif kind == "o" and current is None:
            session.origin = value
        elif kind == "s" and current is None:
            session.name = value
        elif kind == "c":
            if current is None:
                session.connection = _address(value)
            else:
                current.connection = _address(value)
        elif kind == "m":
            parts = value.split()
            if len(parts) < 3:
                raise SdpError(400, f"malformed m= line {value!r}")
            port_text = parts[1].split("/")[0]
            if not port_text.isdigit() or int(port_text) > 65535:
                raise SdpError(400, f"malformed m= port {parts[1]!r}")
            current = Media(parts[0], int(port_text), parts[2], parts[3:])
            session.media.append(current)
        elif kind == "a":
            name, sep, attr_value = value.partition(":")
            entry = (name.strip(), attr_value.strip() if sep else None)
            (session.attributes if current is None else current.attributes).append(entry)
    if not seen_v:
        raise SdpError(400, "SDP without v=0")
    return session


@dataclass
class Crypto:
    """One a=crypto line (RFC 4568): tag, suite and the inline key||salt (base64)."""

    tag: int
    suite: str
    key: str  # base64 of the 30-byte master key and salt

    def line(self) -> str:
        return f"{self.tag} {self.suite} inline:{self.key}"


def parse_crypto(value: str) -> Crypto | None:
    parts = value.split()
    if len(parts) < 3 or not parts[0].isdigit() or not parts[2].startswith("inline:"):
        return None
    key = parts[2][len("inline:"):].split("|")[0]
    if len(parts) > 3:  # session parameters (UNENCRYPTED_SRTP, KDR...) are not supported
        return None
    return Crypto(int(parts[0]), parts[1].upper(), key)


@dataclass
class IceCandidate:
    foundation: str
    component: int
    transport: str
    priority: int
    host: str
    port: int
    type: str
    related_address: str | None = None
    related_port: int | None = None

    @classmethod
    def parse(cls, value: str) -> IceCandidate:
        bits = value.split()
        if len(bits) < 8 or bits[6] != "typ":
            raise SdpError(400, f"malformed a=candidate {value[:60]!r}")
        candidate = cls(bits[0], int(bits[1]), bits[2].lower(), int(bits[3]), bits[4], int(bits[5]), bits[7])
        rest = bits[8:]
        for index in range(0, len(rest) - 1, 2):
            if rest[index] == "raddr":
                candidate.related_address = rest[index + 1]
            elif rest[index] == "rport":
                candidate.related_port = int(rest[index + 1])
        return candidate

    def line(self) -> str:
        text = (f"{self.foundation} {self.component} {self.transport} {self.priority} {self.host} {self.port} "
                f"typ {self.type}")
        if self.related_address is not None:
            text += f" raddr {self.related_address} rport {self.related_port}"
        return text


@dataclass
class IceParams:
    ufrag: str
    pwd: str
    candidates: list[IceCandidate] = field(default_factory=list)
    lite: bool = False


@dataclass
class Negotiated:
    """What an offer/answer agreed on for the audio stream, from this side's point of view."""

    index: int                      # the m-line index of the audio stream
    payload_type: int               # the audio payload type we send and expect
    codec: str                      # PCMU or PCMA
    dtmf_pt: int | None             # telephone-event payload type, if both take it
    remote_rtp: tuple[str, int]     # where to send RTP (the default candidate)
    remote_rtcp: tuple[str, int]    # where to send RTCP
    rtcp_mux: bool
    direction: str                  # our direction: sendrecv/sendonly/recvonly/inactive
    ptime: int = 20
    local_crypto: Crypto | None = None    # our SDES key (we protect with it)
    remote_crypto: Crypto | None = None   # theirs (we unprotect with it)
    remote_ice: IceParams | None = None

    @property
    def secure(self) -> bool:
        return self.local_crypto is not None

    @property
    def sending(self) -> bool:
        return self.direction in ("sendrecv", "sendonly") and self.remote_rtp[1] != 0 and \
            self.remote_rtp[0] not in ("0.0.0.0", "::")

    @property
    def receiving(self) -> bool:
        return self.direction in ("sendrecv", "recvonly")


@dataclass
class LocalMedia:
    """What this side offers or answers with."""

    address: str
    port: int
    codecs: tuple[str, ...] = (PCMU, PCMA)
    ice: IceParams | None = None
    ptime: int = 20
    rtcp_port: int | None = None  # where our RTCP arrives without rtcp-mux (None: port + 1, RFC 3550 §11)

    @property
    def rtcp(self) -> int:
        return self.rtcp_port if self.rtcp_port is not None else self.port + 1

    def rtcp_line(self) -> str | None:
        """a=rtcp (RFC 3605), only when RTCP is not on port + 1."""
        if self.rtcp == self.port + 1:
            return None
        return f"a=rtcp:{self.rtcp} IN {'IP6' if ':' in self.address else 'IP4'} {self.address}"


def new_crypto(suite: str = CRYPTO_SUITES[0], tag: int = 1) -> Crypto:
    import base64

    return Crypto(tag, suite, base64.b64encode(secrets.token_bytes(30)).decode())


def _dtmf_pt(media: Media) -> int | None:
    for pt, (name, rate) in media.rtpmap.items():
        if name == "TELEPHONE-EVENT" and rate == 8000 and str(pt) in media.formats:
            return pt
    return None


def _is_ipv6(host: str) -> bool:
    return ":" in host


def candidates(media: Media, name: str = "candidate") -> list[IceCandidate]:
    """Every well-formed RFC 8839 / MS-ICE2 candidate of `media` (UDP, TCP-ACT, TCP-PASS...)."""
    found = []
    for value in media.attrs(name):
        try:
            found.append(IceCandidate.parse(value))
        except (SdpError, ValueError, IndexError):
            continue
    return found


def ipv6_candidates(media: Media) -> list[IceCandidate]:
    """The [MS-SDPEXT] a=x-candidate-ipv6 candidates (kept, not used: Lync's c= and relay are IPv4 then)."""
    return candidates(media, "x-candidate-ipv6")


def remote_candidates(media: Media) -> list[tuple[int, str, int]]:
    """a=remote-candidates (RFC 5245 §15.2): (component, address, port) of each selected pair."""
    found = []
    for value in media.attrs("remote-candidates"):
        bits = value.split()
        for index in range(0, len(bits) - 2, 3):
            if bits[index].isdigit() and bits[index + 2].isdigit():
                found.append((int(bits[index]), bits[index + 1], int(bits[index + 2])))
    return found


def ice_flavour(session: Session) -> str:
    """The ICE flavour of an offer: "ice19" (RFC 8839 / MS-ICE2), "ice6" (draft-06 candidates) or "none"."""
    if session.attr("ice-ufrag") is not None or any(m.attr("ice-ufrag") for m in session.media):
        return "ice19"
    for media in session.media:
        for value in media.attrs("candidate"):
            bits = value.split()
            if len(bits) >= 7 and "typ" not in bits:  # <username> <component> <password> UDP <q> <ip> <port>
                return "ice6"
    return "none"


def _ice(media: Media, session: Session) -> IceParams | None:
    ufrag = media.attr("ice-ufrag") or session.attr("ice-ufrag")
    pwd = media.attr("ice-pwd") or session.attr("ice-pwd")
    if not ufrag or not pwd:
        return None
    components = (1,) if media.has("rtcp-mux") else (1, 2)  # RTP, and RTCP unless muxed (RFC 5761)
    # The worker's relay has the family of the default address (c=, um.worker.families) and reaches only
    # peers of that family (RFC 8656 §9.1): candidates of the other family could never pair.
    ipv6 = _is_ipv6(media.connection or session.connection or "")
    candidates_ = [c for c in candidates(media)
                   if c.transport == "udp" and c.component in components and _is_ipv6(c.host) == ipv6]
    return IceParams(ufrag, pwd, candidates_, lite=session.attr("ice-lite") is not None)


def _remote_rtcp(media: Media, address: str, port: int, mux: bool) -> tuple[str, int]:
    if mux:
        return address, port
    value = media.attr("rtcp")
    if value:
        parts = value.split()
        if parts and parts[0].isdigit():
            host = parts[3] if len(parts) >= 4 else address
            return host, int(parts[0])
    return address, port + 1 if port else 0


def answer(offer: Session, local: LocalMedia, *, require_srtp: bool = False, use_ice: bool = False,
           session_id: int | None = None, version: int = 1, hold_answer: bool = True) -> tuple[str, Negotiated]:
    """The SDP answer to `offer` and what it agreed on; SdpError(488) when no audio stream fits.

    `use_ice`: answer with ICE (local.ice) when the offer carries ICE; else the
    answer has no ICE attributes and media go to the offer's c=/m= address.
    """
    chosen: Negotiated | None = None
    lines_per_media: list[list[str]] = []
    problem = "no audio stream offered"
    for index, media in enumerate(offer.media):
        declined = [f"m={media.kind} 0 {media.proto} {' '.join(media.formats) or '0'}"]
        if chosen is not None or media.kind != "audio" or media.port == 0:
            lines_per_media.append(declined)
            continue
        if media.proto.upper() not in SUPPORTED_PROTOS:
            problem = f"transport {media.proto} not supported"
            lines_per_media.append(declined)
            continue
        secure = media.proto.upper() in SECURE_PROTOS
        remote_crypto = None
        if secure:
            for value in media.attrs("crypto"):
                crypto = parse_crypto(value)
                if crypto is not None and crypto.suite in CRYPTO_SUITES:
                    remote_crypto = crypto
                    break
            if remote_crypto is None:
                problem = "no supported a=crypto (AES_CM_128_HMAC_SHA1_80/32 with an inline key)"
                lines_per_media.append(declined)
                continue
        elif require_srtp:
            problem = "this dial plan is secured: SRTP (RTP/SAVP with a=crypto) is required"
            lines_per_media.append(declined)
            continue
        rtpmap = media.rtpmap
        codec_pt = None
        for fmt in media.formats:
            if fmt.isdigit() and int(fmt) in rtpmap:
                name, rate = rtpmap[int(fmt)]
                if name in local.codecs and rate == 8000:
                    codec_pt = (int(fmt), name)
                    break
        if codec_pt is None:
            problem = "no common codec (PCMU or PCMA)"
            lines_per_media.append(declined)
            continue
        address = media.connection or offer.connection
        if address is None:
            raise SdpError(400, "no c= line for the audio stream")
        remote_ice = _ice(media, offer) if use_ice else None
        mux = media.has("rtcp-mux")
        direction = REVERSE[media.direction]
        if address in ("0.0.0.0", "::") and direction in ("sendrecv", "sendonly"):
            direction = "recvonly" if direction == "sendrecv" else "inactive"  # RFC 2543 hold
        ptime_text = media.attr("ptime")
        ptime = int(ptime_text) if ptime_text and ptime_text.isdigit() and 10 <= int(ptime_text) <= 60 else 20
        ptime = 20 if ptime % 10 else ptime
        dtmf_pt = _dtmf_pt(media)
        chosen = Negotiated(index, codec_pt[0], codec_pt[1], dtmf_pt, (address, media.port),
                            _remote_rtcp(media, address, media.port, mux), mux, direction, ptime,
                            new_crypto(remote_crypto.suite, remote_crypto.tag) if remote_crypto else None,
                            remote_crypto, remote_ice)
        formats = [str(codec_pt[0])] + ([str(dtmf_pt)] if dtmf_pt is not None else [])
        lines = [f"m=audio {local.port} {media.proto} {' '.join(formats)}",
                 f"a=rtpmap:{codec_pt[0]} {codec_pt[1]}/8000"]
        if dtmf_pt is not None:
            fmtp = next((v.partition(" ")[2] for v in media.attrs("fmtp") if v.split(" ")[0] == str(dtmf_pt)), "")
            lines += [f"a=rtpmap:{dtmf_pt} telephone-event/8000", f"a=fmtp:{dtmf_pt} {fmtp or '0-15'}"]
        lines.append(f"a=ptime:{ptime}")
        if mux:
            lines.append("a=rtcp-mux")  # only because the offer has it (RFC 5761 §5.1.1)
        elif local.rtcp_line() is not None:
            lines.append(str(local.rtcp_line()))
        if chosen.local_crypto is not None:
            lines.append(f"a=crypto:{chosen.local_crypto.line()}")
        if remote_ice is not None and local.ice is not None:
            lines += [f"a=ice-ufrag:{local.ice.ufrag}", f"a=ice-pwd:{local.ice.pwd}"]
            lines += [f"a=candidate:{c.line()}" for c in local.ice.candidates]
            lines.append("a=end-of-candidates")
        lines.append(f"a={direction}")
        lines_per_media.append(lines)
    if chosen is None:
        raise SdpError(488, f"Not Acceptable Here - {problem}")
    return _session_text(local.address, lines_per_media, session_id, version), chosen


def _session_text(address: str, media_lines: list[list[str]], session_id: int | None, version: int) -> str:
    family = "IP6" if ":" in address else "IP4"
    sid = session_id if session_id is not None else secrets.randbelow(2**31)
    head = ["v=0", f"o=umedge {sid} {version} IN {family} {address}", "s=umedge", f"c=IN {family} {address}",
            "t=0 0"]
    return "\r\n".join(head + [line for lines in media_lines for line in lines]) + "\r\n"


def offer(local: LocalMedia, *, srtp: Crypto | None = None, dtmf_pt: int = DEFAULT_DTMF_PT,
          direction: str = "sendrecv", session_id: int | None = None, version: int = 1, rtcp_mux: bool = True) -> str:
    """An audio offer: the local codecs in preference order, telephone-event, optional SDES and ICE."""
    proto = "RTP/SAVP" if srtp is not None else "RTP/AVP"
    pts = [STATIC_PT[c] for c in local.codecs]
    lines = [f"m=audio {local.port} {proto} {' '.join(str(p) for p in pts)} {dtmf_pt}"]
    lines += [f"a=rtpmap:{STATIC_PT[c]} {c}/8000" for c in local.codecs]
    lines += [f"a=rtpmap:{dtmf_pt} telephone-event/8000", f"a=fmtp:{dtmf_pt} 0-16", f"a=ptime:{local.ptime}"]
    # RFC 5761 §5.1.3: offer rtcp-mux and say where RTCP goes should the answer not take it.
    lines.append(f"a=rtcp:{local.rtcp} IN {'IP6' if ':' in local.address else 'IP4'} {local.address}")
    if rtcp_mux:
        lines.append("a=rtcp-mux")
    if srtp is not None:
        lines.append(f"a=crypto:{srtp.line()}")
    if local.ice is not None:
        lines += [f"a=ice-ufrag:{local.ice.ufrag}", f"a=ice-pwd:{local.ice.pwd}"]
        lines += [f"a=candidate:{c.line()}" for c in local.ice.candidates]
        lines.append("a=end-of-candidates")
    lines.append(f"a={direction}")
    return _session_text(local.address, [lines], session_id, version)


def accept_answer(answer_sdp: Session, local: LocalMedia, local_crypto: Crypto | None = None,
                  use_ice: bool = False) -> Negotiated:
    """What our offer and their answer agreed on (the UAC side of RFC 3264)."""
    for index, media in enumerate(answer_sdp.media):
        if media.kind != "audio" or media.port == 0:
            continue
        rtpmap = media.rtpmap
        codec = None
        for fmt in media.formats:
            if fmt.isdigit() and int(fmt) in rtpmap and rtpmap[int(fmt)][0] in local.codecs:
                codec = (int(fmt), rtpmap[int(fmt)][0])
                break
        if codec is None:
            raise SdpError(488, "the answer has no codec we offered")
        address = media.connection or answer_sdp.connection
        if address is None:
            raise SdpError(400, "no c= line in the answer")
        remote_crypto = None
        if local_crypto is not None:
            remote_crypto = next((c for c in (parse_crypto(v) for v in media.attrs("crypto")) if c), None)
            if remote_crypto is None:
                raise SdpError(488, "the answer to our SRTP offer has no a=crypto")
        mux = media.has("rtcp-mux")
        return Negotiated(index, codec[0], codec[1], _dtmf_pt(media), (address, media.port),
                          _remote_rtcp(media, address, media.port, mux), mux, REVERSE[media.direction],
                          int(media.attr("ptime") or 20), local_crypto, remote_crypto,
                          _ice(media, answer_sdp) if use_ice else None)
    raise SdpError(488, "the answer accepts no audio stream")
