"""A small UDP TURN client for the offload tests, run inside the client's namespace:

    python -m tests.offload.turnclient scenario|burst|expiry SERVER PORT PEER PEER_PORT SECRET [SECONDS]

`scenario`: allocate, bind channel 0x4000 to PEER:PEER_PORT, then count echoes for each of:
good ChannelData, ChannelData whose length field is larger than its payload, ChannelData on
an unbound channel, Send indications to PEER:PEER_PORT+1 (Data indications back), and good
ChannelData after a Refresh with LIFETIME 0. Prints one JSON object.

`burst`: allocate, bind, 300 ChannelData at once (over a small bandwidth cap), then 10 more
paced ones after the engine's tick; prints the echo counts of both.

`expiry`: allocate, bind, print "bound", then send ChannelData every 10 ms for SECONDS and
print the echo times (seconds after the ChannelBind success) as JSON.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time

from edge import stun
from edge.stun import Attr
from edge.tokens import mint

REALM = "example.test"
CHANNEL = 0x4000
PAYLOAD = b"offload-test-payload-" + bytes(range(64)) + b"!?"  # 87 bytes: odd on purpose (checksum padding)


class Client:
    def __init__(self, server: tuple[str, int], secret: str) -> None:
        self.server = server
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(3)
        self.token = mint(secret, "sip:offload@example.test", 600, time.time())
        self.key = stun.long_term_key(self.token.username, REALM, self.token.password)
        self.nonce: bytes | None = None

    def request(self, method: int, attributes: list[tuple[int, bytes]]) -> stun.Message:
        for _ in range(3):
            auth = [] if self.nonce is None else [
                (Attr.USERNAME, self.token.username.encode()), (Attr.REALM, REALM.encode()), (Attr.NONCE, self.nonce)]
            message = stun.Message(method, stun.REQUEST, os.urandom(12), [*attributes, *auth])
            self.sock.sendto(message.encode(self.key if self.nonce else None, fingerprint=True), self.server)
            while True:
                reply = stun.decode(self.sock.recv(4096))
                if reply.transaction_id == message.transaction_id:
                    break
            if reply.msg_class == stun.SUCCESS:
                return reply
            nonce = reply.get(Attr.NONCE)
            if nonce is None:
                raise RuntimeError(f"request {method:#x} refused: {reply.error_code()}")
            self.nonce = nonce
        raise RuntimeError(f"request {method:#x}: no success after three nonces")

    def allocate(self) -> None:
        self.request(stun.ALLOCATE, [(Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17))])

    def bind(self, peer: tuple[str, int], channel: int = CHANNEL) -> None:
        self.request(stun.CHANNEL_BIND, [(Attr.CHANNEL_NUMBER, stun.encode_channel_number(channel)),
                                         (Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(*peer, bytes(12)))])

    def refresh(self, lifetime: int) -> None:
        self.request(stun.REFRESH, [(Attr.LIFETIME, stun.encode_lifetime(lifetime))])

    def send_indication(self, peer: tuple[str, int], data: bytes) -> None:
        tid = os.urandom(12)
        message = stun.Message(stun.SEND, stun.INDICATION, tid, [
            (Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(*peer, tid)), (Attr.DATA, data)])
        self.sock.sendto(message.encode(fingerprint=True), self.server)

    def channel_data(self, data: bytes, channel: int = CHANNEL, length: int | None = None) -> None:
        self.sock.sendto(struct.pack("!HH", channel, len(data) if length is None else length) + data, self.server)

    def drain(self, seconds: float) -> list[bytes]:
        """Everything the server sends within `seconds`."""
        got: list[bytes] = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                got.append(self.sock.recv(4096))
            except OSError:
                break
        self.sock.settimeout(3)
        return got


def _echoes(frames: list[bytes]) -> int:
    return sum(1 for f in frames if f[:2] == struct.pack("!H", CHANNEL) and f[4:] == PAYLOAD)


def _data_indications(frames: list[bytes]) -> int:
    count = 0
    for frame in frames:
        try:
            message = stun.decode(frame)
        except stun.StunDecodeError:
            continue
        if message.method == stun.DATA and message.msg_class == stun.INDICATION and message.get(Attr.DATA) == PAYLOAD:
            count += 1
    return count


def scenario(client: Client, peer: tuple[str, int], rounds: int = 20) -> dict[str, int]:
    client.allocate()
    client.bind(peer)
    out: dict[str, int] = {}
    for _ in range(rounds):
        client.channel_data(PAYLOAD)
    out["echoes"] = _echoes(client.drain(1.0))
    for _ in range(rounds):
        client.channel_data(PAYLOAD, length=len(PAYLOAD) + 10)
    out["malformed_echoes"] = len(client.drain(0.7))
    for _ in range(rounds):
        client.channel_data(PAYLOAD, channel=CHANNEL + 1)
    out["unbound_echoes"] = len(client.drain(0.7))
    for _ in range(5):
        client.send_indication((peer[0], peer[1] + 1), PAYLOAD)
    out["data_indications"] = _data_indications(client.drain(1.0))
    client.refresh(0)
    for _ in range(rounds):
        client.channel_data(PAYLOAD)
    out["echoes_after_dealloc"] = len(client.drain(1.0))
    return out


def burst(client: Client, peer: tuple[str, int], count: int = 300) -> dict[str, int]:
    """A burst over the allocation's cap, then (after the engine's tick) a little more."""
    client.allocate()
    client.bind(peer)
    for _ in range(count):
        client.channel_data(PAYLOAD)
    out = {"burst_echoes": _echoes(client.drain(2.0))}
    for _ in range(10):
        client.channel_data(PAYLOAD)
        time.sleep(0.01)
    out["later_echoes"] = _echoes(client.drain(1.0))
    return out


def expiry(client: Client, peer: tuple[str, int], seconds: float) -> dict[str, list[float]]:
    client.allocate()
    client.bind(peer)
    bound = time.monotonic()
    print("bound", flush=True)
    echoes: list[float] = []
    client.sock.setblocking(False)
    next_send = bound
    while (now := time.monotonic()) < bound + seconds:
        if now >= next_send:
            client.channel_data(PAYLOAD)
            next_send += 0.01
        try:
            while True:
                frame = client.sock.recv(4096)
                if _echoes([frame]):
                    echoes.append(round(time.monotonic() - bound, 3))
        except BlockingIOError:
            pass
        time.sleep(0.002)
    return {"echoes": echoes}


def main(argv: list[str]) -> int:
    command, server, port, peer, peer_port, secret = argv[:6]
    client = Client((server, int(port)), secret)
    if command == "scenario":
        result: object = scenario(client, (peer, int(peer_port)))
    elif command == "burst":
        result = burst(client, (peer, int(peer_port)))
    else:
        result = expiry(client, (peer, int(peer_port)), float(argv[6]))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
