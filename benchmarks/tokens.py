"""Token issuing throughput and CPU cost of the A/V Authentication service.

    python benchmarks/tokens.py [--seconds 5] [--window 16] [--only https|sip|sip-pipelined|sip-batch] [--json]

Starts `umedge serve --roles edge` on free loopback ports in a temporary
directory (pool CA, a client certificate, one API key) and, one after the
other, for --seconds each:

  https          POST /v1/credentials on ONE HTTPS keep-alive connection, one request at a time
                 (bearer API key; http.client)
  sip            SIP SERVICE (MRAS, one credentialsRequest) on ONE MTLS connection, one at a time
                 (um.mras.client.MrasClient, the mailbox worker's client)
  sip-pipelined  the same with --window SERVICE requests in flight on the one connection
  sip-batch      SERVICE requests carrying 100 credentialsRequests each, one at a time

For each: tokens issued, tokens/s (wall), the server process's CPU seconds
(utime + stime from /proc) and tokens per server CPU-second, the number to
compare across machines, since the client runs on the same cores. Every
token is audit-logged by the server as in production (stderr goes to a file
in the temporary directory). Everything is removed on the way out.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import ssl
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from certs import pki  # noqa: E402
from tests.conftest import ServeProcess, write_config  # noqa: E402
from tests.support import process_tree_cpu  # noqa: E402
from um.mras import codec  # noqa: E402
from um.mras.client import MrasClient, client_ssl_context  # noqa: E402

API_KEY = "benchmark-api-key-0123456789abcdef"
SECRET = "benchmark-secret-0123456789"
MODES = ("https", "sip", "sip-pipelined", "sip-batch")


@dataclass
class Result:
    mode: str
    requests: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    tokens_per_s: float = 0.0
    tokens_per_server_cpu_s: float = 0.0
    ok: bool = True
    error: str = ""


def measure(mode: str, pid: int, run) -> Result:  # type: ignore[no-untyped-def]
    result = Result(mode)
    cpu0, client0, t0 = process_tree_cpu(pid), time.process_time(), time.monotonic()
    try:
        result.requests, result.tokens = run()
    except Exception as error:  # noqa: BLE001 - reported, the other modes still run
        result.ok, result.error = False, f"{type(error).__name__}: {error}"
    result.wall_s = time.monotonic() - t0
    result.server_cpu_s = process_tree_cpu(pid) - cpu0
    result.client_cpu_s = time.process_time() - client0
    result.tokens_per_s = result.tokens / result.wall_s if result.wall_s else 0.0
    result.tokens_per_server_cpu_s = result.tokens / result.server_cpu_s if result.server_cpu_s else 0.0
    return result


def run_https(port: int, certs: Path, seconds: float) -> tuple[int, int]:
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.check_hostname = False  # by IP; the pool CA check still applies
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    body = json.dumps({"identity": "sip:bench@example.test", "ttl": 3600}).encode()
    count, deadline = 0, time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            connection.request("POST", "/v1/credentials", body, headers)
            response = connection.getresponse()
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
            count += 1
    finally:
        connection.close()
    return count, count


async def _sip(port: int, certs: Path, seconds: float, window: int, batch: int) -> tuple[int, int]:
    client = await MrasClient.connect("127.0.0.1", port, client_ssl_context(certs, "client1"),
                                      server_hostname="node1.example.test")
    request = codec.Request("1", "2.0", "sip:mrasloc.example.test@example.test", "sip:bench@example.test", tuple(
        codec.CredentialsRequest(str(i), f"sip:bench{i}@example.test", "intranet", 60) for i in range(batch)))
    count = 0
    deadline = time.monotonic() + seconds

    async def lane() -> None:
        nonlocal count
        while time.monotonic() < deadline:
            response = await client.request(request)
            if not response.ok or len(response.credentials_responses) != batch:
                raise RuntimeError(f"MRAS answered {response.reason_phrase}")
            count += 1

    try:
        await asyncio.gather(*(lane() for _ in range(window)))
    finally:
        await client.close()
    return count, count * batch


def run_sip(port: int, certs: Path, seconds: float, window: int = 1, batch: int = 1) -> tuple[int, int]:
    try:
        import uvloop

        return uvloop.run(_sip(port, certs, seconds, window, batch))
    except ImportError:
        return asyncio.run(_sip(port, certs, seconds, window, batch))


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    print(f"token issuing, {args.seconds:g} s per mode, server: umedge serve --roles edge (one process), "
          f"client on the same machine ({os.cpu_count()} CPUs)")
    header = ("mode", "requests", "tokens", "tokens/s", "server CPU s", "tokens/server CPU-s", "client CPU s")
    rows = [(r.mode if r.ok else f"{r.mode} (FAILED: {r.error})", str(r.requests), str(r.tokens),
             f"{r.tokens_per_s:.0f}", f"{r.server_cpu_s:.2f}", f"{r.tokens_per_server_cpu_s:.0f}",
             f"{r.client_cpu_s:.2f}") for r in results]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    print(f"(sip-pipelined: {args.window} requests in flight; sip-batch: 100 credentialsRequests per SERVICE)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per mode (default 5)")
    parser.add_argument("--window", type=int, default=16, help="requests in flight for sip-pipelined (default 16)")
    parser.add_argument("--only", choices=MODES, action="append", help="run only these modes (repeatable)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 120 or not 1 <= args.window <= 256:
        parser.error("--seconds must be in (0, 120] and --window in [1, 256]")
    modes = [m for m in MODES if not args.only or m in args.only]
    results = []
    with tempfile.TemporaryDirectory(prefix="token-bench-") as tmp:
        files = write_config(Path(tmp), {"edge": {"auth_secrets": [SECRET]}, "auth": {"api_keys": [API_KEY]}})
        process = ServeProcess(files.path, "--roles", "edge")
        try:
            process.wait_ready()
            pki.issue(files.certs_dir, "client1", [])
            pid, certs = process.proc.pid, files.certs_dir
            https_port, mras_port = files.port("auth", "https_port"), files.port("auth", "mras_tls_port")
            runs = {
                "https": lambda: run_https(https_port, certs, args.seconds),
                "sip": lambda: run_sip(mras_port, certs, args.seconds),
                "sip-pipelined": lambda: run_sip(mras_port, certs, args.seconds, window=args.window),
                "sip-batch": lambda: run_sip(mras_port, certs, args.seconds, batch=100),
            }
            for mode in modes:
                if not args.json:
                    print(f"running {mode} ...", file=sys.stderr, flush=True)
                results.append(measure(mode, pid, runs[mode]))
        finally:
            process.stop()
            process.kill()
    if args.json:
        print(json.dumps({"seconds": args.seconds, "window": args.window, "cpus": os.cpu_count(),
                          "results": [asdict(r) for r in results]}, indent=2))
    else:
        print_table(results, args)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
