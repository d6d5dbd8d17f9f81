"""Certificates rotate live: after `umedge certs issue` and SIGHUP, new TLS clients get the renewed node certificate
while a TLS TURN allocation opened before keeps relaying; `certs show` and /metrics warn of expiry."""

from __future__ import annotations

import asyncio
import signal
import socket
import ssl
import time
import urllib.request
from pathlib import Path

from aioice import turn
from cryptography import x509

from certs import pki
from edge.tokens import mint
from tests.conftest import NodeFiles, ServeProcess, serving, umedge, write_config
from tests.turn.test_turn_aioice import Collector, Echo, tls_context

SECRET = "rotation-secret-0123456789"


def served_certificate(files: NodeFiles, port: int) -> x509.Certificate:
    """The certificate a new TLS client is shown on `port` (verified against the pool CA)."""
    context = tls_context(files)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="node1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def wait_log(process: ServeProcess, text: str, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while text not in process.stderr():
        assert time.monotonic() < deadline, f"no {text!r} in the log: {process.stderr()[-2000:]}"
        time.sleep(0.05)


def test_renewed_node_certificate_served_after_sighup_while_an_old_tls_allocation_relays(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"edge": {"auth_secrets": [SECRET], "allowed_peer_networks": ["127.0.0.0/8"]}})
    tls_port, web_port = files.port("edge", "turn_tls_port"), files.port("web", "http_port")
    with serving(files, "--roles", "edge,web") as process:
        before = served_certificate(files, tls_port)
        assert served_certificate(files, web_port).serial_number == before.serial_number

        async def scenario() -> tuple[int, list[bytes], list[bytes]]:
            loop = asyncio.get_running_loop()
            echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
            peer = echo.get_extra_info("sockname")
            token = mint(SECRET, "sip:rotation@example.test", 600, time.time())
            relay, collector = await turn.create_turn_endpoint(
                Collector, ("127.0.0.1", tls_port), token.username, token.password, ssl=tls_context(files),
                transport="tcp")
            try:
                relay.sendto(b"before", peer)
                first = [(await asyncio.wait_for(collector.received.get(), 5))[0]]
                # renew the node certificate and tell the node
                issued = await asyncio.to_thread(umedge, "certs", "issue", "node1", "--config", str(files.path))
                assert issued.returncode == 0, issued.stderr
                process.proc.send_signal(signal.SIGHUP)
                await asyncio.to_thread(wait_log, process, "TLS listener context(s) reloaded")
                after = await asyncio.to_thread(served_certificate, files, tls_port)
                # the allocation made before the rotation still relays, both ways
                for index in range(5):
                    relay.sendto(f"after {index}".encode(), peer)
                second = [(await asyncio.wait_for(collector.received.get(), 5))[0] for _ in range(5)]
                return after.serial_number, first, second
            finally:
                relay.close()
                echo.close()
                await asyncio.sleep(0.1)

        serial, first, second = asyncio.run(scenario())
        assert first == [b"echo:before"]
        assert sorted(second) == sorted(f"echo:after {i}".encode() for i in range(5))
        assert serial != before.serial_number  # new TLS clients get the renewed certificate
        assert served_certificate(files, web_port).serial_number == serial  # on every TLS listener
        assert "certificate not reloaded" not in process.stderr()


def test_certs_show_and_metrics_warn_thirty_days_ahead(tmp_path: Path) -> None:
    files = write_config(tmp_path)
    assert umedge("certs", "init", "--config", str(files.path)).returncode == 0
    pki.issue(files.certs_dir, "soon", [], days=12)  # a certificate about to run out
    shown = umedge("certs", "show", "--config", str(files.path))
    assert "WARNING: soon.crt expires in 11 days" in shown.stdout or "WARNING: soon.crt expires in 12 days" \
        in shown.stdout, shown.stdout
    assert "WARNING: node1.crt" not in shown.stdout
    with serving(files, "--roles", "web"):
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{files.port('web', 'http_port')}/metrics",
                                         timeout=5).read().decode()
    expiry = {line.split('name="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
              for line in metrics.splitlines() if line.startswith("umedge_certificate_expiry_timestamp_seconds{")}
    assert set(expiry) == {"ca", "node1", "soon"}
    assert 11 * 86400 < expiry["soon"] - time.time() <= 12 * 86400 + 60
    assert expiry["node1"] - time.time() > 30 * 86400


def _mtls_answer(port: int, certs: Path, client: str) -> str:
    """One SIP OPTIONS over MTLS trusting `certs`' CA and presenting its `client` certificate: the status line,
    or the TLS error."""
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.check_hostname = False
    context.load_cert_chain(str(certs / f"{client}.crt"), str(certs / f"{client}.key"))
    request = (f"OPTIONS sip:127.0.0.1:{port};transport=tls SIP/2.0\r\nVia: SIP/2.0/TLS 127.0.0.1:5999;branch="
               "z9hG4bK-rot1\r\nFrom: <sip:probe@example.test>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: rot-1\r\n"
               "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="node1") as tls:
            tls.sendall(request.encode())
            return tls.recv(4096).decode(errors="replace").split("\r\n")[0]
    except (ssl.SSLError, OSError) as error:
        return f"TLS failed: {error}"


def test_a_new_pool_ca_is_trusted_for_new_mtls_clients_after_sighup(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"edge": {"auth_secrets": [SECRET]}})
    mras = files.port("auth", "mras_tls_port")
    (tmp_path / "next").mkdir()
    other = write_config(tmp_path / "next")  # where the next pool CA is made
    assert umedge("certs", "init", "--config", str(other.path)).returncode == 0
    assert umedge("certs", "issue", "client1", "--config", str(other.path)).returncode == 0
    with serving(files, "--roles", "edge") as process:
        assert umedge("certs", "issue", "client1", "--config", str(files.path)).returncode == 0
        assert _mtls_answer(mras, files.certs_dir, "client1").startswith("SIP/2.0 ")  # the old CA's client
        assert _mtls_answer(mras, other.certs_dir, "client1").startswith("TLS failed")  # not yet
        for name in ("ca.crt", "ca.key", "node1.crt", "node1.key"):  # the pool moves to the next CA
            (files.certs_dir / name).write_bytes((other.certs_dir / name).read_bytes())
        process.proc.send_signal(signal.SIGHUP)
        wait_log(process, "TLS listener context(s) reloaded")
        assert _mtls_answer(mras, other.certs_dir, "client1").startswith("SIP/2.0 ")  # new CA: trusted both ways
        assert _mtls_answer(mras, files.certs_dir, "client1").startswith("TLS failed")  # the old CA's: no more
