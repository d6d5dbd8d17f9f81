"""TURN relay throughput and CPU cost: coturn's turnserver vs `umedge serve --roles edge`.

    python benchmarks/turn_relay.py [--seconds 15] [--sessions 10] [--only coturn|umedge|umedge-native|umedge-offload]
                                    [--offload] [--workers N] [--json]

umedge runs twice by default: "umedge" is the relay in Python ([edge] native_forwarder and
kernel_offload "off"), "umedge-native" relays bound channels in forwarder.c (native_forwarder
"on"). --offload adds a fourth run, umedge with [edge] kernel_offload = "on" (needs root, clang,
libbpf-dev, bpftool; the eBPF fast path attaches to lo for the run and is removed after).
With a kernel fast path the server process does almost nothing per datagram and the kernel's
work is charged to whichever process sends the packet (uclient and turnutils_peer), so the
honest figure is the whole system's: server tree + uclient + turnutils_peer CPU, from
per-process accounting (/proc/PID/stat; /proc/stat undercounts bursty loads on some VMs).

Each server runs alone on 127.0.0.1 (coturn with one relay thread; umedge with
allocation_bandwidth_kbps = 0, allowed_peer_networks = ["127.0.0.0/8"],
max_allocations_per_user = 1000) and gets the same load: turnutils_uclient -c -z 0
-m SESSIONS -n MESSAGES -l LENGTH over UDP ChannelData to turnutils_peer (UDP echo).

uclient prints its cumulative sent/received counts once a second. The script
samples the server's CPU (utime + stime from /proc, its descendants included) at
each of those lines, skips the first --warmup seconds after setup (uclient starts
its clients 1-6 s apart), measures the next --seconds, then kills uclient. In that
window:

  relayed datagrams  = 2 x messages echoed back (client -> peer leg and peer -> client leg)
  datagrams/s        = relayed datagrams / window wall time
  CPU s per million  = server CPU seconds / relayed datagrams x 1e6
  datagrams/CPU-s    = relayed datagrams / server CPU seconds
  whole-system CPU   = server + uclient + turnutils_peer CPU seconds
  datagrams/system CPU-s = relayed datagrams / whole-system CPU seconds
  loss %             = 1 - received / sent (uclient's counts; overload shows up here)

The engine's own cost per ChannelData datagram, without sockets, and whether an
[MS-TURN] allocation on the node changes it, is benchmarks/engine_channeldata.py.

Everything is bounded: -n caps the messages per client and each server's run
stops after warmup + seconds (default total well under 2 minutes); all processes
and files (temporary directories) are removed on the way out.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import process_tree_cpu  # noqa: E402
from tests.turn.coturn_tools import (  # noqa: E402
    CoturnServer,
    EchoPeer,
    UmedgeServer,
    uclient_command,
)

SECRET = "benchmark-secret-0123456789"
SERVERS = ("coturn", "umedge", "umedge-native", "umedge-offload")
# umedge's relay paths: the engine in Python; bound channels in forwarder.c; bound channels in the kernel.
PATHS = {"umedge": ("off", "off"), "umedge-native": ("on", "off"), "umedge-offload": ("off", "on")}
_PROGRESS = re.compile(r"start_mclient: msz=(\d+), tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
_ERROR = re.compile(r"error|cannot|refused|forbidden", re.I)
# How a server run fails (tools missing or exiting, ports taken, timeouts): reported, then the next server.
_RUN_FAILURES = (OSError, RuntimeError, ValueError, subprocess.SubprocessError)


@dataclass
class Sample:
    t: float  # monotonic
    clients: int
    sent: int
    received: int
    server_cpu: float
    client_cpu: float
    peer_cpu: float


@dataclass
class Measurement:
    server: str
    version: str = ""
    ok: bool = False
    error: str = ""
    window_s: float = 0.0
    sent: int = 0
    received: int = 0
    relayed_datagrams: int = 0
    datagrams_per_s: float = 0.0
    offered_messages_per_s: float = 0.0
    server_cpu_s: float = 0.0
    server_cpu_utilization: float = 0.0  # CPU seconds per wall second (1.0 = one core)
    cpu_s_per_million: float = 0.0
    datagrams_per_cpu_s: float = 0.0
    loss_percent: float = 0.0
    uclient_cpu_s: float = 0.0
    peer_cpu_s: float = 0.0
    system_cpu_s: float = 0.0  # server + uclient + turnutils_peer
    datagrams_per_system_cpu_s: float = 0.0
    uclient_errors: list[str] = field(default_factory=list)


def drive(server_pid: int, server_port: int, peer: EchoPeer, args: argparse.Namespace,
          result: Measurement) -> None:
    """Run uclient against one server and fill `result` from the measured window."""
    command = uclient_command(server_port, secret=SECRET, user="bench", peer_port=peer.port,
                              sessions=args.sessions, messages=args.messages, length=args.length,
                              interval_ms=args.interval_ms, no_rtcp=True, tcp=args.tcp)
    samples: list[Sample] = []
    lines: collections.deque[str] = collections.deque(maxlen=200)
    connected = threading.Event()
    connect_at: list[float] = []
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            lines.append(line)
            now = time.monotonic()
            if "Total connect time" in line and not connect_at:
                connect_at.append(now)
                connected.set()
            elif m := _PROGRESS.search(line):
                samples.append(Sample(now, int(m.group(1)), int(m.group(2)), int(m.group(3)),
                                      process_tree_cpu(server_pid), process_tree_cpu(proc.pid),
                                      process_tree_cpu(peer.pid)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        setup_deadline = time.monotonic() + args.setup_timeout
        while not connected.wait(0.1) and proc.poll() is None and time.monotonic() < setup_deadline:
            pass
        if not connected.is_set():
            reader.join(timeout=2)  # collect what uclient said before it gave up
            raise RuntimeError(f"uclient setup failed (exit {proc.poll()}): " + " | ".join(list(lines)[-8:]))
        stop_at = connect_at[0] + args.warmup + args.seconds + 1.2
        while time.monotonic() < stop_at and proc.poll() is None:
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=5)
    result.uclient_errors = sorted({line.split(": : ", 1)[-1] for line in lines if _ERROR.search(line)})[:10]
    window = [s for s in samples if s.t >= connect_at[0] + args.warmup]
    if window:
        window = [s for s in window if s.clients == window[0].clients]  # stop when clients finish
        # A process that exited between samples reads as 0 CPU: keep only samples where every reading grew.
        window = [s for i, s in enumerate(window) if all(
            s.server_cpu >= w.server_cpu and s.client_cpu >= w.client_cpu and s.peer_cpu >= w.peer_cpu
            for w in window[:i])]
    if len(window) < 2:
        raise RuntimeError(f"too few samples after warmup ({len(window)}); uclient exit {proc.returncode}: "
                           + " | ".join(list(lines)[-8:]))
    first, last = window[0], window[-1]
    result.window_s = last.t - first.t
    result.sent = last.sent - first.sent
    result.received = last.received - first.received
    result.relayed_datagrams = 2 * result.received
    result.server_cpu_s = last.server_cpu - first.server_cpu
    result.uclient_cpu_s = last.client_cpu - first.client_cpu
    result.peer_cpu_s = last.peer_cpu - first.peer_cpu
    result.system_cpu_s = result.server_cpu_s + result.uclient_cpu_s + result.peer_cpu_s
    if result.system_cpu_s > 0:
        result.datagrams_per_system_cpu_s = result.relayed_datagrams / result.system_cpu_s
    result.datagrams_per_s = result.relayed_datagrams / result.window_s
    result.offered_messages_per_s = result.sent / result.window_s
    result.server_cpu_utilization = result.server_cpu_s / result.window_s
    if result.relayed_datagrams:
        result.cpu_s_per_million = result.server_cpu_s / result.relayed_datagrams * 1e6
    if result.server_cpu_s > 0:
        result.datagrams_per_cpu_s = result.relayed_datagrams / result.server_cpu_s
    if result.sent:
        result.loss_percent = max(0.0, min(100.0, 100.0 * (1 - result.received / result.sent)))
    result.ok = result.received > 0


def bench_coturn(args: argparse.Namespace, workdir: Path) -> Measurement:
    result = Measurement("coturn")
    try:
        result.version = "coturn " + CoturnServer.version()
        with CoturnServer(workdir / "coturn", [SECRET], relay_threads=1, allow_loopback_peers=True) as server, \
                EchoPeer() as peer:
            drive(server.pid, server.port, peer, args, result)
    except _RUN_FAILURES as exc:  # report and go on with the other server
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def bench_umedge(args: argparse.Namespace, workdir: Path, name: str = "umedge") -> Measurement:
    native, kernel = PATHS[name]
    offload = kernel == "on"
    result = Measurement(name, version=f"umedge serve --roles edge (native_forwarder {native}, kernel_offload "
                                       f"{kernel}, workers {args.workers})")
    edge = {"auth_secrets": [SECRET], "allocation_bandwidth_kbps": 0, "allowed_peer_networks": ["127.0.0.0/8"],
            "max_allocations_per_user": 1000, "kernel_offload": kernel, "native_forwarder": native,
            "workers": args.workers}
    try:
        with UmedgeServer(workdir / name, edge, python=args.python) as server, EchoPeer() as peer:
            try:
                drive(server.pid, server.port, peer, args, result)
                if offload and "kernel offload: on" not in server.log_text():
                    raise RuntimeError("the kernel offload did not attach")
                if native == "on" and "native forwarder: on" not in server.log_text():
                    raise RuntimeError("the native forwarder did not start")
            except _RUN_FAILURES as exc:
                raise RuntimeError(f"{exc}\n--- umedge log (tail) ---\n{server.log_text()[-1500:]}") from exc
    except _RUN_FAILURES as exc:  # report and go on with the other server
        result.error = f"{type(exc).__name__}: {exc}"
    return result


ROWS = (  # (label, attribute, format)
    ("relayed datagrams/s", "datagrams_per_s", "{:,.0f}"),
    ("offered messages/s", "offered_messages_per_s", "{:,.0f}"),
    ("server CPU s", "server_cpu_s", "{:.2f}"),
    ("server CPU utilization", "server_cpu_utilization", "{:.2f}"),
    ("CPU s per million datagrams", "cpu_s_per_million", "{:.2f}"),
    ("datagrams per CPU-second", "datagrams_per_cpu_s", "{:,.0f}"),
    ("loss %", "loss_percent", "{:.2f}"),
    ("window s", "window_s", "{:.1f}"),
    ("uclient CPU s", "uclient_cpu_s", "{:.2f}"),
    ("turnutils_peer CPU s", "peer_cpu_s", "{:.2f}"),
    ("whole-system CPU s", "system_cpu_s", "{:.2f}"),
    ("datagrams per system CPU-s", "datagrams_per_system_cpu_s", "{:,.0f}"),
)
RATIOS = ("datagrams_per_s", "cpu_s_per_million", "datagrams_per_cpu_s", "datagrams_per_system_cpu_s")


def ratios(results: dict[str, Measurement], name: str = "umedge") -> dict[str, float | None]:
    """`name` over coturn for each of RATIOS (and the loss difference), when both ran."""
    coturn, umedge = results.get("coturn"), results.get(name)
    out: dict[str, float | None] = {}
    if coturn and umedge and coturn.ok and umedge.ok:
        for attr in RATIOS:
            base = getattr(coturn, attr)
            out[attr] = getattr(umedge, attr) / base if base else None
        out["loss_percent_difference"] = umedge.loss_percent - coturn.loss_percent
    return out


def print_table(results: dict[str, Measurement], args: argparse.Namespace) -> None:
    names = list(results)
    print(f"turnutils_uclient -c -z {args.interval_ms} -m {args.sessions} -n {args.messages} -l {args.length}"
          f" over {'TCP' if args.tcp else 'UDP'}; window {args.seconds}s after {args.warmup}s warmup")
    width = 30
    print(f"{'':{width}}" + "".join(f"{name:>16}" for name in names))
    for label, attr, fmt in ROWS:
        cells = [fmt.format(getattr(results[n], attr)) if results[n].ok else "-" for n in names]
        print(f"{label:{width}}" + "".join(f"{cell:>16}" for cell in cells))
    for name in names:
        if results[name].error:
            print(f"{name}: FAILED: {results[name].error}")
        elif results[name].uclient_errors:
            print(f"{name}: uclient reported: {results[name].uclient_errors[:3]}")
    for name in names:
        r = ratios(results, name) if name != "coturn" else {}
        if r:
            print(f"{name}/coturn: " + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} -"
                                                for k, v in r.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window per server (default 15)")
    parser.add_argument("--sessions", type=int, default=10, help="uclient -m (default 10)")
    parser.add_argument("--messages", type=int, default=200_000, help="uclient -n cap per client (default 200000)")
    parser.add_argument("--length", type=int, default=170, help="uclient -l payload bytes (default 170)")
    parser.add_argument("--interval-ms", type=int, default=0, help="uclient -z (default 0: unpaced)")
    parser.add_argument("--warmup", type=float, default=7.0, help="seconds skipped after setup (default 7)")
    parser.add_argument("--setup-timeout", type=float, default=30.0, help=argparse.SUPPRESS)
    parser.add_argument("--tcp", action="store_true", help="uclient -t (TCP to the server)")
    parser.add_argument("--only", choices=SERVERS, help="benchmark one server only")
    parser.add_argument("--offload", action="store_true", help='also umedge with kernel_offload = "on" (root)')
    parser.add_argument("--workers", type=int, default=1, help="umedge [edge] workers (default 1)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs umedge")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.seconds > 300 or args.sessions < 1 or args.sessions > 200 \
            or not 1 <= args.workers <= 8:
        parser.error("--seconds must be in (0, 300], --sessions in [1, 200] and --workers in [1, 8]")

    results: dict[str, Measurement] = {}
    with tempfile.TemporaryDirectory(prefix="turn-bench-") as tmp:
        for name in SERVERS:
            if args.only and name != args.only or (name == "umedge-offload" and not args.offload
                                                   and args.only != name):
                continue
            if not args.json:
                print(f"benchmarking {name} ...", file=sys.stderr, flush=True)
            if name == "coturn":
                results[name] = bench_coturn(args, Path(tmp))
            else:
                results[name] = bench_umedge(args, Path(tmp), name)
    if args.json:
        print(json.dumps({"load": {"sessions": args.sessions, "messages": args.messages, "length": args.length,
                                   "interval_ms": args.interval_ms, "no_rtcp": True,
                                   "transport": "tcp" if args.tcp else "udp", "seconds": args.seconds,
                                   "warmup": args.warmup},
                          "results": {name: asdict(m) for name, m in results.items()},
                          "umedge_over_coturn": ratios(results),
                          "umedge_native_over_coturn": ratios(results, "umedge-native"),
                          "umedge_offload_over_coturn": ratios(results, "umedge-offload"),
                          "workers": args.workers}, indent=2))
    else:
        print_table(results, args)
    return 0 if all(m.ok for m in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
