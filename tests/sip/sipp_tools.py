"""SIPp driving for the tests and benchmarks/sip_redirect.py: the redirect scenario, runs, a TLS tunnel.

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
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="umedge redirect">
  <send>
    <![CDATA[
      INVITE sip:{pilot}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/{via_transport} [local_ip]:[local_port];branch=[branch]
      From: "SIPp" <sip:gateway@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      To: <sip:{called}@[remote_ip]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:gateway@[local_ip]:[local_port];transport=tcp>
      Max-Forwards: 70
      {extra}Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=gateway 53655765 2353687637 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0
      m=audio 6000 RTP/AVP 0 8
      a=rtpmap:0 PCMU/8000

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="302">
    <action>
      <ereg regexp="{contact_re}" search_in="hdr" header="Contact:" check_it="true" assign_to="contact"/>
    </action>
  </recv>
  <send>
    <![CDATA[
      ACK sip:{pilot}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/{via_transport} [local_ip]:[local_port];branch=[branch-3]
      From: "SIPp" <sip:gateway@[local_ip]:[local_port]>;tag=[call_number]-[pid]
      To: <sip:{called}@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <Reference variables="contact"/>
</scenario>
"""


def write_scenario(path: Path, *, pilot: str = "5000", called: str = "1001", contact_re: str,
                   via_transport: str = "TCP", diversion: str | None = None) -> Path:
    extra = f"Diversion: <sip:{diversion}@[remote_ip]>;reason=no-answer\n      " if diversion else ""
    path.write_text(SCENARIO.format(pilot=pilot, called=called, contact_re=escape(contact_re, {'"': "&quot;"}),
                                    via_transport=via_transport, extra=extra))
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


def run_sipp(scenario: Path, port: int, calls: int, rate: int, *, timeout: float = 60,
             workdir: Path | None = None, rate_period_ms: int = 1000, limit: int | None = None) -> SippResult:
    """`sipp -sf scenario -t t1 127.0.0.1:port -m calls -r rate`, bounded in time; parses the final counts."""
    command = ["sipp", "-sf", str(scenario), "-t", "t1", f"127.0.0.1:{port}", "-i", "127.0.0.1",
               "-m", str(calls), "-r", str(rate), "-rp", str(rate_period_ms), "-nostdin", "-trace_err",
               "-timeout", f"{int(timeout)}s", "-timeout_error", "-recv_timeout", "10000",
               "-max_recv_loops", "100000", "-max_sched_loops", "100000"]
    if limit is not None:
        command += ["-l", str(limit)]
    started = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout + 30,
                          cwd=str(workdir or scenario.parent), stdin=subprocess.DEVNULL)
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
