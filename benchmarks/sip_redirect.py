"""INVITE -> 302 redirects per second and per CPU-second: umedge's call router vs Kamailio.

    python benchmarks/sip_redirect.py [--calls 30000] [--rate 8000] [--only umedge|kamailio] [--json]

Both servers run alone on 127.0.0.1 and get the same SIPp scenario
(tests/sip/sipp_tools.py: INVITE, optional 100, 302 whose Contact is checked,
ACK) over one TCP connection (`-t t1`), `--calls` calls offered at `--rate`
calls/s:

  umedge    `umedge serve --roles callrouter,mailbox,worker` on the demo dial
            plan (pilot 5000, To 1001): the full call router path (gateway
            check, hunt group, dial plan, directory, the mailbox service's
            active worker), log level warn.
  Kamailio  Debian's kamailio with sl + textops: ACK is absorbed, every INVITE
            gets sl_send_reply("302") with append_to_reply("Contact: ...") naming
            the same worker URI (children=1, tcp_children=2).

The server's CPU (utime + stime of its process tree, from /proc) is sampled
right before and after SIPp runs:

  redirects/s      = successful calls / SIPp's elapsed time
  redirects/CPU-s  = successful calls / server CPU seconds in that window
  ratio            = umedge redirects/CPU-s / Kamailio redirects/CPU-s

Bounded: SIPp stops after --calls or --timeout seconds, whichever is first;
servers and temporary directories are removed on the way out.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.conftest import ServeProcess, free_port  # noqa: E402
from tests.sip.sipp_tools import run_sipp, write_scenario  # noqa: E402
from tests.sip.um_nodes import um_config  # noqa: E402
from tests.support import process_tree_cpu  # noqa: E402

CONTACT_RE = r"^\s*<sip:5000@127\.0\.0\.1:[0-9]+;transport=tcp>\s*$"
KAMAILIO_CFG = """#!KAMAILIO
debug=-1
log_stderror=yes
fork=yes
children=1
tcp_children={tcp_children}
auto_aliases=no
dns=no
rev_dns=no
mhomed=0
listen=tcp:127.0.0.1:{port}
loadmodule "sl.so"
loadmodule "textops.so"
request_route {{
    if (is_method("ACK")) {{ exit; }}
    if (is_method("INVITE")) {{
        append_to_reply("Contact: <sip:5000@127.0.0.1:{worker};transport=tcp>\\r\\n");
        sl_send_reply("302", "Moved Temporarily");
        exit;
    }}
    sl_send_reply("200", "OK");
}}
"""


@dataclass
class Measurement:
    server: str
    ok: bool = False
    error: str = ""
    calls: int = 0
    successful: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    redirects_per_s: float = 0.0
    redirects_per_cpu_s: float = 0.0


def measure(name: str, pid: int, port: int, workdir: Path, calls: int, rate: int, timeout: float) -> Measurement:
    scenario = write_scenario(workdir / f"{name}.xml", contact_re=CONTACT_RE)
    run_sipp(scenario, port, calls=min(500, calls), rate=min(rate, 1000), timeout=30)  # warm-up
    before = process_tree_cpu(pid)
    result = run_sipp(scenario, port, calls=calls, rate=rate, timeout=timeout)
    cpu = process_tree_cpu(pid) - before
    m = Measurement(name, calls=calls, successful=result.successful, failed=result.failed,
                    elapsed_s=round(result.elapsed, 3), cpu_s=round(cpu, 3))
    m.ok = result.failed == 0 and result.successful == calls
    if not m.ok:
        m.error = result.output[-600:]
    if result.elapsed > 0:
        m.redirects_per_s = round(result.successful / result.elapsed, 1)
    if cpu > 0:
        m.redirects_per_cpu_s = round(result.successful / cpu, 1)
    return m


def bench_umedge(workdir: Path, calls: int, rate: int, timeout: float) -> Measurement:
    # The per-source SIP rate limit would throttle the one SIPp source: lift it, as for Kamailio (none).
    files = um_config(workdir, {"log": {"level": "warn"},
                                "limits": {"sip_requests_per_second": 1_000_000, "sip_burst": 1_000_000}})
    process = ServeProcess(files.path, "--roles", "callrouter,mailbox,worker")
    try:
        process.wait_ready()
        return measure("umedge", process.proc.pid, files.port("callrouter", "sip_tcp_port"), workdir, calls, rate,
                       timeout)
    finally:
        process.stop()
        process.kill()


def bench_kamailio(workdir: Path, calls: int, rate: int, timeout: float, tcp_children: int) -> Measurement:
    if shutil.which("kamailio") is None:
        return Measurement("kamailio", error="kamailio not installed (apt-get install kamailio)")
    port = free_port()
    cfg = workdir / "kamailio.cfg"
    cfg.write_text(KAMAILIO_CFG.format(port=port, worker=5065, tcp_children=tcp_children))
    log = open(workdir / "kamailio.log", "w+b")  # a file: an undrained pipe would stall Kamailio
    proc = subprocess.Popen(["kamailio", "-f", str(cfg), "-DD", "-E", "-m", "64", "-M", "8", "-Y", str(workdir),
                             "-w", str(workdir)], stdout=subprocess.DEVNULL, stderr=log,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        import socket
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None:
                    return Measurement("kamailio", error=(workdir / "kamailio.log").read_text()[-600:])
                time.sleep(0.1)
        return measure("kamailio", proc.pid, port, workdir, calls, rate, timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=5)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=30000)
    parser.add_argument("--rate", type=int, default=8000, help="calls/s SIPp offers")
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--tcp-children", type=int, default=2, help="Kamailio's TCP worker processes")
    parser.add_argument("--only", choices=("umedge", "kamailio"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results: list[Measurement] = []
    with tempfile.TemporaryDirectory(prefix="sip-redirect-") as tmp:
        for name in ("umedge", "kamailio"):
            if args.only and args.only != name:
                continue
            workdir = Path(tmp) / name
            workdir.mkdir()
            if name == "umedge":
                results.append(bench_umedge(workdir, args.calls, args.rate, args.timeout))
            else:
                results.append(bench_kamailio(workdir, args.calls, args.rate, args.timeout, args.tcp_children))
    by_name = {m.server: m for m in results}
    ratio = None
    if "umedge" in by_name and "kamailio" in by_name and by_name["kamailio"].redirects_per_cpu_s:
        ratio = round(by_name["umedge"].redirects_per_cpu_s / by_name["kamailio"].redirects_per_cpu_s, 3)
    if args.json:
        print(json.dumps({"results": [asdict(m) for m in results], "ratio_per_cpu_s": ratio}, indent=1))
    else:
        print(f"{'server':9} {'ok':3} {'calls':>6} {'failed':>6} {'elapsed s':>9} {'CPU s':>6} "
              f"{'redirects/s':>11} {'redirects/CPU-s':>15}")
        for m in results:
            print(f"{m.server:9} {'yes' if m.ok else 'NO':3} {m.successful:6} {m.failed:6} {m.elapsed_s:9.2f} "
                  f"{m.cpu_s:6.2f} {m.redirects_per_s:11.0f} {m.redirects_per_cpu_s:15.0f}")
            if m.error:
                print(f"  {m.server}: {m.error.strip().splitlines()[-1] if m.error.strip() else m.error}")
        if ratio is not None:
            print(f"ratio umedge/kamailio per CPU-second: {ratio:.3f} (target >= 0.2, goal 0.5)")
    return 0 if all(m.ok for m in results) else 1


if __name__ == "__main__":
    sys.exit(main())
