"""One answered call of the worker (`Call`): its dialog, media session and script.

`Call` implements um.worker.menus.MenuIO (play, collect digits, record,
check a PIN, hang up) for the scripts, negotiates and renegotiates the
media, and ends idempotently whoever hangs up. The SIP side (answers, BYE)
is the handler's (um.worker.handler).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from um.sip.dialog import Dialog
from um.sip.headers import parse_addresses
from um.sip.message import Request
from um.sip.stream import Peer
from um.worker import menus, sdp
from um.worker.context import WorkerContext
from um.worker.g711 import PCMU
from um.worker.media import MediaSession, Recorder
from um.worker.store import Message, Recording
from um.worker.transport import IceTransport

if TYPE_CHECKING:
    from um.worker.handler import WorkerCalls

log = Logger(namespace="umedge.worker")
URGENT_PRIORITIES = frozenset({"urgent", "emergency"})  # Priority header values that make a message urgent


def address_parts(value: str | None) -> tuple[str | None, str | None, str]:
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
    """One answered call: its dialog, media session and script (implements um.worker.menus.MenuIO)."""

    def __init__(self, context: WorkerContext, handler: WorkerCalls, service: Any, slot: Any, dialog: Dialog,
                 invite: Request, peer: Peer, kind: str, mailbox: str | None, secure_media: bool) -> None:
        self.context, self.handler, self.service, self.slot = context, handler, service, slot
        self.dialog, self.invite, self.peer = dialog, invite, peer
        self.kind, self.mailbox, self.secure_media = kind, mailbox, secure_media
        caller, _, display = address_parts(invite.headers.get("From"))
        self.caller = caller or ""
        try:
            self.caller_uri = str(parse_addresses(invite.headers.get("From") or "")[0].uri)
        except (ValueError, IndexError):
            self.caller_uri = self.caller
        self.caller_name = display
        # RFC 3261 §20.26: a gateway or PBX marks an urgent call; its message is urgent (MWI, email importance).
        self.urgent = (invite.headers.get("Priority") or "").strip().lower() in URGENT_PRIORITIES
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
        self._recording: asyncio.Future[None] | None = None  # done once the message is stored (or dropped)
        self._script: asyncio.Task[Any] | None = None
        self._ack_timer: asyncio.TimerHandle | None = None
        self.started = time.time()
        self.message: Message | None = None
        self.language = "en"  # the dial plan's (prompts)
        self.attendant: Any = None  # the auto attendant this call reached (um.worker.attendant)
        self.early = False  # the attendant runs in early media (the gateway takes no REFER)
        self._early_final: asyncio.Future[tuple[int, str] | None] | None = None
        self._notify: asyncio.Future[int] | None = None

    # --- setup ------------------------------------------------------------------------------
    async def negotiate(self, offer: sdp.Session) -> str:
        context, settings = self.context, self.context.settings
        ice_offered = any(m.attr("ice-ufrag") for m in offer.media) or offer.attr("ice-ufrag") is not None
        use_ice = ice_offered and settings.media_via_edge
        remote_ice = None
        mux = False
        for offered in offer.media:
            if offered.kind == "audio" and offered.port:
                remote_ice = sdp._ice(offered, offer) if use_ice else None
                mux = offered.has("rtcp-mux")  # RTCP on the RTP port only when offered (RFC 5761)
                break
        # Answerers are controlled (RFC 8445 §6.1.1), unless the offerer is an ICE-lite agent.
        transport = await context.open_transport(remote_ice, controlling=bool(remote_ice and remote_ice.lite),
                                                 rtcp_mux=mux)
        try:
            ice = transport.params if isinstance(transport, IceTransport) else None
            self.local_media = sdp.LocalMedia(transport.local[0], transport.local[1], settings.codecs, ice,
                                              rtcp_port=transport.rtcp_port)
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
        if negotiated.dtmf_pt is None:
            from um.worker.goertzel import InbandDetector

            media.inband = InbandDetector(negotiated.codec)
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
        if not self.ended and self.dialog.state in ("early", "confirmed") and self._script is not None:
            self.dialog.state = "confirmed"  # answered after early media (an attendant's voicemail)
        if self._script is None and not self.ended:
            self.dialog.state = "confirmed"
            self._script = asyncio.ensure_future(self._run())

    def wait_for_ack(self) -> None:
        self._ack_timer = asyncio.get_event_loop().call_later(
            self.context.settings.ack_timeout, lambda: asyncio.ensure_future(self.end("no-ack", send_bye=True)))

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

    def remote_bye(self) -> asyncio.Future[None]:
        """The caller hung up. Done once a message being recorded is stored: only then is the BYE answered."""
        stored = self._recording if self._recording is not None else asyncio.get_event_loop().create_future()
        if self._recording is None:
            stored.set_result(None)
        self._hang_up_remote()
        return stored

    def _hang_up_remote(self) -> None:
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
        if self.media is None or self.ended:
            return None, "bye"
        store = self.context.store
        self._recording = asyncio.get_event_loop().create_future()
        try:
            return await self._record(mailbox, store.start(mailbox, self.codec, caller=self.caller_uri,
                                                           caller_name=self.caller_name, call_id=self.dialog.call_id,
                                                           urgent=self.urgent))
        finally:
            if not self._recording.done():
                self._recording.set_result(None)

    async def _record(self, mailbox: str, recording: Recording) -> tuple[Message | None, str]:
        media, settings = self.media, self.context.settings
        assert media is not None  # checked by record(), nothing awaited since
        recorder = Recorder(recording.write, self.codec, int(settings.max_message_seconds * 8000),
                            settings.silence_timeout)
        reason, keep = await self._run_recorder(media, recorder)
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

    async def _run_recorder(self, media: MediaSession, recorder: Recorder) -> tuple[str, int]:
        """Feed the call's audio to `recorder` until '#', silence, the limit, hang-up or shutdown: why it stopped,
        and how many samples to keep (after silence, half a second after the last sound)."""
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
        keep = min(recorder.samples, recorder.last_loud + 4000) if reason == "silence" else recorder.samples
        return reason, keep

    async def capture(self, max_seconds: float) -> bytes | None:
        """Record audio into memory (a greeting) until '#', silence, the limit or hang-up; None if nothing loud."""
        media, settings = self.media, self.context.settings
        if media is None or self.ended:
            return None
        chunks: list[bytes] = []
        recorder = Recorder(chunks.append, self.codec, int(max_seconds * 8000), settings.silence_timeout or 5.0)
        _, keep = await self._run_recorder(media, recorder)
        if recorder.loud_packets == 0 or keep < 8000:
            return None
        return b"".join(chunks)[:keep]

    async def verify_pin(self, mailbox: str, pin: str) -> str:
        result = await asyncio.get_event_loop().run_in_executor(None, self.context.pins.verify, mailbox, pin)
        if result == "ok":
            self.context.counters["subscriber_logins"] += 1
        return result

    async def hangup(self) -> None:
        if self._early_final is not None and not self._early_final.done():
            self._early_final.set_result((480, ""))  # not answered yet: the INVITE's final answer, no BYE
            self.ended = True
        await self.end("worker", send_bye=True)

    # --- auto attendant: early media, transfers ------------------------------------------------
    def start_early(self) -> asyncio.Future[tuple[int, str] | None]:
        """Run the script now, before the answer; the future is the INVITE's final answer (None: 200)."""
        self._early_final = asyncio.get_event_loop().create_future()
        self.dialog.state = "early"
        self._script = asyncio.ensure_future(self._run())
        return self._early_final

    def answer_now(self) -> None:
        if self._early_final is not None and not self._early_final.done():
            self._early_final.set_result(None)
            self.early = False

    async def transfer(self, target: str, timeout: float = 8.0) -> bool:
        """Early: a 302 to `target`. Answered: REFER, then wait for the NOTIFY saying how it went."""
        if self.ended:
            return False
        if self._early_final is not None and not self._early_final.done():
            self._early_final.set_result((302, target))
            self.ended = True
            self.end_reason = "redirected"
            return True
        self._notify = asyncio.get_event_loop().create_future()
        self.handler.send_refer(self, target)
        try:
            finished, _ = await asyncio.wait([self._notify, self._hangup], timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
        finally:
            notify, self._notify = self._notify, None
        status = notify.result() if notify in finished else 0
        self.log("transfer to {target}: {outcome}", target=target,
                 outcome=f"NOTIFY {status}" if status else "no final NOTIFY")
        if 200 <= status < 300:
            self.end_reason = "transferred"
            await self.end("transferred", send_bye=True)
            return True
        return False

    def notified(self, event: str, body: bytes) -> None:
        """A NOTIFY of the REFER's implicit subscription: its message/sipfrag status line."""
        line = body.decode("utf-8", "replace").strip().splitlines()[:1]
        parts = line[0].split() if line else []
        if event.split(";")[0].strip().lower() != "refer" or len(parts) < 2 or not parts[1].isdigit():
            return
        status = int(parts[1])
        if status >= 200 and self._notify is not None and not self._notify.done():
            self._notify.set_result(status)

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
                await menus.take_message(self, self.mailbox, context.prompts, self.language)
            elif self.kind == "attendant":
                from um.worker.attendant import run_attendant

                await run_attendant(self, context)
            else:
                await menus.subscriber_access(self, context.prompts, self.language, context.mailbox_access(),
                                              self.mailbox, self.caller)
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
        if self._early_final is not None and not self._early_final.done():
            self._early_final.set_result((480, ""))  # ended before the attendant chose: refuse the INVITE
            first = False
        self.end_reason = self.end_reason or reason
        if send_bye and first and self.dialog.state != "terminated":
            try:
                self.handler.send_bye(self)
            except Exception:  # noqa: BLE001 - a dead connection must not skip the cleanup below
                log.failure("call {call_id}: BYE not sent", call_id=self.dialog.call_id)
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


__all__ = ["Call", "address_parts"]
