"""UM web services on `[web] http_port`: play-on-phone, PIN reset, voicemail list, worker status (HTTPS only).

    POST /v1/play-on-phone  {"number": "+15551234", "message": "<id>", "gateway"?: "HOST:PORT", "wait"?: bool}
        the worker calls `number` through the outbound gateway and plays the message;
        202 {"status": "calling", ...} at once, or with "wait": true 200 with the outcome  (scope play)
    POST /v1/pin-reset      {"mailbox": "1001", "pin"?: "246813"}
        a new PIN (the one given, or a generated one, returned) and the lockout cleared  (scope pin-reset)
    GET  /v1/voicemail[?mailbox=EXT]   the messages (id, mailbox, caller, time, duration, codec)  (scope voicemail)
    GET  /v1/worker                    calls in progress (callers' numbers), media and token counters  (admin)
    PUT  /v1/mailboxes/EXT/greeting[?kind=away]   body: the audio (WAV, MP3, Ogg, FLAC, AIFF, AU, M4A), at
        most 8 MiB and 120 s; stored as the mailbox's personal (or away) greeting in G.711 mu-law, replacing
        the old one atomically; undecodable audio gets 400 with the decoder's reason, the old one kept
        (scope voicemail)

The web port speaks plain HTTP and HTTPS (node certificate, optional client
certificate) on the same socket: the first byte of a connection (0x16, a TLS
handshake) says which. The status page answers on both; the UM web services
only over HTTPS (403 over plain HTTP), for

- a pool-CA client certificate, or `Authorization: Bearer KEY` with a key of
  `[auth] api_keys`: admin, any mailbox and every service;
- `Authorization: Bearer JWT`, a web token of um.webtokens (`umedge token issue
  --web`): its mailbox (`sub`) only, its scopes only (403 otherwise, with the
  rule in "rule"). Play-on-phone for a token goes through the configured
  outbound gateway only (a "gateway" field is refused) and only to numbers the
  mailbox's dial plan allows (`allowed_numbers`, by default its extensions).

Whoever asks, a mailbox gets at most `[worker] play_on_phone_per_hour`
play-on-phone calls per hour (429 with Retry-After beyond).
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import re
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IProtocol, IProtocolFactory
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import resource, server

from um.apikeys import ApiKeys
from um.jsonweb import QuietSite, identify, json_body, media_type
from um.netguard import settle_on_request
from um.webtokens import Grant, WebTokens
from um.worker.pins import PinPolicyError
from um.worker.store import StoreError, VoicemailStore, check_mailbox

log = Logger(namespace="umedge.worker.web")
MAX_BODY = 8 * 1024
MAX_GREETING_BYTES = 8 * 1024 * 1024
MAX_GREETING_SECONDS = 120.0
GREETING_PATH = re.compile(rb"^/v1/mailboxes/([^/]{1,64})/greeting$")


class _Sniffer(Protocol):
    """Reads the first byte, then hands the connection to the TLS or the plain factory's protocol.

    It stays the transport's protocol and relays to the chosen one, so it
    works whatever the transport is (a TCP connection, or a ConnectionGuard's
    wrapper in front of it).
    """

    def __init__(self, plain: IProtocolFactory, tls: IProtocolFactory | None, addr: Any) -> None:
        self.plain, self.tls, self.addr = plain, tls, addr
        self.chosen: IProtocol | None = None

    def dataReceived(self, data: bytes) -> None:
        chosen = self.chosen
        if chosen is None:
            factory = self.tls if (data[:1] == b"\x16" and self.tls is not None) else self.plain
            chosen = factory.buildProtocol(self.addr)
            transport = self.transport
            assert transport is not None  # data came in on it
            if chosen is None:
                transport.loseConnection()
                return
            self.chosen = chosen
            chosen.makeConnection(transport)
        chosen.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        chosen, self.chosen = self.chosen, None
        if chosen is not None:
            chosen.connectionLost(reason)


class SniffingFactory(Factory):
    """HTTP and HTTPS on one port; the listener puts its ConnectionGuard around this factory."""

    noisy = False

    def __init__(self, plain: IProtocolFactory, tls: IProtocolFactory | None) -> None:
        self.plain, self.tls = plain, tls

    def buildProtocol(self, addr: Any) -> Protocol:
        return _Sniffer(self.plain, self.tls, addr)

    def doStart(self) -> None:
        self.plain.doStart()
        if self.tls is not None:
            self.tls.doStart()
        super().doStart()

    def doStop(self) -> None:
        self.plain.doStop()
        if self.tls is not None:
            self.tls.doStop()
        super().doStop()


class PlayLimiter:
    """Play-on-phone calls per mailbox in a sliding hour."""

    WINDOW = 3600.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.calls: dict[str, collections.deque[float]] = {}

    def take(self, mailbox: str, per_hour: int) -> float | None:
        """Count one call of `mailbox`; None when allowed, else the seconds until the next one is."""
        now = self.clock()
        calls = self.calls.setdefault(mailbox, collections.deque())
        while calls and calls[0] <= now - self.WINDOW:
            calls.popleft()
        if len(calls) >= per_hour:
            return calls[len(calls) - per_hour] + self.WINDOW - now
        calls.append(now)
        for other in [m for m, c in self.calls.items() if not c]:  # forget idle mailboxes
            del self.calls[other]
        return None


def refused(request: server.Request, rule: str, error: str, status: int = 403, **extra: Any) -> bytes:
    """A refusal naming the rule that refused it."""
    return json_body(request, status, {"error": error, "rule": rule, **extra})


class UmWebServices(resource.Resource):
    """/v1/play-on-phone, /v1/pin-reset, /v1/voicemail, /v1/worker; everything else goes to `fallback`."""

    isLeaf = True
    PATHS = (b"/v1/play-on-phone", b"/v1/pin-reset", b"/v1/voicemail", b"/v1/worker")
    METHODS = {b"/v1/play-on-phone": b"POST", b"/v1/pin-reset": b"POST", b"/v1/voicemail": b"GET",
               b"/v1/worker": b"GET"}
    SCOPES = {b"/v1/play-on-phone": "play", b"/v1/pin-reset": "pin-reset", b"/v1/voicemail": "voicemail",
              b"/v1/worker": "admin"}

    def __init__(self, fallback: resource.Resource, worker: Callable[[], Any], keys: ApiKeys,
                 state_dir: str, play_per_hour: Callable[[], int] = lambda: 10) -> None:
        super().__init__()
        self.fallback, self.worker, self.keys = fallback, worker, keys
        self.store = VoicemailStore(state_dir)
        self.tokens = WebTokens(state_dir)
        self.play_per_hour = play_per_hour
        self.limiter = PlayLimiter()

    def render(self, request: server.Request) -> Any:
        path = request.path
        greeting = GREETING_PATH.match(path)
        if greeting is not None:
            return self._greeting(request, greeting.group(1).decode("ascii", "replace"))
        if path not in self.PATHS:
            return self.fallback.render(request)
        grant, refusal = self._admit(request, self.METHODS[path])
        if grant is None:
            return refusal
        scope = self.SCOPES[path]
        if not grant.may(scope):
            return refused(request, "scope", f"this needs the {scope!r} scope; the token has "
                                             f"{' '.join(sorted(grant.scopes))!r}")
        service = self.worker()
        if path == b"/v1/worker":
            if service is None:
                return json_body(request, 503, {"error": "the worker role does not run in this process"})
            return json_body(request, 200, service.context.status())
        if path == b"/v1/voicemail":
            return self._voicemail(request, grant)
        body, problem = self._body(request)
        if problem is not None:
            return json_body(request, *problem)
        if service is None:
            return json_body(request, 503, {"error": "the worker role does not run in this process"})
        if path == b"/v1/pin-reset":
            return self._pin_reset(request, service, body, grant)
        return self._play_on_phone(request, service, body, grant)

    def _greeting(self, request: server.Request, mailbox: str) -> bytes:
        """PUT a mailbox's greeting: decoded (PyAV), converted to 8 kHz mu-law, stored atomically."""
        from um.worker import g711, speech, wav
        from um.worker.menus import save_greeting

        grant, refusal = self._admit(request, b"PUT")
        if grant is None:
            return refusal
        if not grant.may("voicemail"):
            return refused(request, "scope", "this needs the 'voicemail' scope")
        try:
            check_mailbox(mailbox)
        except StoreError as error:
            return json_body(request, 400, {"error": str(error), "field": "mailbox"})
        if not grant.covers(mailbox):
            return self._other_mailbox(request, grant, mailbox)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.uri.decode("latin-1")).query)
        kind = next(iter(query.get("kind") or []), "personal")
        if kind not in ("personal", "away"):
            return json_body(request, 400, {"error": 'kind: allowed "personal" or "away"', "field": "kind"})
        service = self.worker()
        directory = service.context.directory if service is not None else None
        if directory is not None and directory.plans and not directory.known(mailbox):
            return json_body(request, 404, {"error": f"no mailbox {mailbox}", "field": "mailbox"})
        data = request.content.read(MAX_GREETING_BYTES + 1) if request.content is not None else b""
        if len(data) > MAX_GREETING_BYTES:
            return json_body(request, 413, {"error": f"greeting larger than {MAX_GREETING_BYTES} bytes"})
        if not data:
            return json_body(request, 400, {"error": "the body is the greeting's audio; it is empty"})
        try:
            try:
                audio = wav.decode(data).as_g711(g711.PCMU)  # 8 kHz mono WAV: as it is
            except wav.WavError:
                audio = g711.pcm16_to_g711(speech.to_pcm8k(data, MAX_GREETING_SECONDS), g711.PCMU)
        except speech.SpeechError as error:
            return json_body(request, 400, {"error": f"greeting not stored, the old one is kept: {error}"})
        if len(audio) > MAX_GREETING_SECONDS * 8000:
            return json_body(request, 400, {"error": f"greeting not stored: longer than {MAX_GREETING_SECONDS:.0f} s"})
        prompts = service.context.prompts if service is not None else None
        path = prompts.greeting_path(mailbox, kind == "away") if prompts is not None else None
        if path is None:
            path = self.store.root.parent / "greetings" / f"{mailbox}{'.away' if kind == 'away' else ''}.wav"
        save_greeting(path, g711.PCMU, audio)
        log.info("{kind} greeting of mailbox {mailbox} uploaded by {who} ({seconds:.1f}s)", kind=kind,
                 mailbox=mailbox, who=grant.requester, seconds=len(audio) / 8000)
        return json_body(request, 200, {"mailbox": mailbox, "kind": kind, "seconds": round(len(audio) / 8000, 2),
                                        "codec": g711.PCMU})

    def _admit(self, request: server.Request, method: bytes) -> tuple[Grant | None, bytes]:
        """HTTPS, a valid token and the path's one method: the token's grant, or None and the refusal sent."""
        if not request.isSecure():
            return None, refused(request, "https", "UM web services need HTTPS (same port, TLS)")
        grant, status, error = self._authenticate(request)
        if grant is None:
            if status == 401:
                request.setHeader(b"www-authenticate", b'Bearer realm="umedge"')
            return None, json_body(request, status, {"error": error})
        if request.method != method:
            request.setHeader(b"allow", method)
            return None, json_body(request, 405, {"error": "method not allowed"})
        return grant, b""

    def _authenticate(self, request: server.Request) -> tuple[Grant | None, int, str]:
        peer = request.getClientAddress()
        return identify(request, self.keys, f"{getattr(peer, 'host', '-')}:{getattr(peer, 'port', '-')}",
                        self.tokens)

    @staticmethod
    def _body(request: server.Request) -> tuple[dict[str, Any], tuple[int, Any] | None]:
        if media_type(request) != "application/json":
            return {}, (415, {"error": "Content-Type must be application/json", "field": "body"})
        data = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(data) > MAX_BODY:
            return {}, (413, {"error": f"body larger than {MAX_BODY} bytes", "field": "body"})
        try:
            body = json.loads(data or b"{}")
        except (ValueError, UnicodeDecodeError):
            return {}, (400, {"error": "body is not valid JSON", "field": "body"})
        if not isinstance(body, dict):
            return {}, (400, {"error": "body must be a JSON object", "field": "body"})
        return body, None

    @staticmethod
    def _other_mailbox(request: server.Request, grant: Grant, mailbox: str | None) -> bytes:
        what = f"mailbox {mailbox}" if mailbox is not None else "every mailbox"
        return refused(request, "mailbox", f"the token is for mailbox {grant.mailbox}, not {what}")

    def _voicemail(self, request: server.Request, grant: Grant) -> bytes:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.uri.decode("latin-1")).query)
        mailbox = next(iter(query.get("mailbox") or []), None)
        if mailbox is None and not grant.admin:
            mailbox = grant.mailbox  # a token lists its own mailbox
        if not grant.covers(mailbox):
            return self._other_mailbox(request, grant, mailbox)
        try:
            messages = self.store.messages(mailbox)
        except StoreError as error:
            return json_body(request, 400, {"error": str(error), "field": "mailbox"})
        return json_body(request, 200, [m.as_dict() for m in messages])

    def _pin_reset(self, request: server.Request, service: Any, body: dict[str, Any], grant: Grant) -> bytes:
        unknown = sorted(set(body) - {"mailbox", "pin"})
        if unknown:
            return json_body(request, 400, {"error": f"unknown field {unknown[0]!r}; allowed: mailbox, pin",
                                        "field": unknown[0]})
        mailbox, pin = body.get("mailbox"), body.get("pin")
        try:
            check_mailbox(mailbox)  # type: ignore[arg-type]
        except StoreError as error:
            return json_body(request, 400, {"error": str(error), "field": "mailbox"})
        if not grant.covers(mailbox):
            return self._other_mailbox(request, grant, mailbox)
        context = service.context
        if context.directory.plans and not context.directory.known(mailbox):
            return json_body(request, 404, {"error": f"no mailbox {mailbox}", "field": "mailbox"})
        if pin is not None and not isinstance(pin, str):
            return json_body(request, 400, {"error": "pin must be a string of digits", "field": "pin"})
        try:
            new_pin = context.pins.reset(mailbox, pin)
        except PinPolicyError as error:
            return json_body(request, 400, {"error": str(error), "field": "pin"})
        log.info("PIN of mailbox {mailbox} reset by {who}", mailbox=mailbox, who=grant.requester)
        answer: dict[str, Any] = {"mailbox": mailbox, "locked": False}
        if pin is None:
            answer["pin"] = new_pin  # generated: the caller must learn it
        return json_body(request, 200, answer)

    @staticmethod
    def _dialing_rules(service: Any, mailbox: str, number: str) -> str | None:
        """Why the mailbox's dial plans do not let it have `number` called, or None when one does."""
        directory = service.context.directory
        plans = [plan for plan in directory.plans.values() if directory.mailbox(plan, mailbox) == mailbox]
        if not plans:
            return f"mailbox {mailbox} is in no dial plan, so it has no dialing rules"
        if any(plan.allows(number) for plan in plans):
            return None
        names = ", ".join(plan.name for plan in plans)
        return f"{number} is not allowed by the allowed_numbers of dial plan {names}"

    def _play_on_phone(self, request: server.Request, service: Any, body: dict[str, Any], grant: Grant) -> Any:
        from um.worker.outbound import play_on_phone
        from um.worker.settings import host_port

        unknown = sorted(set(body) - {"number", "message", "gateway", "wait"})
        if unknown:
            return json_body(request, 400, {"error": f"unknown field {unknown[0]!r}; allowed: number, message, "
                                                 "gateway, wait", "field": unknown[0]})
        if body.get("gateway") is not None and not grant.admin:
            return refused(request, "gateway", "only an admin may name a gateway; calls go through the "
                                               "configured outbound gateway", field="gateway")
        number = body.get("number")
        if not isinstance(number, str) or not re.fullmatch(r"\+?[0-9]{1,32}", number):
            return json_body(request, 400, {"error": "number must be digits with an optional '+'", "field": "number"})
        try:
            message = self.store.find(body.get("message"))  # type: ignore[arg-type]
        except StoreError as error:
            return json_body(request, 404 if "no message" in str(error) else 400, {"error": str(error),
                                                                                "field": "message"})
        if not grant.covers(message.mailbox):
            return self._other_mailbox(request, grant, message.mailbox)
        if not grant.admin:
            why = self._dialing_rules(service, message.mailbox, number)
            if why is not None:
                return refused(request, "allowed_numbers", why, field="number")
        gateway = None
        if body.get("gateway") is not None:
            try:
                gateway = host_port(str(body["gateway"]))
            except ValueError:
                return json_body(request, 400, {"error": "gateway must be HOST:PORT", "field": "gateway"})
        per_hour = self.play_per_hour()
        wait = self.limiter.take(message.mailbox, per_hour)
        if wait is not None:
            retry = max(1, math.ceil(wait))
            request.setHeader(b"retry-after", str(retry).encode())
            return refused(request, "play_on_phone_per_hour", f"mailbox {message.mailbox} had {per_hour} "
                           "play-on-phone calls in the last hour", 429, retry_after=retry)
        log.info("play-on-phone: {who} asks to play {message} to {number}", who=grant.requester, message=message.id,
                 number=number)
        task = asyncio.ensure_future(play_on_phone(service.context, number, message, gateway=gateway))
        if not body.get("wait"):
            task.add_done_callback(_report_failure)
            return json_body(request, 202, {"status": "calling", "number": number, "message": message.id})

        def done(result: dict[str, Any]) -> None:
            request.write(json_body(request, 200, {"status": "done", **result}))
            request.finish()

        def failed(failure: Any) -> None:
            request.write(json_body(request, 502, {"status": "failed", "error": failure.getErrorMessage()}))
            request.finish()

        defer.Deferred.fromFuture(task).addCallbacks(done, failed)
        return server.NOT_DONE_YET


def _report_failure(task: asyncio.Future[Any]) -> None:
    """A play-on-phone nobody waits for: its failure goes to the log."""
    if not task.cancelled() and task.exception() is not None:
        log.warn("play-on-phone failed: {e!r}", e=task.exception())


def web_factory(site: server.Site, worker: Callable[[], Any], api_keys: tuple[str, ...], state_dir: str,
                tls_options: Callable[[], Any], play_per_hour: Callable[[], int] = lambda: 10) -> Factory:
    """The web listener: the status site plus the UM web services, HTTP and HTTPS on one port."""
    services = UmWebServices(site.resource, worker, ApiKeys(api_keys), state_dir, play_per_hour)
    combined = QuietSite(services)
    settle_on_request(combined)  # under the listener's guard, a whole request ends the handshake timeout
    try:
        secure: IProtocolFactory | None = TLSMemoryBIOFactory(tls_options(), False, combined)
    except Exception as error:  # noqa: BLE001 - no certificate yet: HTTP only
        log.warn("web: HTTPS not available ({error}); UM web services are off", error=error)
        secure = None
    return SniffingFactory(combined, secure)
