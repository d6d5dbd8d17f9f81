"""A stand-in for the UM worker's calls, for SIP tests without media.

It answers INVITE with 200 OK whose SDP declines every offered stream (port
0, RFC 3264 §6), keeps the dialog in its slot, and ends it on BYE.
"""

from __future__ import annotations

import secrets
from typing import Any

from um.mailbox import SERVER, MailboxService, refuse_method
from um.sip.dialog import Dialog, DialogError, dialog_key
from um.sip.message import Request, Response, make_response, new_tag
from um.sip.stream import Peer
from um.slots import WorkerSlot


class StandInCalls:
    METHODS = frozenset(("INVITE", "ACK", "BYE", "CANCEL"))

    def __init__(self) -> None:
        self.ended: list[tuple[int, str]] = []
        self.host = "127.0.0.1"

    def handle(self, service: MailboxService, slot: WorkerSlot, request: Request, peer: Peer) -> Response | None:
        self.host = service.host
        method = request.method
        key = dialog_key(request)
        dialog = slot.calls.get(key)
        if method == "ACK":
            if dialog is not None:
                dialog.state = "confirmed"
            return None
        if method == "BYE":
            if dialog is None:
                return make_response(request, 481)
            try:
                dialog.check_request(request)
            except DialogError as error:
                return make_response(request, error.status, error.reason)
            del slot.calls[key]
            dialog.state = "terminated"
            service._maybe_exit(slot)
            return make_response(request, 200, None, [("Server", SERVER)])
        if method == "INVITE":
            if key[1] is not None:  # a re-INVITE
                if dialog is None:
                    return make_response(request, 481)
                return self._answer(service, slot, request, peer, dialog)
            if slot.state == "idle":
                return make_response(request, 480, "Temporarily Unavailable - worker slot not running",
                                     [("Retry-After", "5")])
            if service.draining:
                return make_response(request, 503, "Service Unavailable - node draining", [("Retry-After", "30")])
            return self._answer(service, slot, request, peer, None)
        if method == "CANCEL":
            return make_response(request, 481)
        return refuse_method(request, "INVITE, ACK, BYE, CANCEL, OPTIONS")

    def end_all(self, slot: WorkerSlot, reason: str) -> None:
        for dialog in list(slot.calls.values()):
            connection: Any = dialog.data.get("connection")
            if connection is not None:
                connection.send_request(dialog.create_request("BYE", f"{self.host}:{slot.tcp_port or slot.tls_port}",
                                                              "TLS" if dialog.secure else "TCP"))
        slot.calls.clear()
        self.ended.append((slot.number, reason))

    def _answer(self, service: MailboxService, slot: WorkerSlot, request: Request, peer: Peer,
                dialog: Dialog | None) -> Response:
        accept = request.headers.get("Accept")
        if accept is not None and "application/sdp" not in accept.lower() and accept.strip():
            return make_response(request, 406, None, [("Accept", "application/sdp")])
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if not request.body or content_type != "application/sdp":
            return make_response(request, 488, "Not Acceptable Here - an SDP offer is required",
                                 [("Accept", "application/sdp")])
        if dialog is None:
            try:
                dialog = Dialog.uas(request, new_tag())
            except (DialogError, ValueError) as error:
                return make_response(request, 400, f"Bad Request - {error}")
            dialog.secure = peer.transport == "tls"
            dialog.data["connection"] = peer.connection
            slot.calls[dialog.id] = dialog
            slot.calls_total += 1
        scheme = "sips" if dialog.secure else "sip"
        port = slot.tls_port if dialog.secure else slot.tcp_port
        contact = f"<{scheme}:worker{slot.number}@{service.host}:{port}>"
        return make_response(request, 200, None, [("Contact", contact), ("Content-Type", "application/sdp"),
                                                  ("Server", SERVER)], decline_all(request.body, service.host),
                             to_tag=dialog.local_tag)


def decline_all(offer: bytes, host: str) -> bytes:
    """An SDP answer declining every offered stream (RFC 3264 §6: port 0, same order)."""
    lines = ["v=0", f"o=umedge {secrets.randbelow(2**31)} 1 IN IP4 {host}", "s=-", f"c=IN IP4 {host}", "t=0 0"]
    for line in offer.decode("utf-8", "replace").splitlines():
        if line.startswith("m="):
            parts = line[2:].split()
            if len(parts) >= 4:
                lines.append(f"m={parts[0]} 0 {parts[2]} {parts[3]}")
    return ("\r\n".join(lines) + "\r\n").encode()
