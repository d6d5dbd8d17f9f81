"""pystun3 (an RFC 3489 client, from PyPI) against a live edge: it learns its address instead of "Blocked"."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, ServeProcess, write_config

PROBE = """
import json, sys
import stun  # pystun3
nat_type, ip, port = stun.get_ip_info(source_ip="127.0.0.1", source_port=int(sys.argv[2]),
                                      stun_host="127.0.0.1", stun_port=int(sys.argv[1]))
print(json.dumps([nat_type, ip, port]))
"""


def test_pystun3_gets_its_mapped_address(tmp_path: Path) -> None:
    files = write_config(tmp_path, {"node": {"roles": ["edge"]}})
    process = ServeProcess(files.path)
    try:
        process.wait_ready()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind(("127.0.0.1", 0))
            source_port = probe.getsockname()[1]
        result = subprocess.run([sys.executable, "-c", PROBE, str(files.port("edge", "turn_udp_port")),
                                 str(source_port)], capture_output=True, text=True, timeout=30, cwd=ROOT)
        assert result.returncode == 0, result.stderr
        nat_type, _, _ = json.loads(result.stdout)  # (its address is the last test's, unanswered: None)
        # Its first test got MAPPED-ADDRESS equal to its own address, so it asked for an answer from a changed
        # address; that goes unanswered (one address here), which it reads as a firewall. Unanswered: "Blocked".
        assert nat_type == "Symmetric UDP Firewall"
        assert "Traceback" not in process.stderr()
    finally:
        process.kill()
