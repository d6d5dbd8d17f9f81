"""RFC 5780 behaviour discovery on the TURN UDP port: the three extra sockets and the Binding answers.

The engine asks `answer(link, request)` for every Binding request (its
`binding` policy); UDP ones are answered here, from whichever of the four
(address, port) combinations the request's CHANGE-REQUEST asks for. The
extra sockets take Binding requests only; anything else sent to them is
dropped and counted.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable

from edge import stun
from edge.stun.discovery import Address, DiscoveryAddresses, answer_binding
from edge.turn.allocation import ClientLink

MAX_DATAGRAM = 2048  # Binding requests are small; anything longer is not one


class BehaviourDiscovery:
    """Owns the alternate sockets once `start` binds them; answers Binding requests on all four."""

    def __init__(self, addresses: DiscoveryAddresses) -> None:
        self.addresses = addresses
        self._admit: Callable[[str], bool] = lambda host: True
        self._sockets: dict[Address, socket.socket] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.stats: Counter[str] = Counter()

    def start(self, loop: asyncio.AbstractEventLoop, primary: socket.socket,
              bind: Callable[[str, int], socket.socket], admit: Callable[[str], bool]) -> None:
        """Serve on `primary` (bound by the TURN listener) plus three sockets `bind` makes now.

        `admit(host)` is the TURN port's per-source rate limit, applied on the extra sockets too.
        """
        self._loop, self._admit = loop, admit
        self._sockets = {self.addresses.primary: primary}
        try:
            for local in self.addresses.all[1:]:
                sock = bind(*local)
                sock.setblocking(False)
                self._sockets[local] = sock
                loop.add_reader(sock.fileno(), self._readable, sock, local)
        except OSError:
            self.close()
            raise

    def answer(self, link: ClientLink, request: stun.Message) -> bool:
        """Answer a Binding that reached the primary socket over UDP; False leaves it to the engine."""
        if link.kind != "udp" or not self._sockets:
            return False
        self._send(request, link.address, self.addresses.primary)
        return True

    def _send(self, request: stun.Message, source: Address, received_on: Address) -> None:
        response, origin = answer_binding(request, source, received_on, self.addresses)
        self._reply(self._sockets[origin], response, source)

    def _reply(self, sock: socket.socket, response: stun.Message, to: Address) -> None:
        try:
            sock.sendto(response.encode(fingerprint=True), to)
            self.stats["answered"] += 1
        except OSError:
            self.stats["send_failed"] += 1

    def _readable(self, sock: socket.socket, local: Address) -> None:
        for _ in range(64):
            try:
                data, source = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            source = source[:2]
            if not self._admit(source[0]):
                continue
            try:
                request = stun.decode(data)
            except stun.StunDecodeError:
                self.stats["dropped"] += 1
                continue
            if request.method != stun.BINDING or request.msg_class != stun.REQUEST:
                self.stats["dropped"] += 1
                continue
            unknown = request.unknown_comprehension_required()
            if unknown:
                self._reply(sock, stun.make_unknown_attributes_error(request, unknown), source)
                continue
            self._send(request, source, local)

    def close(self) -> None:
        primary = self._sockets.get(self.addresses.primary)
        for sock in self._sockets.values():
            if sock is primary:
                continue  # the TURN listener's
            if self._loop is not None:
                self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = {}
