"""A refused MTLS handshake is no longer silent: the node logs it once per source and minute with the
reason (no client certificate, a certificate from another CA, not TLS at all) and counts every one in
/metrics (umedge_tls_handshakes_refused_total); a pool client still completes its handshake."""

from __future__ import annotations

import re
import socket
import ssl
import urllib.request
from pathlib import Path

from certs import pki
from tests.conftest import serving, write_config

NO_CERT, FOREIGN, NOT_TLS = "127.0.0.2", "127.0.0.3", "127.0.0.6"
ATTEMPTS = 3


def handshake(source: str, port: int, context: ssl.SSLContext) -> str:
    """One TLS handshake from `source`; what the client saw ('ok' or the error)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(source, 0)) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="node1.example.test") as tls:
                tls.sendall(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n")
                tls.recv(1)  # TLS 1.3: the server's verdict on our certificate arrives after the handshake
                return "ok"
        except (ssl.SSLError, OSError) as error:
            return type(error).__name__


def client_context(ca: Path, cert: tuple[Path, Path] | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context


def test_refused_handshakes_are_logged_once_per_source_with_the_reason_and_counted(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"callrouter": {"gateways": [{"address": "127.0.0.1"}]}})
    foreign = tmp_path / "foreign-ca"
    pki.init_ca(foreign, "Some Other CA")
    pki.issue(foreign, "intruder", [])
    with serving(files, "--roles", "callrouter,web") as process:
        port = files.port("callrouter", "sip_tls_port")
        ca = files.certs_dir / "ca.crt"
        for _ in range(ATTEMPTS):
            assert handshake(NO_CERT, port, client_context(ca, None)) != "ok"
            assert handshake(FOREIGN, port, client_context(ca, pki.paths(foreign, "intruder"))) != "ok"
            with socket.create_connection(("127.0.0.1", port), timeout=5, source_address=(NOT_TLS, 0)) as raw:
                raw.sendall(b"OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n")
                raw.settimeout(5)
                assert raw.recv(4096) is not None  # the server closes (an alert, or nothing)
        pki.issue(files.certs_dir, "client1", [])  # a pool client: its handshake completes
        assert handshake("127.0.0.1", port, client_context(ca, pki.paths(files.certs_dir, "client1"))) == "ok"
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{files.port('web', 'http_port')}/metrics",
                                         timeout=5).read().decode()
        log = process.stderr()
    refused = [line for line in log.splitlines() if "TLS handshake from" in line]
    by_source = {source: [line for line in refused if f"from {source} refused" in line]
                 for source in (NO_CERT, FOREIGN, NOT_TLS)}
    assert all(len(lines) == 1 for lines in by_source.values()), refused  # once per source and minute
    assert "no client certificate" in by_source[NO_CERT][0]
    assert "not issued by the pool CA" in by_source[FOREIGN][0]
    assert "not TLS" in by_source[NOT_TLS][0]
    assert not any("127.0.0.1 refused" in line for line in refused)
    counts = re.findall(r'umedge_tls_handshakes_refused_total\{listener="([^"]+)"\} (\d+)', metrics)
    total = {name: float(value) for name, value in counts}
    assert total.get("UM Call Router SIP/TLS") == 3 * ATTEMPTS, counts
    assert all(value == 0 for name, value in total.items() if "TLS" not in name)  # plain TCP listeners: none
