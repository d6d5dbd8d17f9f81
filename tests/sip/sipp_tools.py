"""SIPp driving for the tests and benchmarks/sip_redirect.py: scenario building blocks (a gateway's
requests, the call that follows the router's 302 to the worker), the redirect scenario, runs, a TLS tunnel.

The scenario sends INVITE, accepts an optional 100, expects exactly a 302
whose Contact matches a regular expression (SIPp's ereg with check_it: a
mismatch fails the call) and ACKs it. Debian's sipp is built without
OpenSSL, so TLS runs go through `TlsTunnel`: SIPp speaks TCP to a local
forwarder that opens one mutual-TLS connection (pool client certificate)
to the call router's TLS port per SIPp connection.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape


def send(lines: Sequence[str]) -> str:
    """One <send> of a scenario: the message's lines (start line, headers, blank, body) inside CDATA."""
    text = "".join(f"      {line}\n" if line else "\n" for line in lines)
    return f"  <send>\n    <![CDATA[\n{text}\n    ]]>\n  </send>\n"


# The worker's (or the far end's) BYE, answered: what a gateway does when the other side hangs up.
ANSWER_200 = send(["SIP/2.0 200 OK", "[last_Via:]", "[last_From:]", "[last_To:]", "[last_Call-ID:]", "[last_CSeq:]",
                   "Content-Length: 0"])


def sdp_offer(address: str, *, family: str = "IP4", session: str = "53655765 2353687637",
              port: str = "[media_port]", proto: str = "RTP/AVP", formats: str = "0 101",
              attributes: Sequence[str] = ("a=rtpmap:0 PCMU/8000", "a=rtpmap:101 telephone-event/8000")) -> list[str]:
    """A gateway's audio offer: G.711 (and telephone-event by default) on one address."""
    return ["v=0", f"o=gateway {session} IN {family} {address}", "s=-", f"c=IN {family} {address}", "t=0 0",
            f"m=audio {port} {proto} {formats}", *attributes]


@dataclass(frozen=True)
class Gateway:
    """How a SIPp gateway writes the requests it sends: its display name, user part and Via."""

    display: str
    caller: str
    transport: str = "TCP"
    rport: bool = False

    def via(self, branch: str = "[branch]") -> str:
        rport = ";rport" if self.rport else ""
        return f"Via: SIP/2.0/{self.transport} [local_ip]:[local_port];branch={branch}{rport}"

    def request(self, method: str, uri: str, cseq: int, *, via: str | None = None, to: str = "[last_To:]",
                routes: bool = False, headers: Sequence[str] = (), sdp: Sequence[str] = ()) -> str:
        """A <send> of one request; an INVITE carries a Contact, `sdp` a body ([len] counts it)."""
        lines = [f"{method} {uri} SIP/2.0", via or self.via(),
                 f'From: "{self.display}" <sip:{self.caller}@[local_ip]:[local_port]>;tag=[call_number]-[pid]', to,
                 *(["[routes]"] if routes else []), "Call-ID: [call_id]", f"CSeq: {cseq} {method}"]
        if method == "INVITE":
            lines.append(f"Contact: <sip:{self.caller}@[local_ip]:[local_port];transport=tcp>")
        lines += ["Max-Forwards: 70", *headers]
        if sdp:
            lines += ["Content-Type: application/sdp", "Content-Length: [len]", "", *sdp]
        else:
            lines.append("Content-Length: 0")
        return send(lines)


def scenario(name: str, steps: str, references: str) -> str:
    """The XML document around the steps; `references` lists the variables assigned only to be checked."""
    return (f'<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
            f'<scenario name="{name}">\n{steps}  <Reference variables="{references}"/>\n</scenario>\n')


def recv(attributes: str, actions: Sequence[str] = ()) -> str:
    if not actions:
        return f"  <recv {attributes}/>\n"
    body = "".join(f"      {action}\n" for action in actions)
    return f"  <recv {attributes}>\n    <action>\n{body}    </action>\n  </recv>\n"


def nop(action: str) -> str:
    return f"  <nop>\n    <action>\n      {action}\n    </action>\n  </nop>\n"


def follow_redirect(gateway: Gateway, *, pilot: str, called: str, sdp: Sequence[str], contact_ereg: str,
                    worker_uri: str, answer: str, answer_actions: Sequence[str], ack_uri: str | None = None,
                    pilot_ack_via: str = "[last_Via:]", setdest: bool = True, routes: bool = False) -> str:
    """A gateway's call as the call router wants it: INVITE the pilot, take the 302's Contact (`contact_ereg`
    assigns it), ACK, INVITE the worker at `worker_uri`, take its 200 (`answer` attributes and actions) and
    ACK it (to `ack_uri`, by default the worker URI). `setdest` sends the second INVITE to the worker's
    host and port (assigned as worker_host and worker_port); without it, it goes where the first one went
    (a proxy)."""
    steps = gateway.request("INVITE", f"sip:{pilot}@[remote_ip]:[remote_port]", 1, to=f"To: <sip:{called}@[remote_ip]>",
                            sdp=sdp)
    steps += recv('response="100" optional="true"') + recv('response="302"', [contact_ereg])
    steps += gateway.request("ACK", f"sip:{pilot}@[remote_ip]:[remote_port]", 1, via=pilot_ack_via)
    if setdest:
        steps += nop('<setdest host="[$worker_host]" port="[$worker_port]" protocol="tcp"/>')
    steps += gateway.request("INVITE", worker_uri, 2, to=f"To: <sip:{called}@[remote_ip]>", sdp=sdp)
    steps += recv('response="100" optional="true"') + recv(answer, answer_actions)
    steps += gateway.request("ACK", ack_uri or worker_uri, 2, via=gateway.via("[branch-9]"), routes=routes)
    return steps


def play_pcap(pcap: Path) -> str:
    """Play the G.711 RTP of `pcap` (next to the scenario) to the media address the answer gave."""
    return nop(f'<exec play_pcap_audio="{pcap.name}"/>')


def pause(milliseconds: int) -> str:
    return f'  <pause milliseconds="{milliseconds}"/>\n'


def leave_message(gateway: Gateway, worker_uri: str, pcap: Path, *, wait_ms: int, talk_ms: int) -> str:
    """After the worker's answer: let the greeting play for `wait_ms`, play `pcap` as the message and keep
    talking for `talk_ms`, then hang up (BYE to `worker_uri`)."""
    return (pause(wait_ms) + play_pcap(pcap) + pause(talk_ms)
            + gateway.request("BYE", worker_uri, 3, via=gateway.via("[branch-5]")) + recv('response="200" crlf="true"'))


def write_scenario(path: Path, *, pilot: str = "5000", called: str = "1001", contact_re: str,
                   via_transport: str = "TCP", diversion: str | None = None) -> Path:
    """INVITE, an optional 100, exactly a 302 whose Contact matches `contact_re`, ACK."""
    gateway = Gateway("SIPp", "gateway", transport=via_transport)
    headers = [f"Diversion: <sip:{diversion}@[remote_ip]>;reason=no-answer"] if diversion else []
    regexp = escape(contact_re, {'"': "&quot;"})
    ereg = f'<ereg regexp="{regexp}" search_in="hdr" header="Contact:" check_it="true" assign_to="contact"/>'
    steps = gateway.request("INVITE", f"sip:{pilot}@[remote_ip]:[remote_port]", 1, to=f"To: <sip:{called}@[remote_ip]>",
                            headers=headers, sdp=sdp_offer("[local_ip]", port="6000", formats="0 8",
                                                           attributes=["a=rtpmap:0 PCMU/8000"]))
    steps += recv('response="100" optional="true"') + recv('response="302"', [ereg])
    steps += gateway.request("ACK", f"sip:{pilot}@[remote_ip]:[remote_port]", 1, via=gateway.via("[branch-3]"),
                             to=f"To: <sip:{called}@[remote_ip]>[peer_tag_param]")
    path.write_text(scenario("umedge redirect", steps, "contact"))
    return path


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    elapsed: float
    output: str


_COUNTS = re.compile(r"(Successful|Failed) call\s*\|\s*(\d+)\s*\|\s*(\d+)")


def sipp_available() -> bool:
    return shutil.which("sipp") is not None


# Many calls in flight: more messages read and calls scheduled per SIPp main loop turn than its defaults.
BUSY = ("-max_recv_loops", "100000", "-max_sched_loops", "100000")


def sipp_command(scenario: Path, target: str, *, local_ip: str = "127.0.0.1", transport: str = "tn",
                 calls: int = 1, rate: int = 1, timeout: float, recv_timeout_ms: int, limit: int | None = None,
                 options: Sequence[str] = ()) -> list[str]:
    """SIPp's command line for `calls` calls at `rate` per second to `target`, bounded by `timeout` (a call
    still running then fails) and by `recv_timeout_ms` for any one expected message; `options` adds the
    run's own (media address and port, socket and loop limits, traces)."""
    command = ["sipp", "-sf", str(scenario), "-t", transport, target, "-i", local_ip, *options, "-m", str(calls),
               "-r", str(rate), "-nostdin", "-trace_err", "-timeout", f"{int(timeout)}s", "-timeout_error",
               "-recv_timeout", str(recv_timeout_ms)]
    if limit is not None:
        command += ["-l", str(limit)]
    return command


def run_command(command: Sequence[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run SIPp to its end (its exit code says whether every call completed), killed 30 s after `timeout`."""
    return subprocess.run(list(command), capture_output=True, text=True, timeout=timeout + 30, cwd=str(cwd),
                          stdin=subprocess.DEVNULL)


def run_sipp(scenario: Path, port: int, calls: int, rate: int, *, timeout: float = 60,
             workdir: Path | None = None, rate_period_ms: int = 1000, limit: int | None = None) -> SippResult:
    """`sipp -sf scenario -t t1 127.0.0.1:port -m calls -r rate`, bounded in time; parses the final counts."""
    command = sipp_command(scenario, f"127.0.0.1:{port}", transport="t1", calls=calls, rate=rate, timeout=timeout,
                           recv_timeout_ms=10000, limit=limit,
                           options=["-rp", str(rate_period_ms), *BUSY])
    started = time.monotonic()
    proc = run_command(command, workdir or scenario.parent, timeout)
    elapsed = time.monotonic() - started
    output = proc.stdout + proc.stderr
    counts = {"Successful": 0, "Failed": 0}
    for kind, _periodic, cumulative in _COUNTS.findall(output):
        counts[kind] = int(cumulative)
    return SippResult(proc.returncode, counts["Successful"], counts["Failed"], elapsed, output)


class TlsTunnel:
    """127.0.0.1:<port> (plain TCP) -> MTLS to 127.0.0.1:<target>, one TLS connection per accepted one."""

    def __init__(self, target_port: int, certs_dir: Path, client: str = "client1",
                 server_hostname: str = "node1.example.test") -> None:
        context = ssl.create_default_context(cafile=str(certs_dir / "ca.crt"))
        context.load_cert_chain(str(certs_dir / f"{client}.crt"), str(certs_dir / f"{client}.key"))
        self.context, self.target_port, self.hostname = context, target_port, server_hostname
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def __enter__(self) -> TlsTunnel:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("TLS tunnel did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self._loop.run_forever()
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(
                "127.0.0.1", self.target_port, ssl=self.context, server_hostname=self.hostname)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                try:
                    dst.close()
                except Exception:  # noqa: BLE001
                    pass

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
