"""RFC ChannelData through the TURN engine alone, with and without an [MS-TURN] allocation on the node.

    python benchmarks/engine_channeldata.py [--packets 200000] [--repeat 5] [--tree PATH] [--json]

The question it answers: does a Lync client's allocation somewhere on the node
cost the RFC 8656 clients' ChannelData anything?  (It used to: the engine asked
the dialect about every datagram once one [MS-TURN] allocation existed.)

No sockets: the engine gets fake relays and client links, one RFC client
allocates and binds a channel through real requests, and then N ChannelData
datagrams (170-byte payload, the turn_relay.py load) go client -> peer through
``from_client`` and N datagrams go peer -> client through the relay's receiver.
Each case is timed with process CPU time, best of --repeat runs:

  none      no dialect configured at all (ms_turn off)
  idle      the MS-TURN dialect configured, no [MS-TURN] allocation
  ms-alloc  the MS-TURN dialect configured, one [MS-TURN] allocation with an
            active destination (what libnice / Lync leave behind)

--tree runs the same code against another checkout (e.g. ``git archive HEAD``
unpacked in /tmp) to compare with the engine before a change; the engine
constructor's ``dialects=`` or old ``ms_turn=`` parameter is detected.
"""

from __future__ import annotations

import argparse
import base64
import inspect
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent

SECRET = "benchmark-secret-0123456789"
REALM = "bench.test"
RFC_CLIENT = ("192.0.2.10", 40000)
MS_CLIENT = ("192.0.2.11", 40000)
PEER = ("203.0.113.5", 6000)
CHANNEL = 0x4001
CASES = ("none", "idle", "ms-alloc")


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass(eq=False)
class Relay:
    """A RelayEndpoint that only counts."""

    address: tuple[str, int]
    family: int
    receiver: Any = None
    sent: int = 0

    def sendto(self, data: bytes, address: tuple[str, int]) -> bool:
        self.sent += 1
        return True

    def set_dont_fragment(self) -> bool:
        return True

    def close(self) -> None:
        pass


@dataclass(eq=False)
class Link:
    """A UDP ClientLink that keeps only the last datagram sent to it."""

    address: tuple[str, int]
    kind: str = "udp"
    stream: bool = False
    allocation: Any = None
    last: bytes = b""
    received: int = 0

    def send(self, data: bytes) -> None:
        self.last = data
        self.received += 1


@dataclass
class Node:
    engine: Any
    rfc: Link
    relay: Relay
    extra: dict[str, Any] = field(default_factory=dict)


def build(case: str) -> Node:
    """An engine with one RFC allocation + channel, and for 'ms-alloc' one [MS-TURN] allocation."""
    from edge import msturn, stun
    from edge.tokens import mint
    from edge.turn.auth import Authenticator
    from edge.turn.engine import RelayAddresses, TurnEngine
    from edge.turn.policy import Limits, PeerPolicy
    from edge.turn.ports import PortPool

    clock = Clock()
    relays: list[Relay] = []

    def bind(family: int, port: int, host: str) -> Relay:
        relays.append(Relay((host, port), family))
        return relays[-1]

    dialect = case != "none"
    if "dialects" in inspect.signature(TurnEngine).parameters:
        from edge.msturn.server import MsTurnServer

        options: dict[str, Any] = {"dialects": [MsTurnServer()] if dialect else []}
    else:  # the engine before dialects were injected
        options = {"ms_turn": dialect}
    engine = TurnEngine(
        Authenticator(REALM, lambda: [SECRET], b"k" * 32, 600, clock), Limits(),
        PeerPolicy.from_config((), (), {"198.51.100.2"}, {"198.51.100.1"}, {3478, 5349}),
        RelayAddresses({4: "198.51.100.1"}), PortPool(50000, 50099), bind, clock, **options)
    token = mint(SECRET, "sip:bench@bench.test", 3600, clock.now)

    rfc = Link(RFC_CLIENT)
    engine.from_client(rfc, stun.Message(stun.ALLOCATE, stun.REQUEST).encode())
    nonce = stun.decode(rfc.last).get(stun.Attr.NONCE) or b""
    key = stun.long_term_key(token.username, REALM, token.password)
    credentials = [(stun.Attr.USERNAME, token.username.encode()), (stun.Attr.REALM, REALM.encode()),
                   (stun.Attr.NONCE, nonce)]

    def request(method: int, attributes: list[tuple[int, bytes]], tid: bytes) -> None:
        message = stun.Message(method, stun.REQUEST, tid, attributes + credentials)
        engine.from_client(rfc, message.encode(key, fingerprint=True))
        answer = stun.decode(rfc.last)
        if answer.msg_class != stun.SUCCESS:
            raise RuntimeError(f"RFC request {method:#x} failed: {answer.error_code()}")

    request(stun.ALLOCATE, [(stun.Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17))], b"a" * 12)
    request(stun.CHANNEL_BIND, [(stun.Attr.CHANNEL_NUMBER, stun.encode_channel_number(CHANNEL)),
                                (stun.Attr.XOR_PEER_ADDRESS, stun.encode_xor_address(*PEER, b"c" * 12))],
            b"c" * 12)
    node = Node(engine, rfc, relays[-1])
    if case == "ms-alloc":
        node.extra["ms"] = _ms_allocation(engine, token, msturn)
    return node


def _ms_allocation(engine: Any, token: Any, msturn: Any) -> Link:
    """A Lync-like client: Allocate (401, then with credentials), then Set Active Destination."""
    link = Link(MS_CLIENT)
    key = msturn.long_term_key(token.username.encode(), REALM.encode(), base64.b64decode(token.password))
    version = [(msturn.MsAttr.MS_VERSION, msturn.encode_u32(1))]
    engine.from_client(link, msturn.MsMessage(msturn.MsType.ALLOCATE_REQUEST, None, version).encode())
    nonce = msturn.decode(link.last).get(msturn.MsAttr.NONCE) or b""
    user = [(msturn.MsAttr.USERNAME, token.username.encode())]
    engine.from_client(link, msturn.MsMessage(msturn.MsType.ALLOCATE_REQUEST, None, version + user + [
        (msturn.MsAttr.REALM, REALM.encode()), (msturn.MsAttr.NONCE, nonce)]).encode(key))
    if msturn.decode(link.last).msg_type != msturn.MsType.ALLOCATE_RESPONSE:
        raise RuntimeError("the [MS-TURN] Allocate failed")
    destination = [(msturn.MsAttr.DESTINATION_ADDRESS, msturn.encode_address(*PEER))]
    engine.from_client(link, msturn.MsMessage(
        msturn.MsType.SET_ACTIVE_DESTINATION_REQUEST, None, destination + user).encode(key))
    if msturn.decode(link.last).msg_type != msturn.MsType.SET_ACTIVE_DESTINATION_RESPONSE:
        raise RuntimeError("the [MS-TURN] Set Active Destination failed")
    return link


def to_peer(node: Node, packets: int, payload: bytes) -> float:
    """CPU seconds for `packets` ChannelData datagrams client -> peer."""
    frame = CHANNEL.to_bytes(2, "big") + len(payload).to_bytes(2, "big") + payload
    from_client, link = node.engine.from_client, node.rfc
    before, start = node.relay.sent, time.process_time()
    for _ in range(packets):
        from_client(link, frame)
    elapsed = time.process_time() - start
    if node.relay.sent - before != packets:
        raise RuntimeError(f"relayed {node.relay.sent - before} of {packets} datagrams")
    return elapsed


def to_client(node: Node, packets: int, payload: bytes) -> float:
    """CPU seconds for `packets` datagrams peer -> client (framed as ChannelData)."""
    receive, link = node.relay.receiver, node.rfc
    before, start = link.received, time.process_time()
    for _ in range(packets):
        receive(payload, PEER)
    elapsed = time.process_time() - start
    if link.received - before != packets:
        raise RuntimeError(f"delivered {link.received - before} of {packets} datagrams")
    return elapsed


def measure(case: str, packets: int, repeat: int, length: int) -> dict[str, float]:
    payload = bytes(range(256))[:length] * (length // 256 + 1)
    payload = payload[:length]
    best = {"to_peer": float("inf"), "to_client": float("inf")}
    for _ in range(repeat):
        node = build(case)
        best["to_peer"] = min(best["to_peer"], to_peer(node, packets, payload))
        best["to_client"] = min(best["to_client"], to_client(node, packets, payload))
    return {f"{direction}_per_cpu_s": packets / seconds for direction, seconds in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--packets", type=int, default=200_000, help="datagrams per direction and run")
    parser.add_argument("--repeat", type=int, default=5, help="runs per case; the best counts (default 5)")
    parser.add_argument("--length", type=int, default=170, help="payload bytes (default 170)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose edge/ package to measure")
    parser.add_argument("--only", choices=CASES, action="append", help="run only these cases")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if not 1 <= args.packets <= 10_000_000 or not 1 <= args.repeat <= 50:
        parser.error("--packets must be in [1, 1e7] and --repeat in [1, 50]")
    sys.path.insert(0, str(args.tree.resolve()))
    results = {case: measure(case, args.packets, args.repeat, args.length)
               for case in CASES if not args.only or case in args.only}
    if args.json:
        print(json.dumps({"tree": str(args.tree), "packets": args.packets, "length": args.length,
                          "results": results}, indent=2))
        return 0
    print(f"engine at {args.tree}: {args.packets} datagrams x {args.repeat} runs, {args.length}-byte payload")
    print(f"{'case':<10} {'client->peer dgrams/CPU-s':>26} {'peer->client dgrams/CPU-s':>26}")
    for case, row in results.items():
        print(f"{case:<10} {row['to_peer_per_cpu_s']:>26,.0f} {row['to_client_per_cpu_s']:>26,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
