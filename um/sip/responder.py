"""The SIP answers every UM listener gives before its role does more: OPTIONS, and
a proper error for everything else.

OPTIONS is how gateways and pool peers probe liveness, so it gets 200 with
the methods the listener supports; other methods get 501 with Allow, ACK
gets nothing (RFC 3261 §17.2.1).
"""

from __future__ import annotations

from twisted.logger import Logger

from um.sip.message import Request, Response, make_response
from um.sip.stream import Peer

SERVER = "umedge/0.1"


class OptionsResponder:
    """A handler for SipStreamProtocol that supports OPTIONS only."""

    log = Logger(namespace="umedge.sip")

    def __init__(self, role: str, allow: tuple[str, ...] = ("OPTIONS",)) -> None:
        self.role = role
        self.allow = allow

    def __call__(self, request: Request, peer: Peer) -> Response | None:
        if request.method == "ACK":
            return None
        allow = ("Allow", ", ".join(self.allow))
        if request.method == "OPTIONS":
            return make_response(request, 200, "OK", [allow, ("Accept", "application/sdp"),
                                                     ("Server", SERVER)])
        self.log.info("{role}: {method} from {host} answered 501", role=self.role,
                      method=request.method, host=peer.host)
        return make_response(request, 501, "Not Implemented", [allow, ("Server", SERVER)])
