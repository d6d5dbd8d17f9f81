"""The worker slots' SIP request handler (`WorkerCalls`): it answers the calls on the worker slots (UAS).

`WorkerCalls.handle(service, slot, request, peer)` is what the mailbox
service (um.mailbox) hands INVITE, ACK, BYE, CANCEL, UPDATE and INFO of its
worker slots to. A new INVITE gets 100 Trying at once, then (once the media
transport is ready: a port, or an allocation on the edge) a 200 with the SDP
answer; after the ACK the call (um.worker.call) runs its script
(um.worker.menus): voicemail for the called mailbox, or subscriber access
for an access number. The dialog stays in the slot's `calls` for as long as
the call lives, so a recycle waits for it.

Re-INVITE and UPDATE renegotiate (hold: sendonly/inactive/c=0.0.0.0; a new
address; no SDP is a session refresh answered with the current SDP). BYE
ends a call either way. SIP INFO with application/dtmf-relay carries digits
too.

Lync's offers (um.worker.multipart, [MS-SIPRE] 3.15.4.1): an INVITE with a multipart/alternative
body (ICEv6 part with ms-proxy-2007fallback first, ICEv19/MS-ICE2 part last) is answered from the
last part the worker can do, with a single application/sdp. An offer whose only ICE is the legacy
ICEv6 gets 488 with a Warning (399) when the worker needs ICE (media via the edge); with direct
media the worker runs no ICE and answers its c=/m= address.
"""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from um.sip.dialog import Dialog, DialogError, dialog_key
from um.sip.message import Request, Response, make_response, new_tag
from um.sip.stream import Peer
from um.sip.uri import bracket, contact_style, secure_contact
from um.worker import families, multipart, sdp
from um.worker.call import Call, address_parts
from um.worker.context import WorkerContext

log = Logger(namespace="umedge.worker")
SERVER = "umedge/0.1"
ALLOW = "INVITE, ACK, BYE, CANCEL, OPTIONS, UPDATE, INFO"
BYE_STORE_TIMEOUT = 10.0  # seconds a BYE may wait for its message's fsyncs before it is answered anyway
ACCEPT = "application/sdp, multipart/alternative"  # Lync's ICEv6/ICEv19 alternatives: um.worker.multipart


class WorkerCalls:
    """The worker slots' call handler (see um.mailbox.MailboxService.call_handler)."""

    METHODS = frozenset(("INVITE", "ACK", "BYE", "CANCEL", "UPDATE", "INFO", "NOTIFY"))

    def __init__(self, context: WorkerContext) -> None:
        self.context = context
        self._pending: dict[tuple[str, str | None, int | None], asyncio.Task[Response]] = {}

    # --- entry point ------------------------------------------------------------------------
    def handle(self, service: Any, slot: Any, request: Request, peer: Peer) -> Any:
        method = request.method
        key = dialog_key(request)
        dialog = slot.calls.get(key)
        call: Call | None = dialog.data.get("call") if dialog is not None else None
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
            stored = call.remote_bye()
            if stored.done():
                return make_response(request, 200, None, [("Server", SERVER)])
            return self._deferred(self._answer_bye(request, stored))
        if method in ("INVITE", "UPDATE"):
            return self._deferred(self._reoffer(call, request))
        if method == "INFO":
            return self._info(call, request)
        if method == "NOTIFY":  # the progress of an auto attendant's REFER (RFC 3515 §2.4.4, message/sipfrag)
            call.notified(request.headers.get("Event") or "", request.body)
            return make_response(request, 200, None, [("Server", SERVER)])
        return make_response(request, 405, None, [("Allow", ALLOW)])

    @staticmethod
    async def _answer_bye(request: Request, stored: asyncio.Future[None]) -> Response:
        """200 once the caller's message is on disk: a caller told it is saved must find it saved."""
        try:
            await asyncio.wait_for(asyncio.shield(stored), BYE_STORE_TIMEOUT)
        except TimeoutError:
            log.warn("BYE answered before its voicemail was stored ({seconds}s)", seconds=BYE_STORE_TIMEOUT)
        return make_response(request, 200, None, [("Server", SERVER)])

    @staticmethod
    def _deferred(coro: Any) -> defer.Deferred[Response]:
        return defer.Deferred.fromFuture(asyncio.ensure_future(coro))

    def _contact(self, slot: Any, dialog: Dialog) -> str:
        """The slot's URI; over TLS `sips:` or `sip:...;transport=tls`, as the caller's Request-URI was."""
        secure = dialog.secure
        scheme = "sips" if secure else "sip"
        port = slot.tls_port if secure else slot.tcp_port
        params = "" if secure else ";transport=tcp"
        uri = f"<{scheme}:worker{slot.number}@{bracket(self.context.settings.advertise)}:{port}{params}>"
        return secure_contact(uri, str(dialog.data.get("contact_style", "sips")))

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
        calls_from_peer = sum(1 for call in context.calls.values() if call.peer.host == peer.host)
        if calls_from_peer >= context.settings.max_calls_per_source:
            context.counters["rejected"] += 1
            return make_response(request, 503, "Service Unavailable - too many calls from this source",
                                 [("Retry-After", "10")])
        directory = context.directory
        ruri = request.ruri
        pilot = getattr(ruri, "user", None)
        pilot = pilot.split(";")[0] if pilot else None
        plan = directory.plan_for(pilot)
        if plan is None:  # the same answer as the call router's for a pilot no hunt group names
            context.counters["rejected"] += 1
            return make_response(request, 404, "Not Found - no hunt group for this pilot number")
        from um.callrouter import diverting_user

        user, host = diverting_user(request, pilot)
        if user is None:
            user, host, _ = address_parts(request.headers.get("To"))
        access = plan is not None and (
            (user is not None and user in plan.access_numbers) or
            ((user is None or user == pilot) and pilot in plan.access_numbers))
        secure_media = plan is not None and plan.voip_security == "secured"
        if plan is not None and plan.voip_security != "unsecured" and peer.transport != "tls":
            context.counters["rejected"] += 1
            return make_response(request, 403, f"Forbidden - dial plan {plan.name} requires MTLS")
        number = user if user is not None and user in plan.auto_attendant_numbers else (
            pilot if (user is None or user == pilot) and pilot in plan.auto_attendant_numbers else None)
        attendant = directory.attendant(number) if number is not None else None
        if number is not None and attendant is None:
            context.counters["rejected"] += 1
            return make_response(request, 404, "Not Found - no auto attendant is configured for this number")
        if attendant is not None:
            kind, mailbox = "attendant", None
        elif access:
            kind = "subscriber"
            caller, _, _ = address_parts(request.headers.get("From"))
            mailbox = directory.mailbox(plan, caller) if caller else None
        else:
            kind = "voicemail"
            mailbox = directory.mailbox(plan, user, host)
            if mailbox is None:
                context.counters["rejected"] += 1
                return make_response(request, 404, "Not Found - no mailbox for this extension")
        try:
            offer = self._offer(request)
            families.check(offer, context.settings)  # a family the worker's RTP cannot reach: 488
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
        dialog.data["contact_style"] = contact_style(request.ruri)  # sip: + transport=tls answers sip: (RFC 5630)
        dialog.data["connection"] = peer.connection
        call = Call(context, self, service, slot, dialog, request, peer, kind, mailbox, secure_media)
        if attendant is not None:  # a gateway without REFER gets the menu as early media, the transfer as 302
            gateway = service.gateway(peer) if getattr(service, "gateway", None) is not None else None
            call.attendant, call.early = attendant, not getattr(gateway, "refer", True)
        call.language = plan.language
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
        return [("Warning", f'399 {bracket(self.context.settings.advertise)} "{text}"'), ("Accept", ACCEPT)]

    @staticmethod
    def _pending_key(request: Request) -> tuple[str, str | None, int | None]:
        return (request.headers.get("Call-ID") or "", request.from_addr.tag if request.from_addr else None,
                request.cseq_number)

    async def _answer(self, call: Call, request: Request, offer: sdp.Session,
                      pending_key: tuple[str, str | None, int | None]) -> Response:
        context = self.context
        try:
            families.note(offer)  # the relay family this call needs (this task's context only)
            answer = await asyncio.wait_for(call.negotiate(offer), 15)
            if call.early:
                early = await self._early(call, request, answer)
                if early is not None:
                    return early
        except asyncio.CancelledError:
            await call.end("cancelled")
            return make_response(request, 487, None, [("Server", SERVER)], to_tag=call.dialog.local_tag)
        except sdp.SdpError as error:
            context.counters["rejected"] += 1
            await call.end("sdp")
            return make_response(request, error.status, error.reason, [("Server", SERVER), *self._warning(error)],
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
            ("Contact", self._contact(call.slot, call.dialog)), ("Allow", ALLOW),
            ("Supported", "timer"), ("Content-Type", "application/sdp"), ("Server", SERVER)],
            answer.encode(), to_tag=call.dialog.local_tag)

    async def _early(self, call: Call, request: Request, answer: str) -> Response | None:
        """Early media (183 with the answer): the attendant runs before the call is answered; its transfer is
        the INVITE's 302, its failure a 480; None when it answers the call after all (leave a voicemail)."""
        progress = make_response(request, 183, "Session Progress", [
            ("Contact", self._contact(call.slot, call.dialog)), ("Content-Type", "application/sdp"),
            ("Server", SERVER)], answer.encode(), to_tag=call.dialog.local_tag)
        connection = call.dialog.data.get("connection")
        if connection is not None:
            connection.send_request(progress)  # type: ignore[attr-defined]  # a reliable transport: sent once
        outcome = await call.start_early()
        if outcome is None:
            return None
        status, contact = outcome
        headers = [("Contact", f"<{contact}>")] if contact else []
        reason = "Moved Temporarily" if status == 302 else "Temporarily Unavailable"
        return make_response(request, status, reason, headers + [("Server", SERVER)], to_tag=call.dialog.local_tag)

    def send_refer(self, call: Call, target: str) -> None:
        """REFER the caller's gateway to `target` (RFC 3515), inside the call's dialog."""
        self._send_in_dialog(call, "REFER", [
            ("Refer-To", f"<{target}>"),
            ("Referred-By", f"<sip:{call.attendant.number}@{bracket(self.context.settings.advertise)}>"),
            ("Contact", self._contact(call.slot, call.dialog))])

    def _send_in_dialog(self, call: Call, method: str, headers: list[tuple[str, str]]) -> None:
        """A request inside the call's dialog, on the connection it came in on (none left: nothing to send)."""
        dialog = call.dialog
        connection = dialog.data.get("connection")
        if connection is None:
            return
        slot = call.slot
        port = slot.tls_port if dialog.secure else slot.tcp_port
        request = dialog.create_request(method, f"{bracket(self.context.settings.advertise)}:{port}",
                                        "TLS" if dialog.secure else "TCP")
        for name, value in headers + [("Server", SERVER)]:
            request.headers.add(name, value)
        connection.send_request(request)  # type: ignore[attr-defined]

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
            return make_response(request, 200, None, [("Contact", self._contact(call.slot, call.dialog)),
                                                      ("Server", SERVER)])
        status, reason, text = await call.renegotiate(body)
        extra = [("Contact", self._contact(call.slot, call.dialog)), ("Server", SERVER)]
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
        self._send_in_dialog(call, "BYE", [])

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


__all__ = ["ACCEPT", "ALLOW", "SERVER", "WorkerCalls"]
