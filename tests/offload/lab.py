"""Three network namespaces on two veth pairs: a TURN client, the edge (the offload on its veths), a peer.

    client 203.0.113.2 --veth-- 203.0.113.1 edge 198.51.100.1 --veth-- 198.51.100.2 peer
                                 (TURN port)        (relay)

Documentation address ranges only, in namespaces this module creates and always deletes
(names start with "umoff-"), so nothing touches the host's network.
"""

from __future__ import annotations

import os
import shutil
import subprocess

PREFIX = "umoff-"
CLIENT, EDGE_CLIENT_SIDE = "203.0.113.2", "203.0.113.1"
EDGE_PEER_SIDE, PEER = "198.51.100.1", "198.51.100.2"
TOOLS = ("ip", "tc", "clang", "bpftool", "turnutils_uclient", "turnutils_peer", "curl", "ethtool")
DEVICES = (("client", "cli-e"), ("edge", "e-cli"), ("edge", "e-pee"), ("peer", "pee-e"))


def ns(host: str) -> str:
    return PREFIX + host


def prefix(host: str) -> tuple[str, ...]:
    return ("ip", "netns", "exec", ns(host))


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), check=check, capture_output=True, text=True, timeout=30)


def missing() -> str | None:
    """Why the lab cannot be built here, or None."""
    if os.geteuid() != 0:
        return "the offload lab needs root (network namespaces, tc, bpf)"
    absent = [tool for tool in TOOLS if not shutil.which(tool)]
    if absent:
        return f"not installed: {', '.join(absent)} (scripts/test.sh installs them)"
    if not os.path.exists("/usr/include/bpf/bpf_helpers.h"):
        return "libbpf-dev not installed"
    return None


def leftovers() -> list[str]:
    return [name for name in run("ip", "netns", "list", check=False).stdout.split() if name.startswith(PREFIX)]


def destroy() -> None:
    for name in leftovers():
        for pid in run("ip", "netns", "pids", name, check=False).stdout.split():
            run("kill", "-9", pid, check=False)
        run("ip", "netns", "del", name, check=False)


def build() -> None:
    destroy()
    for host in ("client", "edge", "peer"):
        run("ip", "netns", "add", ns(host))
        run("ip", "-n", ns(host), "link", "set", "lo", "up")
    for here, there, here_ip, there_ip in (("client", "edge", CLIENT, EDGE_CLIENT_SIDE),
                                           ("peer", "edge", PEER, EDGE_PEER_SIDE)):
        near, far = f"{here[:3]}-e", f"e-{here[:3]}"
        run("ip", "link", "add", near, "netns", ns(here), "type", "veth", "peer", "name", far, "netns", ns(there))
        run("ip", "-n", ns(here), "addr", "add", f"{here_ip}/24", "dev", near)
        run("ip", "-n", ns(there), "addr", "add", f"{there_ip}/24", "dev", far)
        run("ip", "-n", ns(here), "link", "set", near, "up")
        run("ip", "-n", ns(there), "link", "set", far, "up")


def checksum_offload(on: bool) -> None:
    """Checksum offload of every veth end: off, every sender computes UDP checksums in software and every
    receiver verifies them (CHECKSUM_NONE), so a wrong incremental update in the fast path is caught."""
    for host, device in DEVICES:
        run(*prefix(host), "ethtool", "-K", device, "rx", "on" if on else "off", "tx", "on" if on else "off")


def udp_checksum_errors(host: str) -> int:
    """InCsumErrors of the namespace's UDP counters."""
    lines = [line.split() for line in run(*prefix(host), "cat", "/proc/net/snmp").stdout.splitlines()
             if line.startswith("Udp:")]
    return int(dict(zip(lines[0], lines[1], strict=True))["InCsumErrors"])


def filters(device: str) -> str:
    """The edge's tc ingress filters on `device` (what the offload attached)."""
    return run(*prefix("edge"), "tc", "filter", "show", "dev", device, "ingress", check=False).stdout
