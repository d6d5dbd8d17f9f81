"""The UM worker's SIP side: it answers the calls on the worker slots (UAS) and places calls (UAC).

`WorkerCalls.handle(service, slot, request, peer)` is what the mailbox
service (um.mailbox) hands INVITE, ACK, BYE, CANCEL, UPDATE and INFO of its
worker slots to. A new INVITE gets 100 Trying at once, then (once the media
transport is ready: a port, or an allocation on the edge) a 200 with the SDP
answer; after the ACK the call runs its script (um.worker.dialogs): voicemail
for the called mailbox, or subscriber access for an access number. The
dialog stays in the slot's `calls` for as long as the call lives, so a
recycle waits for it.

Re-INVITE and UPDATE renegotiate (hold: sendonly/inactive/c=0.0.0.0; a new
address; no SDP is a session refresh answered with the current SDP). BYE
ends a call either way. SIP INFO with application/dtmf-relay carries digits
too.

Lync's offers (um.worker.multipart, [MS-SIPRE] 3.15.4.1): an INVITE with a multipart/alternative
body (ICEv6 part with ms-proxy-2007fallback first, ICEv19/MS-ICE2 part last) is answered from the
last part the worker can do, with a single application/sdp. An offer whose only ICE is the legacy
ICEv6 gets 488 with a Warning (399) when the worker needs ICE (media via the edge); with direct
media the worker runs no ICE and answers its c=/m= address.

`OutboundCall` is the UAC used by play-on-phone: INVITE through a gateway,
ACK, play, BYE.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from um.sip.dialog import Dialog, DialogError, dialog_key
from um.sip.headers import parse_addresses
from um.sip.message import Headers, Request, Response, make_response, new_tag
from um.sip.parser import StreamParser
from um.sip.stream import Peer
from um.sip.transaction import make_request, new_branch
from um.worker import dialogs, multipart, sdp
from um.worker.g711 import PCMA, PCMU
from um.worker.media import MediaClock, MediaSession, Recorder
from um.worker.pins import PinPolicy, PinStore
from um.worker.prompts import Prompts
from um.worker.store import Message, VoicemailStore
from um.worker.tokens import MediaToken, TokenSource
from um.worker.transport import DirectTransport, IceTransport, MediaTransport, PortRange, RelayTransport

log = Logger(namespace="umedge.worker")
SERVER = "umedge/0.1"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
ACCEPT = "application/sdp, multipart/alternative"  # Lync's ICEv6/ICEv19 alternatives: um.worker.multipart
ACK_TIMEOUT = 32.0


@dataclass
class WorkerSettings:
    host: str                          # the address the worker's SIP and direct RTP use
    advertise: str                     # what SDP and Contact name
    state_dir: str
    certs_dir: str
    node_name: str
    domain: str
    rtp_port_min: int = 1024
    rtp_port_max: int = 65535
    media_via_edge: bool = False
    edge_mras: tuple[str, int] | None = None
    edge_https: tuple[str, int] | None = None
    edge_server_name: str | None = None
    greeting_dir: str = ""
    prompt_dir: str = ""
    max_message_seconds: float = 300.0
    min_message_seconds: float = 1.0
    silence_timeout: float = 5.0
    jitter_buffer_ms: int = 60
    media_timeout: float = 30.0
    pin_policy: PinPolicy = field(default_factory=PinPolicy)
    outbound_gateway: tuple[str, int] | None = None
    codecs: tuple[str, ...] = (PCMU, PCMA)

    @property
    def media_identity(self) -> str:
        return f"sip:umworker-{self.node_name}@{self.domain}"

    @classmethod
    def from_config(cls, config: Any) -> WorkerSettings:
        node, w, edge, auth = config.node, config.worker, config.edge, config.auth
        host = node.listen_address
        advertise = host
        if host in ("0.0.0.0", "::"):
            try:
                advertise = socket.gethostbyname(node.fqdn)
            except OSError:
                advertise = "127.0.0.1"
        edge_host = edge.listen_address if edge.listen_address not in ("0.0.0.0", "::") else "127.0.0.1"
        mras = _hostport(w.edge_mras) if w.edge_mras else (edge_host, auth.mras_tls_port)
        https = _hostport(w.edge_https) if w.edge_https else (edge_host, auth.https_port)
        gateway = _hostport(w.outbound_gateway) if w.outbound_gateway else _first_gateway(config)
        return cls(host=host, advertise=advertise, state_dir=node.state_dir, certs_dir=node.certs_dir,
                   node_name=node.name, domain=node.domain, rtp_port_min=w.rtp_port_min, rtp_port_max=w.rtp_port_max,
                   media_via_edge=w.media_via_edge, edge_mras=mras, edge_https=https,
                   greeting_dir=str(Path(node.state_dir) / (w.greeting_dir or "greetings")),
                   prompt_dir=str(Path(node.state_dir) / w.prompt_dir) if w.prompt_dir else "", max_message_seconds=float(w.max_message_seconds),
                   min_message_seconds=float(w.min_message_seconds), silence_timeout=float(w.silence_timeout),
                   jitter_buffer_ms=int(w.jitter_buffer_ms), media_timeout=float(w.media_timeout),
                   pin_policy=PinPolicy(min_length=w.pin_min_length, max_failures=w.pin_max_failures),
                   outbound_gateway=gateway)


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _first_gateway(config: Any) -> tuple[str, int] | None:
    import ipaddress

    for gateway in getattr(config.callrouter, "gateways", ()):
        try:
            network = ipaddress.ip_network(gateway.address, strict=False)
        except ValueError:
            return gateway.address, 5060
        if network.num_addresses == 1:
            return str(network.network_address), 5060
    return None


class LiveDirectory:
    """The worker's Directory, rebuilt when the config changes (SIGHUP) or the directory file does."""

    def __init__(self, config_source: Any) -> None:
        self._source = config_source  # () -> the current config
        self._seen: tuple[int, float] | None = None
        self._directory: Directory | None = None

    def _current(self) -> Directory:
        config = self._source()
        path = getattr(getattr(config, "callrouter", None), "directory_file", "")
        try:
            mtime = Path(path).stat().st_mtime if path else 0.0
        except OSError:
            mtime = -1.0
        key = (id(config), mtime)
        if self._directory is None or key != self._seen:
            self._directory, self._seen = Directory(config), key
        return self._directory

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current(), name)


class Directory:
    """What the worker needs of the UM directory: dial plans, hunt groups, mailboxes."""

    def __init__(self, config: Any | None) -> None:
        from um.directory import Directory as UmDirectory
        from um.directory import load_file

        self.plans: dict[str, Any] = {}
        self.hunt: dict[str, str] = {}
        self.directory = UmDirectory()
        if config is None:
            return
        cr = config.callrouter
        mailboxes = list(getattr(cr, "mailboxes", ()))
        servers = list(getattr(cr, "mailbox_servers", ()))
        if getattr(cr, "directory_file", ""):
            try:
                more, more_servers = load_file(cr.directory_file)
                mailboxes += more
                servers += more_servers
            except Exception as error:  # noqa: BLE001
                log.warn("worker: directory file not loaded: {error}", error=error)
        self.plans = {p.name: p for p in getattr(cr, "dial_plans", ())}
        self.hunt = {g.pilot: g.dial_plan for g in getattr(cr, "hunt_groups", ())}
        self.directory = UmDirectory(self.plans, tuple(mailboxes), {s.name: s for s in servers})

    def plan_for(self, pilot: str | None) -> Any:
        name = self.hunt.get(pilot or "")
        if name in self.plans:
            return self.plans[name]
        for plan in self.plans.values():
            if pilot in plan.access_numbers:
                return plan
        return next(iter(self.plans.values()), None)

    def mailbox(self, plan: Any, user: str | None, host: str | None = None) -> str | None:
        if plan is None or not user:
            return None
        found = self.directory.find(plan, user, host)
        return found.extension if found is not None else None

    def known(self, extension: str) -> bool:
        return any(self.mailbox(plan, extension) for plan in self.plans.values())


class WorkerContext:
    """What every call of the worker shares: store, PINs, prompts, tokens, ports, the media clock."""

    def __init__(self, settings: WorkerSettings, config: Any | None = None,
                 config_source: Any = None) -> None:
        self.settings = settings
        self.store = VoicemailStore(settings.state_dir)
        self.pins = PinStore(settings.state_dir, settings.pin_policy)
        self.prompts = Prompts(settings.prompt_dir or None, settings.greeting_dir or None)
        self.ports = PortRange(settings.rtp_port_min, settings.rtp_port_max)
        self.clock = MediaClock()
        self.directory: Any = LiveDirectory(config_source) if config_source is not None else Directory(config)
        self.tokens = TokenSource(settings.certs_dir, settings.node_name, settings.edge_mras, settings.edge_https,
                                  server_hostname=settings.edge_server_name)
        self.counters = {"calls": 0, "answered": 0, "rejected": 0, "messages": 0, "messages_discarded": 0,
                         "subscriber_logins": 0, "relay_calls": 0, "ice_calls": 0, "direct_calls": 0,
                         "srtp_calls": 0, "outbound_calls": 0}
        self.calls: dict[tuple[str, str, str | None], Call] = {}
        self.finished: list[dict[str, Any]] = []  # media stats of the last calls (bounded)

    def start(self) -> None:
        removed = self.store.recover()
        if removed:
            log.info("voicemail store: removed {n} incomplete file(s) a crash left: {files}", n=len(removed),
                     files=", ".join(removed[:5]))
        self.clock.start()

    async def media_token(self) -> MediaToken:
        return await self.tokens.get(self.settings.media_identity)

    async def open_transport(self, remote_ice: sdp.IceParams | None, controlling: bool = False) -> MediaTransport:
        s = self.settings
        if not s.media_via_edge:
            self.counters["direct_calls"] += 1
            return await DirectTransport(self.ports, s.host, s.advertise).open()
        token = await self.media_token()
        if remote_ice is not None:
            self.counters["ice_calls"] += 1
            return await IceTransport(self.ports, s.host, token.relay, token.username, token.password,
                                      controlling).open()
        self.counters["relay_calls"] += 1
        return await RelayTransport(self.ports, s.host, token.relay, token.username, token.password).open()

    def remember(self, stats: dict[str, Any]) -> None:
        self.finished.append(stats)
        del self.finished[:-1000]

    def status(self) -> dict[str, Any]:
        return {"counters": dict(self.counters), "active_calls": len(self.calls),
                "tokens": dict(self.tokens.counters), "late_ticks": self.clock.late_ticks,
                "calls": [call.describe() for call in list(self.calls.values())[:200]],
                "recent": self.finished[-20:]}

    async def stop(self, timeout: float = 2.5) -> None:
        """Stop every call: recordings in progress are stored (whole), media closed."""
        calls = list(self.calls.values())
        await asyncio.gather(*(call.end("shutdown", send_bye=True) for call in calls), return_exceptions=True)
        scripts = [c._script for c in calls if c._script is not None and not c._script.done()]
        if scripts:
            await asyncio.wait(scripts, timeout=timeout)
        await asyncio.gather(*(call.end("shutdown") for call in calls), return_exceptions=True)
        self.clock.stop()
        await self.tokens.close()


def _user(value: str | None) -> tuple[str | None, str | None, str]:
    """(user, host, display) of a From/To/Diversion value."""
    if not value:
        return None, None, ""
    try:
        address = parse_addresses(value)[0]
    except (ValueError, IndexError):
        return None, None, ""
    uri = address.uri
    user = getattr(uri, "user", None) or getattr(uri, "number", None)
    return (user.split(";")[0] if user else None), getattr(uri, "host", None), (address.display or "").strip('"')


class Call:
    """One answered call: its dialog, media session and script (implements um.worker.dialogs.CallIO)."""

    def __init__(self, context: WorkerContext, handler: WorkerCalls, service: Any, slot: Any, dialog: Dialog,
                 invite: Request, peer: Peer, kind: str, mailbox: str | None, secure_media: bool) -> None:
        self.context, self.handler, self.service, self.slot = context, handler, service, slot
        self.dialog, self.invite, self.peer = dialog, invite, peer
        self.kind, self.mailbox, self.secure_media = kind, mailbox, secure_media
        caller, _, display = _user(invite.headers.get("From"))
        self.caller = caller or ""
        try:
            self.caller_uri = str(parse_addresses(invite.headers.get("From") or "")[0].uri)
        except (ValueError, IndexError):
            self.caller_uri = self.caller
        self.caller_name = display
        self.media: MediaSession | None = None
        self.local_sdp = ""
        self.sdp_version = 1
        self.session_id = secrets.randbelow(2**31)
        self.local_media: sdp.LocalMedia | None = None
        self.ended = False
        self.end_reason = ""
        self.codec = PCMU
        self.digits: asyncio.Queue[str] = asyncio.Queue()
        self._hangup = asyncio.get_event_loop().create_future()
        self._record_stop: asyncio.Future[str] | None = None
        self._script: asyncio.Task[Any] | None = None
        self._ack_timer: asyncio.TimerHandle | None = None
        self.started = time.time()
        self.message: Message | None = None

    # --- setup ------------------------------------------------------------------------------
    async def negotiate(self, offer: sdp.Session) -> str:
        context, settings = self.context, self.context.settings
        ice_offered = any(m.attr("ice-ufrag") for m in offer.media) or offer.attr("ice-ufrag") is not None
        use_ice = ice_offered and settings.media_via_edge
        remote_ice = None
        if use_ice:
            for media in offer.media:
                if media.kind == "audio" and media.port:
                    remote_ice = sdp._ice(media, offer)
                    break
        # Answerers are controlled (RFC 8445 §6.1.1), unless the offerer is an ICE-lite agent.
        transport = await context.open_transport(remote_ice, controlling=bool(remote_ice and remote_ice.lite))
        try:
            ice = transport.params if isinstance(transport, IceTransport) else None
            self.local_media = sdp.LocalMedia(transport.local[0], transport.local[1], settings.codecs, ice)
            text, negotiated = sdp.answer(offer, self.local_media, require_srtp=self.secure_media,
                                          use_ice=use_ice, session_id=self.session_id, version=self.sdp_version)
            if isinstance(transport, IceTransport) and negotiated.remote_ice is not None:
                transport.start(negotiated.remote_ice)
            else:
                await transport.set_remote(negotiated.remote_rtp, negotiated.remote_rtcp)
        except BaseException:
            await transport.close()
            raise
        media = MediaSession(transport, negotiated, context.clock,
                             jitter_depth=max(1, settings.jitter_buffer_ms // negotiated.ptime),
                             media_timeout=settings.media_timeout, cname=f"umworker@{settings.node_name}")
        media.on_digit = self._digit
        media.on_media_end = self._media_end
        media.on_record_stop = self._stop_recording
        if media.srtp is not None:
            context.counters["srtp_calls"] += 1
        self.media, self.codec, self.local_sdp = media, negotiated.codec, text
        return text

    async def renegotiate(self, body: bytes) -> tuple[int, str, str]:
        """A re-INVITE/UPDATE offer: (status, reason, answer SDP)."""
        media, local = self.media, self.local_media
        if media is None or local is None:
            return 491, "Request Pending", ""
        if not body:
            return 200, "OK", self.local_sdp  # a session refresh
        try:
            offer = sdp.parse(body)
            self.sdp_version += 1
            text, negotiated = sdp.answer(offer, local, require_srtp=self.secure_media,
                                          use_ice=media.negotiated.remote_ice is not None,
                                          session_id=self.session_id, version=self.sdp_version)
        except sdp.SdpError as error:
            return error.status, error.reason, ""
        old = media.negotiated
        if negotiated.local_crypto is not None and old.local_crypto is not None and \
                negotiated.remote_crypto is not None and old.remote_crypto is not None and \
                negotiated.remote_crypto.key == old.remote_crypto.key:
            fresh = negotiated.local_crypto.line()
            negotiated.local_crypto = old.local_crypto  # same keys: keep our SRTP context and key
            text = text.replace(f"a=crypto:{fresh}", f"a=crypto:{old.local_crypto.line()}")
        if (negotiated.remote_rtp, negotiated.remote_rtcp) != (old.remote_rtp, old.remote_rtcp) and \
                negotiated.remote_rtp[1] and negotiated.remote_rtp[0] not in ("0.0.0.0", "::") and \
                not isinstance(media.transport, IceTransport):
            await media.transport.set_remote(negotiated.remote_rtp, negotiated.remote_rtcp)
        if negotiated.local_crypto is not old.local_crypto and negotiated.local_crypto is not None:
            from um.worker.srtp import SrtpContext

            media.srtp = SrtpContext(negotiated.local_crypto, negotiated.remote_crypto)  # type: ignore[arg-type]
        media.update(negotiated)
        self.codec = negotiated.codec
        self.local_sdp = text
        log.info("call {call_id}: media now {direction} ({codec})", call_id=self.dialog.call_id,
                 direction=negotiated.direction, codec=negotiated.codec)
        return 200, "OK", text

    # --- events from SIP and media -----------------------------------------------------------
    def acked(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None
        if self._script is None and not self.ended:
            self.dialog.state = "confirmed"
            self._script = asyncio.ensure_future(self._run())

    def wait_for_ack(self) -> None:
        self._ack_timer = asyncio.get_event_loop().call_later(
            ACK_TIMEOUT, lambda: asyncio.ensure_future(self.end("no-ack", send_bye=True)))

    def _digit(self, digit: str) -> None:
        self.digits.put_nowait(digit)
        media = self.media
        if media is not None and self._barge_in and media.is_playing:
            media.stop_playing()
        if digit == "#" and self._record_stop is not None and not self._record_stop.done():
            self._record_stop.set_result("hash")

    _barge_in = False

    def _media_end(self, reason: str) -> None:
        log.info("call {call_id}: end of media ({reason})", call_id=self.dialog.call_id, reason=reason)
        if reason == "media-timeout":
            asyncio.ensure_future(self.end(reason, send_bye=True))
        elif self._record_stop is not None and not self._record_stop.done():
            self._record_stop.set_result(reason)

    def _stop_recording(self, reason: str) -> None:
        if self._record_stop is not None and not self._record_stop.done():
            self._record_stop.set_result(reason)

    def remote_bye(self) -> None:
        self.ended = True
        self.end_reason = self.end_reason or "bye"
        if not self._hangup.done():
            self._hangup.set_result("bye")
        if self._record_stop is not None and not self._record_stop.done():
            self._record_stop.set_result("bye")
        if self.media is not None:
            self.media.stop_playing()
        if self._script is None:
            asyncio.ensure_future(self.end("bye"))

    # --- CallIO ------------------------------------------------------------------------------
    async def play(self, audio: bytes, barge_in: bool = False) -> bool:
        media = self.media
        if media is None or self.ended:
            return False
        if barge_in and not self.digits.empty():
            return False  # type-ahead: the caller already answered
        self._barge_in = barge_in
        try:
            done = media.play(audio)
            finished, _ = await asyncio.wait([done, self._hangup], return_when=asyncio.FIRST_COMPLETED)
            return done in finished and done.result()
        finally:
            self._barge_in = False

    async def collect(self, max_digits: int, timeout: float, terminator: str = "#") -> str | None:
        digits = ""
        while len(digits) < max_digits:
            getter = asyncio.ensure_future(self.digits.get())
            finished, _ = await asyncio.wait([getter, self._hangup], timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
            if getter not in finished:
                getter.cancel()
                if self.ended:
                    return None
                return digits  # the caller stopped typing
            digit = getter.result()
            if digit == terminator:
                return digits
            digits += digit
        return digits

    async def record(self, mailbox: str) -> tuple[Message | None, str]:
        media, settings, store = self.media, self.context.settings, self.context.store
        if media is None or self.ended:
            return None, "bye"
        recording = store.start(mailbox, self.codec, caller=self.caller_uri, caller_name=self.caller_name,
                                call_id=self.dialog.call_id)
        recorder = Recorder(recording.write, self.codec, int(settings.max_message_seconds * 8000),
                            settings.silence_timeout)
        self._record_stop = asyncio.get_event_loop().create_future()
        while not self.digits.empty():  # digits typed during the greeting are not "#" to stop recording
            self.digits.get_nowait()
        media.recorder = recorder
        try:
            reason = await self._record_stop
        except asyncio.CancelledError:
            reason = "shutdown"
        media.flush()
        media.recorder = None
        self._record_stop = None
        keep = recorder.samples
        if reason == "silence":
            keep = min(recorder.samples, recorder.last_loud + 4000)  # half a second after the last sound
        if keep < settings.min_message_seconds * 8000 or recorder.loud_packets == 0:
            recording.abort()
            self.context.counters["messages_discarded"] += 1
            return None, reason
        try:
            if reason == "shutdown":
                message = recording.commit(reason, keep)  # the loop is stopping: no thread
            else:
                message = await asyncio.get_event_loop().run_in_executor(None, recording.commit, reason, keep)
        except OSError as error:
            log.error("voicemail for {mailbox} not stored: {error}", mailbox=mailbox, error=error)
            return None, reason
        self.context.counters["messages"] += 1
        self.message = message
        return message, reason

    async def verify_pin(self, mailbox: str, pin: str) -> str:
        result = await asyncio.get_event_loop().run_in_executor(None, self.context.pins.verify, mailbox, pin)
        if result == "ok":
            self.context.counters["subscriber_logins"] += 1
        return result

    async def hangup(self) -> None:
        await self.end("worker", send_bye=True)

    def log(self, text: str, **fields: Any) -> None:
        log.info("call {call_id}: " + text, call_id=self.dialog.call_id, **fields)

    # --- the script ---------------------------------------------------------------------------
    async def _run(self) -> None:
        context = self.context
        try:
            transport = self.media.transport if self.media is not None else None
            if isinstance(transport, IceTransport):
                await asyncio.wait([transport.connected, self._hangup], timeout=10,
                                   return_when=asyncio.FIRST_COMPLETED)
                if not (transport.connected.done() and transport.connected.result()):
                    if not self.ended:
                        log.warn("call {call_id}: ICE did not connect", call_id=self.dialog.call_id)
                        self.end_reason = "ice-failed"
                    return
            if self.kind == "voicemail":
                assert self.mailbox is not None
                await dialogs.take_message(self, self.mailbox, context.prompts)
            else:
                store = context.store

                def audio(message: Message, codec: str) -> bytes:
                    return store.audio(message).as_g711(codec)

                await dialogs.subscriber_access(
                    self, context.prompts, mailbox=self.mailbox, known=context.directory.known,
                    messages=store.messages, audio=audio, mark_read=store.mark_read,
                    max_attempts=context.settings.pin_policy.max_failures)
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001
            log.failure("call {call_id}: script failed", call_id=self.dialog.call_id)
        finally:
            await self.end(self.end_reason or "done", send_bye=not self.ended)

    async def end(self, reason: str, send_bye: bool = False) -> None:
        """End the call (idempotent): BYE if we hang up, stop recording (kept), close media, free the slot."""
        first = not self.ended
        self.ended = True
        self.end_reason = self.end_reason or reason
        if send_bye and first and self.dialog.state != "terminated":
            self.handler.send_bye(self)
        if not self._hangup.done():
            self._hangup.set_result(reason)
        if self._record_stop is not None and not self._record_stop.done():
            self._record_stop.set_result(reason)
            return  # the script stores the message, then comes back here
        script = self._script
        if script is not None and not script.done() and script is not asyncio.current_task():
            if reason == "shutdown":
                script.cancel()
            return  # the script ends itself (it sees `ended`) and comes back here
        if self.dialog.state == "terminated" and self.media is None:
            return
        self.dialog.state = "terminated"
        if self._ack_timer is not None:
            self._ack_timer.cancel()
        media, self.media = self.media, None
        if media is not None:
            self.context.remember({"call_id": self.dialog.call_id, "mailbox": self.mailbox, "kind": self.kind,
                                   "reason": self.end_reason, **media.stats()})
            await media.close()
        self.handler.forget(self)

    def describe(self) -> dict[str, Any]:
        media = self.media
        return {"call_id": self.dialog.call_id, "kind": self.kind, "mailbox": self.mailbox, "caller": self.caller,
                "slot": getattr(self.slot, "number", None), "age": round(time.time() - self.started, 1),
                "media": media.stats() if media is not None else None}


class WorkerCalls:
    """The worker slots' call handler (see um.mailbox.MailboxService.call_handler)."""

    METHODS = frozenset(("INVITE", "ACK", "BYE", "CANCEL", "UPDATE", "INFO"))

    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        self._pending: dict[tuple[str, str | None, int | None], asyncio.Task[Response]] = {}

    # --- entry point ------------------------------------------------------------------------
    def handle(self, service: Any, slot: Any, request: Request, peer: Peer) -> Any:
        method = request.method
        key = dialog_key(request)
        dialog = slot.calls.get(key)
        call: Call | None = dialog.data.get("call") if dialog is not None else None  # type: ignore[assignment]
        if method == "ACK":
            if call is not None:
                call.acked()
            return None
        if method == "CANCEL":
            return self._cancel(request)
        if method == "INVITE" and key[1] is None:
            if slot.state == "idle":
                return make_response(request, 480, "Temporarily Unavailable - worker slot not running",
                                     [("Retry-After", "5")])
            if getattr(service, "draining", False):
                return make_response(request, 503, "Service Unavailable - node draining", [("Retry-After", "30")])
            return self._new_call(service, slot, request, peer)
        if dialog is None or call is None:
            return make_response(request, 481, None, [("Server", SERVER)])
        try:
            dialog.check_request(request)
        except DialogError as error:
            return make_response(request, error.status, error.reason)
        if method == "BYE":
            call.remote_bye()
            return make_response(request, 200, None, [("Server", SERVER)])
        if method in ("INVITE", "UPDATE"):
            return self._deferred(self._reoffer(call, request))
        if method == "INFO":
            return self._info(call, request)
        return make_response(request, 405, None, [("Allow", ALLOW)])

    @staticmethod
    def _deferred(coro: Any) -> defer.Deferred[Response]:
        return defer.Deferred.fromFuture(asyncio.ensure_future(coro))

    def _contact(self, slot: Any, secure: bool) -> str:
        scheme = "sips" if secure else "sip"
        port = slot.tls_port if secure else slot.tcp_port
        params = "" if secure else ";transport=tcp"
        return f"<{scheme}:worker{slot.number}@{_host(self.context.settings.advertise)}:{port}{params}>"

    # --- a new call ---------------------------------------------------------------------------
    def _new_call(self, service: Any, slot: Any, request: Request, peer: Peer) -> Any:
        context = self.context
        context.counters["calls"] += 1
        accept = request.headers.get("Accept")
        if accept is not None and accept.strip() and "application/sdp" not in accept.lower():
            return make_response(request, 406, None, [("Accept", "application/sdp")])
        content_type = multipart.media_type(request.headers.get("Content-Type") or "")
        if not request.body or content_type not in ("application/sdp",) + multipart.MULTIPART_TYPES:
            return make_response(request, 488, "Not Acceptable Here - an SDP offer is required",
                                 [("Accept", ACCEPT)])
        directory = context.directory
        ruri = request.ruri
        pilot = getattr(ruri, "user", None)
        pilot = pilot.split(";")[0] if pilot else None
        plan = directory.plan_for(pilot)
        from um.callrouter import diverting_user

        user, host = diverting_user(request, pilot)
        if user is None:
            user, host, _ = _user(request.headers.get("To"))
        access = plan is not None and (
            (user is not None and user in plan.access_numbers) or
            ((user is None or user == pilot) and pilot in plan.access_numbers))
        secure_media = plan is not None and plan.voip_security == "secured"
        if plan is not None and plan.voip_security != "unsecured" and peer.transport != "tls":
            context.counters["rejected"] += 1
            return make_response(request, 403, f"Forbidden - dial plan {plan.name} requires MTLS")
        if access:
            kind = "subscriber"
            caller, _, _ = _user(request.headers.get("From"))
            mailbox = directory.mailbox(plan, caller) if caller else None
        else:
            kind = "voicemail"
            mailbox = directory.mailbox(plan, user, host)
            if mailbox is None:
                context.counters["rejected"] += 1
                return make_response(request, 404, "Not Found - no mailbox for this extension")
        try:
            offer = self._offer(request)
        except multipart.MultipartError as error:
            return make_response(request, 400, f"Bad Request - {error}")
        except sdp.SdpError as error:
            if error.warning:
                context.counters["rejected"] += 1
                log.info("call {call_id}: refused with {status}: {why}", call_id=request.headers.get("Call-ID"),
                         status=error.status, why=error.warning)
            return make_response(request, error.status, error.reason, self._warning(error))
        try:
            dialog = Dialog.uas(request, new_tag())
        except (DialogError, ValueError) as error:
            return make_response(request, 400, f"Bad Request - {error}")
        dialog.secure = peer.transport == "tls"
        dialog.data["connection"] = peer.connection
        call = Call(context, self, service, slot, dialog, request, peer, kind, mailbox, secure_media)
        dialog.data["call"] = call
        slot.calls[dialog.id] = dialog  # the slot counts the call from now on (recycles wait for it)
        slot.calls_total += 1
        context.calls[dialog.id] = call
        pending_key = self._pending_key(request)
        task = asyncio.ensure_future(self._answer(call, request, offer, pending_key))
        self._pending[pending_key] = task
        return defer.Deferred.fromFuture(task)

    def _acceptable(self) -> tuple[str, ...]:
        """The ICE flavours the worker answers (um.worker.sdp.ice_flavour): via the edge it runs RFC 8445
        ICE (MS-ICE2 / ICEv19) or none; the legacy ICEv6 only where it uses no ICE at all (direct media)."""
        return ("ice19", "none") if self.context.settings.media_via_edge else ("ice19", "none", "ice6")

    def _offer(self, request: Request) -> sdp.Session:
        """The offer to answer: the body, or the chosen part of Lync's multipart/alternative body."""
        content_type = request.headers.get("Content-Type") or ""
        acceptable = self._acceptable()
        if multipart.is_multipart(content_type):
            return multipart.choose(content_type, request.body, acceptable).offer
        offer = sdp.parse(request.body)
        if sdp.ice_flavour(offer) not in acceptable:
            raise sdp.SdpError(488, "Not Acceptable Here - ICE version not supported", warning=sdp.ICE6_WARNING)
        return offer

    def _warning(self, error: sdp.SdpError) -> list[tuple[str, str]]:
        if not error.warning:
            return []
        text = error.warning.replace('"', "'")
        return [("Warning", f'399 {_host(self.context.settings.advertise)} "{text}"'), ("Accept", ACCEPT)]

    @staticmethod
    def _pending_key(request: Request) -> tuple[str, str | None, int | None]:
        return (request.headers.get("Call-ID") or "", request.from_addr.tag if request.from_addr else None,
                request.cseq_number)

    async def _answer(self, call: Call, request: Request, offer: sdp.Session,
                      pending_key: tuple[str, str | None, int | None]) -> Response:
        context = self.context
        try:
            answer = await asyncio.wait_for(call.negotiate(offer), 15)
        except asyncio.CancelledError:
            await call.end("cancelled")
            return make_response(request, 487, None, [("Server", SERVER)], to_tag=call.dialog.local_tag)
        except sdp.SdpError as error:
            context.counters["rejected"] += 1
            await call.end("sdp")
            return make_response(request, error.status, error.reason, [("Server", SERVER)],
                                 to_tag=call.dialog.local_tag)
        except Exception as error:  # noqa: BLE001 - no port, no token, no allocation
            context.counters["rejected"] += 1
            why = ("no answer within 15 s from the edge (token service or TURN relay unreachable)"
                   if isinstance(error, asyncio.TimeoutError) else str(error) or repr(error))
            log.error("call {call_id}: media setup failed, call refused with 503: {why}",
                      call_id=call.dialog.call_id, why=why)
            await call.end("media-setup")
            return make_response(request, 503, "Service Unavailable - media setup failed",
                                 [("Retry-After", "10"), ("Server", SERVER)], to_tag=call.dialog.local_tag)
        finally:
            self._pending.pop(pending_key, None)
        context.counters["answered"] += 1
        media = call.media
        log.info("call {call_id}: {kind} for {mailbox} from {caller}; media {transport} {local} <-> {remote} "
                 "{codec}{srtp}", call_id=call.dialog.call_id, kind=call.kind, mailbox=call.mailbox or "-",
                 caller=call.caller or "-", transport=media.transport.kind if media else "-",
                 local=media.transport.local if media else "-",
                 remote=media.negotiated.remote_rtp if media else "-", codec=call.codec,
                 srtp=" SRTP" if media is not None and media.srtp is not None else "")
        call.wait_for_ack()
        return make_response(request, 200, None, [
            ("Contact", self._contact(call.slot, call.dialog.secure)), ("Allow", ALLOW),
            ("Supported", "timer"), ("Content-Type", "application/sdp"), ("Server", SERVER)],
            answer.encode(), to_tag=call.dialog.local_tag)

    def _cancel(self, request: Request) -> Response:
        task = self._pending.get(self._pending_key(request))
        if task is None or task.done():
            return make_response(request, 481, None, [("Server", SERVER)])
        task.cancel()
        return make_response(request, 200, None, [("Server", SERVER)])

    # --- in-dialog ------------------------------------------------------------------------------
    async def _reoffer(self, call: Call, request: Request) -> Response:
        content_type = multipart.media_type(request.headers.get("Content-Type") or "")
        body = request.body if content_type == "application/sdp" else b""
        if request.body and content_type in multipart.MULTIPART_TYPES:
            try:
                body = multipart.choose(request.headers.get("Content-Type") or "", request.body,
                                        self._acceptable()).body
            except (multipart.MultipartError, sdp.SdpError) as error:
                refusal = error if isinstance(error, sdp.SdpError) else sdp.SdpError(400, f"Bad Request - {error}")
                return make_response(request, refusal.status, refusal.reason,
                                     self._warning(refusal) + [("Server", SERVER)])
        if not body and request.method == "UPDATE":  # a session refresh (RFC 4028) without an offer
            return make_response(request, 200, None, [("Contact", self._contact(call.slot, call.dialog.secure)),
                                                      ("Server", SERVER)])
        status, reason, text = await call.renegotiate(body)
        extra = [("Contact", self._contact(call.slot, call.dialog.secure)), ("Server", SERVER)]
        expires = request.headers.get("Session-Expires")
        if expires:
            extra.append(("Session-Expires", expires.split(";")[0].strip() + ";refresher=uac"))
            extra.append(("Require", "timer"))
        if status != 200:
            return make_response(request, status, reason, extra)
        return make_response(request, 200, None, extra + [("Content-Type", "application/sdp")], text.encode())

    def _info(self, call: Call, request: Request) -> Response:
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type == "application/dtmf-relay":
            for line in request.body.decode("utf-8", "replace").splitlines():
                name, _, value = line.partition("=")
                if name.strip().lower() == "signal" and value.strip():
                    call._digit(value.strip()[0])
            return make_response(request, 200, None, [("Server", SERVER)])
        if content_type == "application/dtmf":
            text = request.body.decode("utf-8", "replace").strip()
            if text:
                call._digit(text[0])
            return make_response(request, 200, None, [("Server", SERVER)])
        return make_response(request, 415, None, [("Accept", "application/dtmf-relay")])

    def send_bye(self, call: Call) -> None:
        dialog = call.dialog
        connection = dialog.data.get("connection")
        if connection is None:
            return
        slot = call.slot
        port = slot.tls_port if dialog.secure else slot.tcp_port
        bye = dialog.create_request("BYE", f"{_host(self.context.settings.advertise)}:{port}",
                                    "TLS" if dialog.secure else "TCP")
        bye.headers.add("Server", SERVER)
        connection.send_request(bye)  # type: ignore[attr-defined]

    def forget(self, call: Call) -> None:
        dialog = call.dialog
        self.context.calls.pop(dialog.id, None)
        slot, service = call.slot, call.service
        if slot.calls.pop(dialog.id, None) is not None and service is not None:
            service._maybe_exit(slot)

    def end_all(self, slot: Any, reason: str) -> None:
        """The drain timeout of a recycle: end the slot's calls (messages kept), BYE each."""
        for dialog in list(slot.calls.values()):
            call = dialog.data.get("call")
            if isinstance(call, Call):
                asyncio.ensure_future(call.end(reason, send_bye=True))


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# --- outbound calls (play-on-phone) ---------------------------------------------------------------
class _UacProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = StreamParser()
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.requests: asyncio.Queue[Request] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_event_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            message = event.message
            if isinstance(message, Response):
                self.responses.put_nowait(message)
            elif isinstance(message, Request):
                if message.method in ("BYE", "OPTIONS", "INFO", "UPDATE"):
                    self.transport.write(make_response(message, 200, None, [("Server", SERVER)]).encode())  # type: ignore
                self.requests.put_nowait(message)
            elif event.error is not None and event.error.fatal and self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def play_on_phone(context: WorkerContext, number: str, message: Message, *,
                        gateway: tuple[str, int] | None = None, answer_timeout: float = 30.0) -> dict[str, Any]:
    """Call `number` through a gateway (SIP over TCP) and play `message` to whoever answers."""
    settings = context.settings
    target = gateway or settings.outbound_gateway
    if target is None:
        raise ValueError("no gateway to call through ([worker] outbound_gateway)")
    loop = asyncio.get_event_loop()
    transport_, protocol = await asyncio.wait_for(
        loop.create_connection(_UacProtocol, target[0], target[1]), 5)
    local = transport_.get_extra_info("sockname")
    via_host = f"{_host(local[0])}:{local[1]}"
    media_transport = await context.open_transport(None)
    local_media = sdp.LocalMedia(media_transport.local[0], media_transport.local[1], settings.codecs)
    context.counters["outbound_calls"] += 1
    offer_text = sdp.offer(local_media, rtcp_mux=False)
    uri = f"sip:{number}@{_host(target[0])}:{target[1]};transport=tcp"
    invite = make_request("INVITE", uri, via_host=via_host, transport="TCP",
                          from_uri=f"sip:umworker@{settings.domain}", to_uri=f"sip:{number}@{_host(target[0])}",
                          extra=[("Contact", f"<sip:umworker@{via_host};transport=tcp>"),
                                 ("Content-Type", "application/sdp"), ("Allow", ALLOW), ("Server", SERVER)],
                          body=offer_text.encode())
    result: dict[str, Any] = {"number": number, "message": message.id, "gateway": f"{target[0]}:{target[1]}"}
    media: MediaSession | None = None
    try:
        protocol.transport.write(invite.encode())
        deadline = loop.time() + answer_timeout
        while True:
            response = await asyncio.wait_for(protocol.responses.get(), max(0.1, deadline - loop.time()))
            if response.status >= 200:
                break
        result["status"] = response.status
        if response.status >= 300:
            protocol.transport.write(_ack(invite, response, uri).encode())
            result["played"] = False
            return result
        answer = sdp.parse(response.body)
        negotiated = sdp.accept_answer(answer, local_media)
        await media_transport.set_remote(negotiated.remote_rtp, negotiated.remote_rtcp)
        media = MediaSession(media_transport, negotiated, context.clock, cname=f"umworker@{settings.node_name}")
        contact = parse_addresses(response.headers.get("Contact") or f"<{uri}>")[0].uri
        remote_target = str(contact)
        protocol.transport.write(_ack(invite, response, remote_target).encode())
        audio = context.store.audio(message).as_g711(negotiated.codec)
        play = media.play(context.prompts.get("message", negotiated.codec) + audio)
        bye_received = asyncio.ensure_future(_wait_bye(protocol))
        finished, _ = await asyncio.wait([play, bye_received], return_when=asyncio.FIRST_COMPLETED)
        result["played"] = play in finished and play.result()
        if bye_received not in finished:
            bye_received.cancel()
            bye = _in_dialog(invite, response, remote_target, "BYE", 2, via_host)
            protocol.transport.write(bye.encode())
            try:
                await asyncio.wait_for(protocol.responses.get(), 5)
            except TimeoutError:
                pass
        result["ended_by"] = "gateway" if bye_received in finished else "worker"
        return result
    finally:
        if media is not None:
            await media.close()
        else:
            await media_transport.close()
        protocol.transport.close()


async def _wait_bye(protocol: _UacProtocol) -> None:
    while True:
        request = await protocol.requests.get()
        if request.method == "BYE":
            return


def _ack(invite: Request, response: Response, uri: str) -> Request:
    headers = invite.headers
    items = [("Via", f"{(headers.get('Via') or '').split(';branch=')[0]};branch={new_branch()}"),
             ("Max-Forwards", "70"), ("From", headers.get("From") or ""), ("To", response.headers.get("To") or ""),
             ("Call-ID", headers.get("Call-ID") or ""), ("CSeq", f"{(invite.headers.get('CSeq') or '1').split()[0]} ACK")]
    return Request("ACK", uri, Headers(items))


def _in_dialog(invite: Request, response: Response, uri: str, method: str, cseq: int, via_host: str) -> Request:
    headers = invite.headers
    items = [("Via", f"SIP/2.0/TCP {via_host};branch={new_branch()}"), ("Max-Forwards", "70"),
             ("From", headers.get("From") or ""), ("To", response.headers.get("To") or ""),
             ("Call-ID", headers.get("Call-ID") or ""), ("CSeq", f"{cseq} {method}")]
    return Request(method, uri, Headers(items))


__all__ = ["WorkerSettings", "WorkerContext", "WorkerCalls", "Call", "play_on_phone"]
