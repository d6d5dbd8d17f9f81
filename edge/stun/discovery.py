"""NAT behaviour discovery (RFC 5780): Binding answers from a second address and port.

A server with two addresses (A, B) and two ports (p, q) listens on all four
combinations. Each Binding response names the combination that differs in
both (OTHER-ADDRESS) and the one it is sent from (RESPONSE-ORIGIN); a
CHANGE-REQUEST asks for the answer to come from the other address, the
other port, or both, which is how a client learns how its NAT maps and
filters. Sans-I/O: this module picks the bytes and the local address; the
caller owns the sockets.
"""

from __future__ import annotations

from dataclasses import dataclass

from .attributes import decode_change_request, encode_address, encode_xor_address
from .constants import Attr, ErrorCode
from .message import Message
from .responses import make_error, make_success

Address = tuple[str, int]


@dataclass(frozen=True)
class DiscoveryAddresses:
    """The primary address and port (the TURN UDP port) and the alternate ones."""

    primary: Address
    alternate: Address

    @property
    def all(self) -> tuple[Address, Address, Address, Address]:
        (a, p), (b, q) = self.primary, self.alternate
        return (a, p), (a, q), (b, p), (b, q)

    def other(self, local: Address) -> Address:
        """The combination that differs from `local` in both address and port."""
        return self._swap(local, change_ip=True, change_port=True)

    def _swap(self, local: Address, change_ip: bool, change_port: bool) -> Address:
        (a, p), (b, q) = self.primary, self.alternate
        ip, port = local
        if change_ip:
            ip = b if ip == a else a
        if change_port:
            port = q if port == p else p
        return ip, port


def answer_binding(request: Message, source: Address, received_on: Address,
                   addresses: DiscoveryAddresses) -> tuple[Message, Address]:
    """The response to a Binding request and the local address to send it from.

    `received_on` must be one of `addresses.all`. A malformed CHANGE-REQUEST gets 400 from where it came.
    """
    change = request.get(Attr.CHANGE_REQUEST)
    change_ip = change_port = False
    if change is not None:
        if len(change) != 4:
            return make_error(request, ErrorCode.BAD_REQUEST, "Bad Request: CHANGE-REQUEST"), received_on
        change_ip, change_port = decode_change_request(change)
    origin = addresses._swap(received_on, change_ip, change_port)
    return make_success(request, [
        (Attr.XOR_MAPPED_ADDRESS, encode_xor_address(source[0], source[1], request.transaction_id)),
        (Attr.MAPPED_ADDRESS, encode_address(*source)),  # what RFC 3489-era clients read
        (Attr.RESPONSE_ORIGIN, encode_address(*origin)),
        (Attr.OTHER_ADDRESS, encode_address(*addresses.other(received_on))),
    ]), origin
