"""um.callcontrol.CallControl for worker slots running in this process (um.worker's WorkerCalls).

When the slots become child processes, their supervisor implements the same
two coroutines by asking each child (see um/callcontrol.py); the console does
not change.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.logger import Logger

from um.callcontrol import reason_header
from um.sip.uri import bracket

log = Logger(namespace="umedge.admin")
MAX_CALLS = 2000


def _media_path(call: Any) -> tuple[str, str]:
    """("direct" | "relayed", the transport kind): an ICE call through the edge's relay counts as relayed."""
    media = call.media
    kind = str(getattr(getattr(media, "transport", None), "kind", "none"))
    if kind == "relay":
        return "relayed", kind
    if kind == "ice":
        return ("relayed" if call.context.settings.media_via_edge else "direct"), kind
    return ("direct" if kind == "direct" else "none"), kind


def describe(call: Any, now: float) -> dict[str, Any]:
    media = call.media
    negotiated = getattr(media, "negotiated", None)
    stats: dict[str, Any] = {}
    if media is not None:
        try:
            stats = media.stats()
        except Exception:  # noqa: BLE001 - a half-built media session: no numbers yet
            stats = {}
    path, kind = _media_path(call)
    return {
        "id": call.dialog.call_id, "slot": getattr(call.slot, "number", None), "kind": call.kind,
        "caller": call.caller_uri or call.caller, "caller_name": call.caller_name, "mailbox": call.mailbox,
        "media": path, "transport": kind,
        "codec": getattr(negotiated, "codec", None) or str(call.codec),
        "srtp": getattr(media, "srtp", None) is not None,
        "duration": round(now - call.started, 1),
        "packets_in": stats.get("received", stats.get("rtp_in", 0)), "packets_out": stats.get("rtp_out", 0),
        "packets_lost": stats.get("lost", 0), "jitter_ms": stats.get("jitter_ms", 0.0),
        "state": "ending" if call.ended else "up",
    }


class InProcessCalls:
    """The calls of this process's worker slots (`worker()` returns WorkerCalls, or None before it is built)."""

    def __init__(self, worker: Any) -> None:
        self._worker = worker

    def _calls(self) -> list[Any]:
        calls = self._worker()
        if calls is None:
            return []
        return list(calls.context.calls.values())[:MAX_CALLS]

    async def list_calls(self) -> list[dict[str, Any]]:
        now = time.time()
        return [describe(call, now) for call in self._calls()]

    async def hang_up(self, call_id: str, reason: str) -> bool:
        for call in self._calls():
            if call.dialog.call_id == call_id and not call.ended:
                self._send_bye(call, reason)
                await call.end("operator", send_bye=False)  # the BYE went out above, with its Reason
                return True
        return False

    def _send_bye(self, call: Any, reason: str) -> None:
        """WorkerCalls.send_bye with a Reason header (RFC 3326) naming why the operator ended the call."""
        dialog = call.dialog
        connection = dialog.data.get("connection")
        if connection is None or dialog.state == "terminated":
            return
        slot = call.slot
        port = slot.tls_port if dialog.secure else slot.tcp_port
        bye = dialog.create_request("BYE", f"{bracket(call.context.settings.advertise)}:{port}",
                                    "TLS" if dialog.secure else "TCP")
        bye.headers.add("Reason", reason_header(reason))
        bye.headers.add("Server", "umedge/0.1")
        try:
            connection.send_request(bye)
        except Exception:  # noqa: BLE001 - a dead connection: the call is still released
            log.failure("call {call_id}: operator's BYE not sent", call_id=dialog.call_id)


__all__ = ["InProcessCalls", "describe"]
