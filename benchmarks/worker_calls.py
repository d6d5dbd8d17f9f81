"""How many concurrent recording calls one UM worker process holds with < 1 % loss and < 30 ms jitter,
and what the node does with both worker slots taking calls.

    .venv/bin/python benchmarks/worker_calls.py [--steps 100,200,300,400] [--seconds 8] [--via-edge]
                                                [--node-calls N]

Runs `umedge serve --roles callrouter,mailbox,worker,web`: the main process plus one worker process
per slot (each slot its own process, so one core each at most). Step by step, N calls at once from a
load generator in this process (uvloop): SIP INVITE over TCP straight to slot 1's port (one worker
process), G.711 RTP at 20 ms from one UDP socket per call, BYE after `--seconds`. Then, with
--node-calls N (default: the largest passing step), N calls on each slot at once (2N for the node).
The CPU column is that of each worker process (and the node's process tree).
The worker's own RTCP receiver reports (the final RR it sends with its RTCP BYE)
give, per call, the cumulative packets lost and the RFC 3550 interarrival jitter it measured:
the loss and the jitter the worker process added (the generator paces from a monotonic clock).
Every call must also leave a stored message of the right length. A step passes with loss < 1 %
and the largest per-call jitter < 30 ms; the answer is the largest N that passed.

With --via-edge the worker's media go through a TURN allocation on an edge that runs as a
second `umedge serve --roles edge` process (token over MRAS).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiortc.rtp import RtcpPacket, RtcpRrPacket, RtcpSrPacket  # noqa: E402

from tests.conftest import ServeProcess, umedge, write_config  # noqa: E402
from tests.support import process_tree_cpu  # noqa: E402
from tests.worker.caller import sdp_offer, sine_payloads  # noqa: E402
from um.sip.message import Response  # noqa: E402
from um.sip.parser import StreamParser  # noqa: E402
from um.worker import g711, wav  # noqa: E402
from um.worker.rtp import is_rtcp  # noqa: E402

MAX_LOSS = 0.01
MAX_JITTER_MS = 30.0


class Leg(asyncio.DatagramProtocol):
    """One call of the generator: its SIP connection, its RTP socket, what the worker reported."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.ssrc = secrets.randbits(32)
        self.seq = secrets.randbits(16)
        self.ts = secrets.randbits(32)
        self.sent = 0
        self.received = 0
        self.final: Any = None  # the last report block about our SSRC
        self.remote: tuple[str, int] | None = None
        self.transport: Any = None
        self.sip: Any = None
        self.answer: Response | None = None
        self.call_id = f"bench-{index}-{secrets.token_hex(4)}"
        self.to_value = ""
        self.contact = ""

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if is_rtcp(data):
            try:
                packets = RtcpPacket.parse(data)
            except ValueError:
                return
            for packet in packets:
                if isinstance(packet, (RtcpRrPacket, RtcpSrPacket)):
                    for block in packet.reports:
                        if block.ssrc == self.ssrc:
                            self.final = block
        else:
            self.received += 1

    def send(self, payload: bytes) -> None:
        if self.transport is None or self.remote is None:
            return
        header = bytes((0x80, 0)) + self.seq.to_bytes(2, "big") + self.ts.to_bytes(4, "big") + \
            self.ssrc.to_bytes(4, "big")
        self.transport.sendto(header + payload, self.remote)
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFFFFFF
        self.sent += 1


class Sip(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = StreamParser()
        self.responses: asyncio.Queue[Response] = asyncio.Queue()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            if isinstance(event.message, Response):
                self.responses.put_nowait(event.message)
            elif event.message is not None and event.message.method == "BYE":  # type: ignore[union-attr]
                from um.sip.message import make_response

                self.transport.write(make_response(event.message, 200).encode())  # type: ignore[arg-type]


async def final(sip: Sip, timeout: float = 30) -> Response:
    while True:
        response = await asyncio.wait_for(sip.responses.get(), timeout)
        if response.status >= 200:
            return response


async def setup(leg: Leg, port: int, mailbox: str) -> None:
    loop = asyncio.get_running_loop()
    leg.transport, _ = await loop.create_datagram_endpoint(lambda: leg, local_addr=("127.0.0.1", 0))
    rtp = leg.transport.get_extra_info("sockname")[1]
    transport, leg.sip = await loop.create_connection(Sip, "127.0.0.1", port)
    host, local = transport.get_extra_info("sockname")[:2]
    body = sdp_offer("127.0.0.1", rtp, codecs=("PCMU",))
    invite = (f"INVITE sip:5000@127.0.0.1:{port};transport=tcp SIP/2.0\r\n"
              f"Via: SIP/2.0/TCP {host}:{local};branch=z9hG4bK{secrets.token_hex(6)}\r\nMax-Forwards: 70\r\n"
              f"From: <sip:bench{leg.index}@{host}>;tag=t{leg.index}\r\nTo: <sip:{mailbox}@127.0.0.1>\r\n"
              f"Call-ID: {leg.call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:bench@{host}:{local};transport=tcp>\r\n"
              f"Content-Type: application/sdp\r\nContent-Length: {len(body)}\r\n\r\n{body}")
    leg.sip.transport.write(invite.encode())
    answer = await final(leg.sip)
    leg.answer = answer
    if answer.status != 200:
        raise RuntimeError(f"call {leg.index}: {answer.status} {answer.reason}")
    leg.to_value = answer.headers.get("To") or ""
    leg.contact = (answer.headers.get("Contact") or "").strip("<>")
    for line in answer.body.decode().splitlines():
        if line.startswith("c=IN IP4 "):
            media_host = line.split()[2]
        elif line.startswith("m=audio "):
            media_port = int(line.split()[1])
    leg.remote = (media_host, media_port)
    leg.sip.transport.write(_in_dialog(leg, "ACK", 1, host, local))
    leg.local = (host, local)  # type: ignore[attr-defined]


def _in_dialog(leg: Leg, method: str, cseq: int, host: str, port: int) -> bytes:
    return (f"{method} {leg.contact} SIP/2.0\r\nVia: SIP/2.0/TCP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:bench{leg.index}@{host}>;tag=t{leg.index}\r\nTo: {leg.to_value}\r\n"
            f"Call-ID: {leg.call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n").encode()


async def run_step(n: int, ports: list[int], seconds: float, frames: list[bytes], pid: int,
                   workers: dict[int, int]) -> dict[str, Any]:
    """`n` calls spread over `ports` (worker slots); `workers`: slot port -> its worker process's pid."""
    legs = [Leg(i) for i in range(n)]
    gate = asyncio.Semaphore(40)

    async def one(leg: Leg) -> None:
        async with gate:
            await setup(leg, ports[leg.index % len(ports)], f"100{leg.index % 10}")

    started = time.monotonic()
    results = await asyncio.gather(*(one(leg) for leg in legs), return_exceptions=True)
    failed = [r for r in results if isinstance(r, Exception)]
    setup_time = time.monotonic() - started
    if failed:
        return {"calls": n, "setup_failed": len(failed), "error": repr(failed[0])}
    loop = asyncio.get_running_loop()
    cpu0, wall0 = process_tree_cpu(pid), time.monotonic()
    per0 = {port: process_tree_cpu(workers[port]) for port in ports}
    total_frames = int(seconds * 50)
    start = loop.time() + 0.02
    late = 0.0
    for tick in range(total_frames):
        delay = start + tick * 0.02 - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            late = max(late, -delay)
        payload = frames[tick % len(frames)]
        for leg in legs:
            leg.send(payload)
    wall = max(1e-6, time.monotonic() - wall0)
    cpu = (process_tree_cpu(pid) - cpu0) / wall
    per_process = [round((process_tree_cpu(workers[port]) - per0[port]) / wall, 2) for port in ports]
    await asyncio.sleep(0.2)
    for leg in legs:
        host, local = leg.local  # type: ignore[attr-defined]
        leg.sip.transport.write(_in_dialog(leg, "BYE", 2, host, local))
    await asyncio.gather(*(final(leg.sip) for leg in legs), return_exceptions=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(leg.final is None for leg in legs):
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)
    reported = [leg for leg in legs if leg.final is not None]
    sent = sum(leg.sent for leg in reported)
    lost = sum(max(0, leg.final.packets_lost) for leg in reported)
    jitters = sorted(leg.final.jitter / 8.0 for leg in reported)
    for leg in legs:
        leg.sip.transport.close()
        leg.transport.close()
    return {"calls": n, "setup_seconds": round(setup_time, 2), "reports": len(reported), "sent": sent,
            "lost": lost, "loss": lost / max(1, sent),
            "jitter_ms_p50": round(statistics.median(jitters), 2) if jitters else None,
            "jitter_ms_p95": round(jitters[int(len(jitters) * 0.95) - 1], 2) if jitters else None,
            "jitter_ms_max": round(jitters[-1], 2) if jitters else None,
            "generator_late_ms": round(late * 1000, 1), "node_cpu": round(cpu, 2), "worker_cpu": per_process,
            "packets_per_second": round(n * 50)}


def check_messages(state: Path, since: float, n: int, seconds: float) -> tuple[int, int]:
    """(messages stored since `since`, of them with at least seconds - 1.5 s of audio)."""
    from um.worker.store import VoicemailStore

    messages = [m for m in VoicemailStore(state).messages() if m.timestamp >= since]
    return len(messages), sum(1 for m in messages if m.duration >= seconds - 1.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="100,200,300,400,500", help="concurrent calls per step (ascending)")
    parser.add_argument("--seconds", type=float, default=8.0, help="RTP per call in each step")
    parser.add_argument("--via-edge", action="store_true", help="worker media through a TURN edge process")
    parser.add_argument("--keep-going", action="store_true", help="run every step even after one fails")
    parser.add_argument("--node-calls", type=int, default=None,
                        help="calls per slot for the node step with both slots (default: the largest passing step)")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    work = Path(tempfile.mkdtemp(prefix="umedge-worker-bench-"))
    processes: list[ServeProcess] = []
    try:
        if args.via_edge:
            (work / "edge").mkdir()
            secret = "bench-edge-secret-" + secrets.token_hex(8)
            edge_files = write_config(work / "edge", {
                "node": {"name": "edge1", "state_dir": "state", "certs_dir": "../node/certs"},
                "edge": {"auth_secrets": [secret], "allowed_peer_networks": ["127.0.0.0/8"],
                         "max_allocations_per_user": 10000, "allocation_bandwidth_kbps": 0},
                "limits": {"stun_requests_per_second": 100000, "stun_burst": 100000,
                           "max_pending_allocations": 10000}})
        (work / "node").mkdir()
        greetings = work / "node" / "state" / "greetings"
        greetings.mkdir(parents=True)
        for n in range(1000, 1010):  # a short greeting: the benchmark is about recording
            (greetings / f"{n}.wav").write_bytes(wav.encode("PCMU", g711.silence(800, "PCMU")))
        worker = {"rtp_port_min": 20000, "rtp_port_max": 29999, "silence_timeout": 0, "media_timeout": 0,
                  "max_message_seconds": 3600, "min_message_seconds": 0, "max_calls_per_source": 10000}
        roles = "callrouter,mailbox,worker,web"
        if args.via_edge:
            worker.update(media_via_edge=True, edge_mras=f"127.0.0.1:{edge_files.port('auth', 'mras_tls_port')}",
                          edge_https=f"127.0.0.1:{edge_files.port('auth', 'https_port')}")
        limits = {"sip_requests_per_second": 100000, "sip_burst": 100000, "connections_per_source": 20000,
                  "stun_requests_per_second": 100000, "stun_burst": 100000}
        node = write_config(work / "node", {"worker": worker, "node": {"name": "node1"}, "limits": limits})
        process = ServeProcess(node.path, "--roles", roles)
        processes.append(process)
        process.wait_ready()
        if args.via_edge:
            edge = ServeProcess(edge_files.path, "--roles", "edge")
            processes.append(edge)
            edge.wait_ready()
        ports = [int(p) for p in node.values["worker"]["sip_ports"]]  # type: ignore[attr-defined]
        status = json.loads(umedge("worker", "status", "--config", str(node.path)).stdout)
        workers = {slot["tcp_port"]: slot["pid"] for slot in status["slots"]}
        frames = sine_payloads(2.0, codec="PCMU")
        named = ", ".join(f"slot {slot['slot']} pid {slot['pid']}" for slot in status["slots"])
        print(f"umedge worker benchmark: node pid {process.proc.pid}, worker processes {named}; "
              f"{os.cpu_count()} cores, "
              f"media {'via a TURN edge process' if args.via_edge else 'direct'}, {args.seconds:g}s of RTP per call")
        header = (f"{'calls':>6} {'pps in':>7} {'loss':>8} {'jit p50':>8} {'jit p95':>8} {'jit max':>8} "
                  f"{'worker cpu':>11} {'node cpu':>8} {'msgs ok':>9} {'gen late':>9}  verdict")

        def step(n: int, slots: list[int]) -> dict[str, Any]:
            since = time.time()
            result = asyncio.run(run_step(n, slots, args.seconds, frames, process.proc.pid, workers))
            time.sleep(1.0)
            stored, whole = check_messages(work / "node" / "state", since - 1, n, args.seconds)
            result.update(messages=stored, messages_whole=whole, slots=len(slots))
            ok = ("error" not in result and result["reports"] == n and result["loss"] < MAX_LOSS and
                  result["jitter_ms_max"] is not None and result["jitter_ms_max"] < MAX_JITTER_MS and whole == n)
            result["pass"] = ok
            if "error" in result:
                print(f"{n:>6} setup failed: {result['setup_failed']} calls ({result['error']})")
            else:
                cpus = "+".join(f"{c:.2f}" for c in result["worker_cpu"])
                print(f"{n:>6} {result['packets_per_second']:>7} {result['loss']:>7.3%} {result['jitter_ms_p50']:>7}ms "
                      f"{result['jitter_ms_p95']:>7}ms {result['jitter_ms_max']:>7}ms {cpus:>11} "
                      f"{result['node_cpu']:>8.2f} {whole:>5}/{n:<4} {result['generator_late_ms']:>7}ms  "
                      f"{'PASS' if ok else 'FAIL'}")
            return result

        print("one worker process (slot 1):")
        print(header)
        best = 0
        rows = []
        for n in steps:
            result = step(n, ports[:1])
            rows.append(result)
            if result["pass"]:
                best = n
            elif not args.keep_going:
                break
        print(f"largest passing step: {best} concurrent recording calls in one worker process "
              f"(target: at least 200 per core)")
        per_slot = args.node_calls or best
        node_row = None
        if per_slot:
            print(f"the node, both worker slots ({per_slot} calls each):")
            print(header)
            node_row = step(2 * per_slot, ports)
        print(json.dumps({"best": best, "steps": rows, "node": node_row}))
        return 0
    finally:
        for process in processes:
            try:
                process.stop(timeout=10)
            except Exception:  # noqa: BLE001 - kill below
                pass
            process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
