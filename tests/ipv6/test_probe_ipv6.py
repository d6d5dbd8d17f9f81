"""`umedge probe --edge ::1` against an edge that listens and relays on IPv6 only: its sockets bind in the
edge's family, it asks for an IPv6 relay, and every address it prints is bracketed ([::1]:port), as the
pool members in /v1/status are."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from tests.conftest import ServeProcess, umedge, write_config

SECRET = "probe-secret-0123456789"


def test_probe_an_ipv6_edge(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"node": {"listen_address": "::1"},
                                    "edge": {"listen_address": "::1", "relay_address": "::1",
                                             "relay_address_v6": "::1", "auth_secrets": [SECRET],
                                             "allowed_peer_networks": ["::1/128"]}})
    secret = tmp_path / "secret"
    secret.write_text(SECRET + "\n")
    process = ServeProcess(files.path, "--roles", "edge,web")
    try:
        process.wait_ready()
        args = ("probe", "--config", str(files.path), "--edge", "::1", "--timeout", "2", "--secret-file", str(secret),
                "--ca", str(files.certs_dir / "ca.crt"))
        result = umedge(*args, "--json")
        report = json.loads(result.stdout)
        assert result.returncode == 0 and report["media_ok"], report
        named = {step["name"]: step for step in report["steps"]}
        assert named["STUN over UDP"]["detail"].startswith("reflexive [::1]:")
        assert named["STUN over TCP"]["detail"].startswith("reflexive [::1]:")
        assert re.match(r"relayed \[::1\]:\d+$", named["TURN allocation"]["detail"])
        text = umedge(*args).stdout
        assert "[::1]:" in text and not re.search(r"(?<!\[)::1:\d", text)  # never the ambiguous ::1:port
        with urllib.request.urlopen(f"http://[::1]:{files.port('web', 'http_port')}/v1/status", timeout=5) as answer:
            status = json.loads(answer.read())
        [member] = status["pool"]["members"]
        assert member["relay"] == f"[::1]:{files.port('edge', 'turn_udp_port')}", member
    finally:
        process.kill()
