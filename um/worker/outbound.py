"""Play-on-phone: the worker calls a number through a gateway and plays a voicemail to whoever answers.

The worker is the UAC here: INVITE through the gateway with the user-agent
client (um.sip.uac, SIP over TCP), ACK, play, BYE (or the gateway's BYE).
"""

from __future__ import annotations

import asyncio
from typing import Any

from um.sip.dialog import Dialog
from um.sip.message import Request, Response, make_response
from um.sip.transaction import make_request
from um.sip.uac import UserAgentClient
from um.sip.uri import bracket
from um.worker import sdp
from um.worker.context import WorkerContext
from um.worker.handler import ALLOW, SERVER
from um.worker.media import MediaSession
from um.worker.store import Message

CONNECT_TIMEOUT = 5.0
BYE_TIMEOUT = 5.0


async def play_on_phone(context: WorkerContext, number: str, message: Message, *,
                        gateway: tuple[str, int] | None = None, answer_timeout: float = 30.0) -> dict[str, Any]:
    """Call `number` through a gateway (SIP over TCP) and play `message` to whoever answers."""
    settings = context.settings
    target = gateway or settings.outbound_gateway
    if target is None:
        raise ValueError("no gateway to call through ([worker] outbound_gateway)")
    host, port = target
    uac = UserAgentClient(connect_timeout=CONNECT_TIMEOUT)
    try:
        connection = await uac.connect(host, port, "tcp")
        media_transport = await context.open_transport(None)  # an RTP/RTCP pair: the answer may refuse rtcp-mux
        media: MediaSession | None = None
        try:
            local_media = sdp.LocalMedia(media_transport.local[0], media_transport.local[1], settings.codecs,
                                         rtcp_port=media_transport.rtcp_port)
            context.counters["outbound_calls"] += 1
            uri = f"sip:{number}@{bracket(host)}:{port};transport=tcp"
            invite = make_request(
                "INVITE", uri, via_host=connection.sent_by, transport="TCP",
                from_uri=f"sip:umworker@{settings.domain}", to_uri=f"sip:{number}@{bracket(host)}",
                extra=[("Contact", f"<sip:umworker@{connection.sent_by};transport=tcp>"),
                       ("Content-Type", "application/sdp"), ("Allow", ALLOW), ("Server", SERVER)],
                body=sdp.offer(local_media, rtcp_mux=True).encode())
            call_id = invite.headers.get("Call-ID") or ""
            bye_received: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            uac.on_dialog(call_id, lambda request: _in_dialog(request, bye_received))
            result: dict[str, Any] = {"number": number, "message": message.id, "gateway": f"{host}:{port}"}
            response = await uac.request(host, port, "tcp", invite, timeout=answer_timeout)
            result["status"] = response.status
            if response.status >= 300:  # the client transaction ACKed it
                result["played"] = False
                return result
            dialog = Dialog.uac(invite, response)
            await uac.send(connection, dialog.create_ack(connection.sent_by, "TCP"))
            negotiated = sdp.accept_answer(sdp.parse(response.body), local_media)
            await media_transport.set_remote(negotiated.remote_rtp, negotiated.remote_rtcp)
            media = MediaSession(media_transport, negotiated, context.clock, cname=f"umworker@{settings.node_name}")
            audio = context.store.audio(message).as_g711(negotiated.codec)
            play = media.play(context.prompts.get("message", negotiated.codec) + audio)
            waiters: list[asyncio.Future[Any]] = [play, bye_received]
            finished, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            result["played"] = play in finished and play.result()
            if bye_received not in finished:
                bye = dialog.create_request("BYE", connection.sent_by, "TCP")
                try:
                    await uac.request(host, port, "tcp", bye, timeout=BYE_TIMEOUT)
                except (TimeoutError, ConnectionError):
                    pass
            result["ended_by"] = "gateway" if bye_received in finished else "worker"
            return result
        finally:
            if media is not None:
                await media.close()
            else:
                await media_transport.close()
    finally:
        await uac.aclose()


def _in_dialog(request: Request, bye_received: asyncio.Future[None]) -> Response | None:
    """The gateway's requests in the call: BYE ends it; OPTIONS, INFO and UPDATE get a plain 200."""
    if request.method == "BYE" and not bye_received.done():
        bye_received.set_result(None)
    if request.method in ("BYE", "OPTIONS", "INFO", "UPDATE"):
        return make_response(request, 200, None, [("Server", SERVER)])
    return None


__all__ = ["play_on_phone"]
