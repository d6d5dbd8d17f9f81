"""Run coturn's own programs (4.6.1): `turnutils_peer`, `turnutils_uclient`, `turnserver`.

Used by tests/turn/test_coturn_interop.py and benchmarks/turn_relay.py; imports
nothing from pytest. Everything binds to 127.0.0.1 and every process started
here is stopped by its context manager (`with ...:`) or `.stop()`/`.kill()`.

What the tools do (established by `-h`, the man pages, the 4.6 sources of
src/apps/uclient/{mainuclient,startuclient,uclient}.c, and runs against
coturn's own turnserver on this machine):

turnutils_uclient [flags] -p PORT SERVER_IP
  -W SECRET   TURN REST API: username = "<now + 86400>:<-u USER>" (expiry a
              fixed one day ahead; separator ":" unless -C; no -u -> just
              "<expiry>"), password = base64(HMAC-SHA1(SECRET, username)).
              Long-term credentials: MESSAGE-INTEGRITY (SHA1) with key
              MD5(username:realm:password); REALM and NONCE come from the 401.
              A server must accept an expiry 24 h in the future.
  -u / -w     plain long-term username / password (without -W).
  -m N        number of clients. Without -c every client is an RTP+RTCP pair, so
              N is rounded up to even and N/2 sessions are made; with -y N is
              rounded up to a multiple of 4 (2 with -c). -m 10 -y -> 12 clients.
  -n N        messages per client; totals are N x clients.
  -l BYTES    payload bytes per message (default 100).
  -z MS       per-client send interval (default 20 ms, RTP pacing). -z 0: no
              pacing, up to 50 messages per client per ~1 ms timer tick.
              Every client starts sending at a random 1-6 s after setup, and if
              anything is missing at the end it waits STOPPING_TIME = 10 s, so a
              run lasts >= ~6 s and a lossy one >= ~16 s.
  -c          no RTCP clients. Allocates then carry EVEN-PORT (R=0) at random
              (half of them) or nothing. Without -c, Allocates alternate (one
              global toggle) between EVEN-PORT with R=1 and RESERVATION-TOKEN =
              the token of the previous success (0 if the server sent none); the
              RTCP leg talks to peer port + 1.
  -t          TCP to the server (default UDP). ChannelData is padded to 4 bytes
              both ways (uclient frames TCP with padding).
  -S          TLS (with -t) or DTLS (without). Each connect picks a random SSL
              method (SSLv23/SSLv3/TLSv1/TLSv1.1/TLSv1.2; the old ones fail and
              are retried, up to 32 times), offers ALPN "http/1.1, stun.turn,
              stun.nat-discovery"; no verification unless -E CA_FILE (chain
              only, no host name check). At -z 0 uclient's TLS read path
              mis-frames and reports "Wrong integrity..." and ~70 % loss even
              against coturn: pace TLS runs (>= 5 ms).
  -s          Send/Data indications (CreatePermission, Send with XOR-PEER-ADDRESS,
              DATA, FINGERPRINT) instead of ChannelBind + ChannelData.
  -y          client-to-client: clients pair up, each pair's relays send to each
              other (the peers are the relay addresses); turnutils_peer unused.
  -e IP -r P  peer address and port (default 3480); RTCP uses P + 1.
  -v          verbose: one line per request/response ("allocate sent", ...).
  Per session, before the real allocations, a "probe" Allocate on its own socket
  that is never deleted (on UDP it stays until it expires; on TCP the socket
  closes). So per session: -m 10 -> 5 x (probe + RTP + RTCP) = 15 allocations;
  -m 10 -c -> 10 x 2 = 20; -m 10 -y -> 3 x (probe + 4) = 15. All under one user.
  Requests: Allocate (REQUESTED-TRANSPORT UDP, LIFETIME 777, REQUESTED-ADDRESS-
  FAMILY IPv4 when the peer is IPv4, EVEN-PORT / RESERVATION-TOKEN as above,
  FINGERPRINT), Refresh 777 then 600, ChannelBind with random channels in
  0x4000-0x7FFF (two channels per allocation: peer port + 1 twice, then peer
  port twice, i.e. rebinding the same channel to the same peer must succeed),
  CreatePermission; at the end Refresh LIFETIME 0. Success responses must carry
  a valid MESSAGE-INTEGRITY (checked once a nonce is known: failure = fatal
  during setup) and Allocate successes an XOR-RELAYED-ADDRESS of the family.
  Data it receives must be exactly -l bytes (DATA attribute) or -l..-l+3 bytes
  after a ChannelData header on the channel it bound.

  Output (stdout; each line "<seconds since start>: : ...", some printed twice):
    "start_mclient: msz=C, tot_send_msgs=S, tot_recv_msgs=R, ..."   once a second
    "start_mclient: tot_send_msgs=S, tot_recv_msgs=R"                final totals
    "Total transmit time is T"                                       seconds, integer
    "Total lost packets L (P%), total send dropped D (Q%)"          L = S - min(R, S)
    "Average round trip delay X ms; ..."
  Failures and exit codes: a run that reaches the end exits 0 whatever the loss.
  Error responses print "error NNN (reason)" for Allocate (a failed probe
  Allocate is printed but ignored; the real one exits), "channel bind: error 403
  (Forbidden IP)", "create permission error 403 (...)", "error 486 (Allocation
  Quota Reached)"; then exit 255. A wrong secret never prints 401: every 401
  carrying REALM + NONCE is taken as a challenge and retried, and after 32
  Allocates it prints "ERROR: Cannot complete Allocation" and exits 255 (-v
  shows 32 "allocate sent"). A TLS failure prints "tls_connect: cannot connect"
  lines and exits 255.

turnutils_peer -L 127.0.0.1 -p P   UDP echo on P and P + 1 (both bound).

turnserver (coturn 4.6.1), as CoturnServer starts it:
  -n (no config file), --no-cli, --no-rfc5780, -L/-E 127.0.0.1, -p PORT,
  -m 1 (= --relay-threads 1; plus listener, auth and admin threads),
  --use-auth-secret --static-auth-secret=S (repeatable: every one validates)
  --realm=example.test, --min-port/--max-port, --db <tmp>/turndb (else it opens
  /var/lib/turn/turndb), --log-file <tmp> --simple-log --no-stdout-log,
  --pidfile <tmp>, --no-dtls and --no-tls unless --cert/--pkey are given.
  Loopback peers: 4.6.1 refuses 127.0.0.0/8 and ::1 unless
  --allow-loopback-peers; --allowed-peer-ip=127.0.0.1 alone still gives
  "403 (Forbidden IP)". Quotas: --user-quota and --total-quota both answer 486.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests import support
from tests.support import toml_value

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
REALM = "example.test"
RELAY_PORT_MIN = 50000  # same relay range as umedge's default, outside free_port's range
RELAY_PORT_MAX = 59999
UCLIENT_START_SPREAD = 6.0  # clients start 1-6 s after setup
UCLIENT_STOPPING_TIME = 10.0  # extra wait when packets are missing at the end

TOOLS = ("turnserver", "turnutils_uclient", "turnutils_peer")


def tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if not path:
        raise FileNotFoundError(f"{name} not installed (Debian package coturn)")
    return path


def missing_tools(names: Iterable[str] = TOOLS) -> list[str]:
    out = []
    for name in names:
        try:
            tool(name)
        except FileNotFoundError:
            out.append(name)
    return out


# --------------------------------------------------------------------------- ports


def _bindable(port: int, kind: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind((HOST, port))
        return True
    except OSError:
        return False


def free_port(taken: set[int] | None = None) -> int:
    """A loopback port free for TCP and UDP, below the relay range, not in `taken`."""
    return support.free_port(taken=taken)


def free_udp_pair(taken: set[int] | None = None) -> int:
    """A UDP port P with P + 1 also free (turnutils_peer binds both)."""
    taken = taken if taken is not None else set()
    for _ in range(200):
        port = free_port(taken)
        if port + 1 not in taken and _bindable(port + 1, socket.SOCK_DGRAM):
            taken.add(port + 1)
            return port
    raise RuntimeError("no free UDP port pair on 127.0.0.1")


# --------------------------------------------------------------------------- STUN probe

_MAGIC = 0x2112A442


def stun_binding_ok(port: int, transport: str = "udp", host: str = HOST, timeout: float = 0.5) -> bool:
    """True when a STUN Binding request on `transport` gets a Binding response."""
    tid = os.urandom(12)
    request = struct.pack("!HHI", 0x0001, 0, _MAGIC) + tid
    kind = socket.SOCK_DGRAM if transport == "udp" else socket.SOCK_STREAM
    try:
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.settimeout(timeout)
            if transport == "udp":
                sock.sendto(request, (host, port))
                data = sock.recv(2048)
            else:
                sock.connect((host, port))
                sock.sendall(request)
                data = sock.recv(2048)
    except OSError:
        return False
    return len(data) >= 20 and data[8:20] == tid and (struct.unpack("!H", data[:2])[0] & 0x3EEF) == 0x0001


def tcp_accepts(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- CPU accounting


# --------------------------------------------------------------------------- uclient

_PROGRESS = re.compile(r"^(\d+): : start_mclient: msz=(\d+), tot_send_msgs=(\d+), tot_recv_msgs=(\d+)")
_TOTALS = re.compile(r"start_mclient: tot_send_msgs=(\d+), tot_recv_msgs=(\d+)\s*$")
_LOST = re.compile(r"Total lost packets (\d+) \(([-\w.]+)%\), total send dropped (\d+) \(([-\w.]+)%\)")
_TRANSMIT = re.compile(r"Total transmit time is (\d+)")
_CONNECT = re.compile(r"Total connect time is (\d+)")
_RTT = re.compile(r"Average round trip delay ([\d.]+) ms")
_ERROR_CODE = re.compile(r"error (\d{3})\b")
_FAILURE_MARKERS = ("error", "cannot", "wrong integrity", "unknown", "forbidden", "refused")


@dataclass
class UclientResult:
    """One turnutils_uclient run: its final statistics as printed, and how it ended."""

    command: list[str]
    returncode: int
    elapsed: float  # wall seconds, process start to exit
    output: str  # stdout + stderr, raw
    timed_out: bool = False
    sent: int | None = None  # final tot_send_msgs
    received: int | None = None  # final tot_recv_msgs
    lost: int | None = None  # "Total lost packets L"
    lost_percent: float | None = None
    send_dropped: int | None = None
    transmit_time: int | None = None  # "Total transmit time is T" (s)
    connect_time: int | None = None
    average_rtt_ms: float | None = None
    error_codes: list[int] = field(default_factory=list)  # NNN of every "error NNN"
    error_lines: list[str] = field(default_factory=list)  # distinct failure lines
    progress: list[tuple[int, int, int, int]] = field(default_factory=list)  # (s, clients, sent, recv)

    @property
    def completed(self) -> bool:
        """The run reached its final statistics and exited 0."""
        return self.returncode == 0 and not self.timed_out and self.sent is not None

    @property
    def allocation_refused(self) -> bool:
        """uclient gave up on Allocate after 32 challenges: how a 401 looks from uclient."""
        return "Cannot complete Allocation" in self.output

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def describe(self) -> str:
        stats = (f"sent={self.sent} received={self.received} lost={self.lost} ({self.lost_percent}%) "
                 f"dropped={self.send_dropped}")
        return (f"$ {' '.join(self.command)}\nexit {self.returncode}{' (timed out)' if self.timed_out else ''} "
                f"after {self.elapsed:.1f}s; {stats}; error codes {self.error_codes}\n"
                f"failure lines: {self.error_lines[:10]}\n--- last output ---\n{self.tail()}")


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # "nan" / "-nan" when nothing was sent


def parse_uclient_output(result: UclientResult) -> UclientResult:
    """Fill the statistics fields of `result` from `result.output`."""
    seen: set[str] = set()
    for raw in result.output.splitlines():
        line = raw.strip()
        if m := _PROGRESS.search(line):
            result.progress.append(tuple(int(g) for g in m.groups()))  # type: ignore[arg-type]
            continue
        if m := _TOTALS.search(line):
            result.sent, result.received = int(m.group(1)), int(m.group(2))
        elif m := _LOST.search(line):
            result.lost, result.send_dropped = int(m.group(1)), int(m.group(3))
            result.lost_percent = _number(m.group(2))
        elif m := _TRANSMIT.search(line):
            result.transmit_time = int(m.group(1))
        elif m := _CONNECT.search(line):
            result.connect_time = int(m.group(1))
        elif m := _RTT.search(line):
            result.average_rtt_ms = float(m.group(1))
        else:
            body = line.split(": : ", 1)[-1]
            if any(marker in body.lower() for marker in _FAILURE_MARKERS) and body not in seen:
                seen.add(body)
                result.error_lines.append(body)
                result.error_codes.extend(int(c) for c in _ERROR_CODE.findall(body))
    result.error_codes = sorted(set(result.error_codes))
    return result


def uclient_command(server_port: int, *, server_host: str = HOST, secret: str | None = None,
                    user: str = "uclient", password: str | None = None, peer_port: int | None = None,
                    peer_host: str = HOST, sessions: int = 10, messages: int = 1000, length: int = 170,
                    interval_ms: int | None = None, tcp: bool = False, tls: bool = False,
                    send_indications: bool = False, client_to_client: bool = False,
                    no_rtcp: bool = False, ca_file: str | Path | None = None, verbose: bool = False,
                    extra: Sequence[str] = ()) -> list[str]:
    """The turnutils_uclient argument vector for one run (see the module docstring)."""
    args = [tool("turnutils_uclient")]
    for flag, on in (("-t", tcp or tls), ("-S", tls), ("-s", send_indications), ("-y", client_to_client),
                     ("-c", no_rtcp), ("-v", verbose)):
        if on:
            args.append(flag)
    args += ["-u", user]
    if secret is not None:
        args += ["-W", secret]
    elif password is not None:
        args += ["-w", password]
    if not client_to_client:
        if peer_port is None:
            raise ValueError("peer_port is needed unless client_to_client")
        args += ["-e", peer_host, "-r", str(peer_port)]
    args += ["-m", str(sessions), "-n", str(messages), "-l", str(length)]
    if interval_ms is not None:
        args += ["-z", str(interval_ms)]
    if ca_file is not None:
        args += ["-E", str(ca_file)]
    args += [*extra, "-p", str(server_port), server_host]
    return args


def uclient_clients(sessions: int, *, no_rtcp: bool = False, client_to_client: bool = False) -> int:
    """How many clients uclient really runs for -m `sessions` (see -m above)."""
    clients = max(1, sessions)
    if client_to_client:
        step = 2 if no_rtcp else 4
        clients += (step - clients % step) % step
    elif not no_rtcp:
        clients += clients % 2
    return clients


def uclient_timeout(messages: int, interval_ms: int | None, sessions: int = 10) -> float:
    """A generous bound on one run's wall time."""
    interval = 20 if interval_ms is None else interval_ms
    sending = messages * max(interval, 0.2) / 1000
    return 15 + UCLIENT_START_SPREAD + UCLIENT_STOPPING_TIME + 1.5 * sending + 0.2 * sessions


class UclientProcess:
    """A turnutils_uclient run in the background; output goes to an anonymous temporary file."""

    def __init__(self, command: Sequence[str], timeout: float) -> None:
        self.command = list(command)
        self.timeout = timeout
        self._out = tempfile.TemporaryFile(mode="w+b")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=self._out,
                                     stderr=subprocess.STDOUT)
        self._result: UclientResult | None = None

    def wait(self) -> UclientResult:
        if self._result is not None:
            return self._result
        timed_out = False
        try:
            self.proc.wait(timeout=max(0.0, self.started + self.timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            self.kill()
        elapsed = time.monotonic() - self.started
        self._out.seek(0)
        output = self._out.read().decode(errors="replace")
        self._out.close()
        self._result = parse_uclient_output(UclientResult(self.command, self.proc.returncode, elapsed,
                                                          output, timed_out))
        return self._result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def start_uclient(server_port: int, *, timeout: float | None = None, **options: object) -> UclientProcess:
    command = uclient_command(server_port, **options)  # type: ignore[arg-type]
    if timeout is None:
        timeout = uclient_timeout(int(options.get("messages", 1000)),  # type: ignore[arg-type]
                                  options.get("interval_ms"), int(options.get("sessions", 10)))  # type: ignore[arg-type]
    return UclientProcess(command, timeout)


def run_uclient(server_port: int, **options: object) -> UclientResult:
    """Run turnutils_uclient to the end (or its timeout) and parse what it printed."""
    run = start_uclient(server_port, **options)  # type: ignore[arg-type]
    try:
        return run.wait()
    finally:
        run.kill()


def run_uclients(runs: dict[str, dict[str, object]], server_port_for: Callable[[dict[str, object]], int]
                 ) -> dict[str, UclientResult]:
    """Several uclient runs at once (each {name: options}); all killed on the way out."""
    started: dict[str, UclientProcess] = {}
    try:
        for name, options in runs.items():
            started[name] = start_uclient(server_port_for(options), **options)  # type: ignore[arg-type]
        return {name: run.wait() for name, run in started.items()}
    finally:
        for run in started.values():
            run.kill()


# --------------------------------------------------------------------------- processes


class _Managed:
    proc: subprocess.Popen[bytes] | None = None
    name = "process"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 5) -> None:
        """SIGTERM, then SIGKILL after `timeout`; always reaps."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.wait()


class EchoPeer(_Managed):
    """turnutils_peer on 127.0.0.1: UDP echo on `port` and `port + 1`."""

    name = "turnutils_peer"

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port if port is not None else free_udp_pair()
        self.log_path = log_path

    def start(self, timeout: float = 5) -> None:
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen([tool("turnutils_peer"), "-L", HOST, "-p", str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()  # type: ignore[union-attr]
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {self.port, self.port + 1}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            while pending and time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"turnutils_peer exited {self.proc.returncode} (port {self.port} taken?)")
                for port in sorted(pending):
                    sock.sendto(b"ping", (HOST, port))
                    try:
                        data, source = sock.recvfrom(64)
                    except OSError:
                        continue
                    if data == b"ping":
                        pending.discard(source[1])
        if pending:
            raise RuntimeError(f"turnutils_peer did not echo on {sorted(pending)} within {timeout}s")


class CoturnServer(_Managed):
    """coturn's turnserver on 127.0.0.1 with TURN REST API secrets, for comparison runs.

    Everything it writes (log, pid file, SQLite db, stdout) lives in `directory`.
    `allow_loopback_peers` adds --allow-loopback-peers --allowed-peer-ip=127.0.0.1 so
    relays may reach turnutils_peer; without it coturn answers 403 (Forbidden IP).
    """

    name = "turnserver"

    def __init__(self, directory: Path, secrets: Sequence[str], *, realm: str = REALM,
                 allow_loopback_peers: bool = True, port: int | None = None,
                 tls_port: int | None = None, cert: Path | None = None, key: Path | None = None,
                 relay_threads: int = 1, user_quota: int = 0, total_quota: int = 0, max_bps: int = 0,
                 verbose: bool = False, extra: Sequence[str] = ()) -> None:
        if not secrets:
            raise ValueError("at least one secret")
        taken: set[int] = set()
        self.directory = Path(directory)
        self.secrets = list(secrets)
        self.realm = realm
        self.port = port if port is not None else free_port(taken)
        self.tls = cert is not None
        self.tls_port = (tls_port if tls_port is not None else free_port(taken)) if self.tls else None
        self.cert, self.key = cert, key
        self.log_path = self.directory / "turnserver.log"
        self.pid_path = self.directory / "turnserver.pid"
        self.stdout_path = self.directory / "turnserver.stdout"
        args = [tool("turnserver"), "-n", "--no-cli", "--no-rfc5780", "--no-dtls",
                "--listening-ip", HOST, "--relay-ip", HOST, "--listening-port", str(self.port),
                "--min-port", str(RELAY_PORT_MIN), "--max-port", str(RELAY_PORT_MAX),
                "--relay-threads", str(relay_threads), "--use-auth-secret",
                *[f"--static-auth-secret={secret}" for secret in self.secrets],
                f"--realm={realm}", f"--db={self.directory / 'turndb'}",
                f"--log-file={self.log_path}", "--simple-log", "--no-stdout-log",
                f"--pidfile={self.pid_path}"]
        if self.tls:
            args += ["--tls-listening-port", str(self.tls_port), f"--cert={cert}", f"--pkey={key}"]
        else:
            args += ["--no-tls"]
        if allow_loopback_peers:
            args += ["--allow-loopback-peers", f"--allowed-peer-ip={HOST}"]
        if user_quota:
            args += [f"--user-quota={user_quota}"]
        if total_quota:
            args += [f"--total-quota={total_quota}"]
        if max_bps:
            args += [f"--max-bps={max_bps}"]
        if verbose:
            args += ["--verbose"]
        self.args = [*args, *extra]

    def start(self, timeout: float = 10) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.stdout_path, "wb") as out:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=self.directory)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited {self.proc.returncode}:\n{self.log_text()[-3000:]}")
            if (stun_binding_ok(self.port, "udp") and stun_binding_ok(self.port, "tcp")
                    and (self.tls_port is None or tcp_accepts(self.tls_port))):
                return
            time.sleep(0.1)
        raise RuntimeError(f"turnserver not ready in {timeout}s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        parts = []
        for path in (self.log_path, self.stdout_path):
            try:
                parts.append(path.read_text(errors="replace"))
            except OSError:
                pass
        return "\n".join(parts)

    @staticmethod
    def version() -> str:
        done = subprocess.run([tool("turnserver"), "--version"], capture_output=True, text=True, timeout=10)
        return (done.stdout or done.stderr).strip().splitlines()[-1] if (done.stdout or done.stderr) else "?"


def make_self_signed_cert(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed CA:TRUE certificate for 127.0.0.1/localhost (usable as its own -E CA file)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name),
                                                        x509.IPAddress(ipaddress.ip_address(HOST))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


# --------------------------------------------------------------------------- umedge (for scripts)


class UmedgeServer(_Managed):
    """`umedge serve --roles edge` on free loopback ports, for scripts that cannot use tests/conftest.py.

    Writes `directory`/config.toml ([node], [edge] with `edge` overrides, [auth] ports);
    the node creates its CA and certificate under `directory`/certs on first start.
    """

    name = "umedge"

    def __init__(self, directory: Path, edge: dict[str, object], python: str = sys.executable,
                 roles: Sequence[str] = ("edge",), web_port: int | None = None) -> None:
        taken: set[int] = set()
        self.roles = list(roles)
        self.directory = Path(directory)
        self.port = free_port(taken)
        self.tls_port = free_port(taken)
        self.values: dict[str, dict[str, object]] = {
            "node": {"name": "node1", "state_dir": "state", "certs_dir": "certs"},
            "edge": {"turn_udp_port": self.port, "turn_tcp_port": self.port, "turn_tls_port": self.tls_port,
                     "kernel_offload": "off", **edge},
            "auth": {"https_port": free_port(taken), "mras_tls_port": free_port(taken)},
        }
        if web_port is not None:
            self.values["web"] = {"http_port": web_port}
        self.config_path = self.directory / "config.toml"
        self.log_path = self.directory / "serve.log"
        self.python = python
        self.stdout_lines: list[str] = []

    @property
    def ca_file(self) -> Path:
        return self.directory / "certs" / "ca.crt"

    def start(self, timeout: float = 30) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join(
            f"[{section}]\n" + "\n".join(f"{k} = {toml_value(v)}" for k, v in table.items()) + "\n"
            for section, table in self.values.items()))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([self.python, "-m", "edge.node.cli", "serve",
                                          "--config", str(self.config_path), "--roles", ",".join(self.roles)],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, cwd=ROOT)
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        done = threading.Event()
        ready = threading.Event()
        proc = self.proc

        def read() -> None:  # keeps draining stdout so the server never blocks on it
            for raw in proc.stdout:  # type: ignore[union-attr]
                line = raw.decode(errors="replace")
                self.stdout_lines.append(line)
                if line.startswith("ready: "):
                    ready.set()
                    done.set()
            done.set()

        threading.Thread(target=read, daemon=True).start()
        done.wait(timeout)
        if not ready.is_set():
            raise RuntimeError(f"umedge serve not ready (exit {self.proc.poll()}):\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout: float = 5) -> None:
        """SIGTERM starts a drain; a second one stops at once, so the node still cleans up (its kernel offload)."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
        super().stop(timeout)
