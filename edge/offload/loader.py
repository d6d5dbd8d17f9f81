"""Build, load, attach and remove the fast-path program: clang, bpftool and tc, run as commands.

Why these tools and not a library: bpftool (`prog load ... pinmaps`) does the ELF, BTF and map
relocation work of libbpf without a Python binding to keep in step with the kernel, and tc is
how clsact filters are managed on every distribution; both are one Debian package each. The
maps are then opened from their pins and updated with bpf(2) directly (edge.offload.bpfsys), so
the node takes no new Python dependency. Every command has a timeout and its first error line
becomes the reason given to the operator.

Each process pins under /sys/fs/bpf/umedge/<pid> and attaches one filter per device at
ingress preference FILTER_PREF with handle <pid>, so several nodes (or [edge] workers) on one
host coexist, and what a killed node left behind is recognisable: a pid that is not a live
umedge process. `sweep_stale` removes those filters and pins at start-up.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("turn_offload.bpf.c")
BPFFS = Path("/sys/fs/bpf")
PIN_ROOT = BPFFS / "umedge"
FILTER_PREF = 49000  # all umedge filters share this ingress preference; the handle is the owner's pid
COMMAND_TIMEOUT = 20.0
MAP_NAMES = ("clients", "peers", "stats")


class OffloadUnavailable(OSError):
    """Why the fast path cannot run here (one line for the operator)."""


def run(args: list[str], what: str) -> str:
    """A tool's stdout; OffloadUnavailable with its first error line when it fails, is missing or hangs."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
    except FileNotFoundError:
        raise OffloadUnavailable(f"{args[0]} not found (Debian: {_PACKAGES.get(args[0], args[0])})") from None
    except subprocess.TimeoutExpired:
        raise OffloadUnavailable(f"{what}: {args[0]} timed out") from None
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        error = next((line for line in lines if "error" in line.lower()), lines[0] if lines else "")
        raise OffloadUnavailable(f"{what} failed: {error.strip()[:200]}")
    return done.stdout


_PACKAGES = {"clang": "clang", "bpftool": "bpftool", "tc": "iproute2", "ip": "iproute2", "cc": "gcc", "gcc": "gcc"}


def tools_missing() -> list[str]:
    return [tool for tool in ("clang", "bpftool", "tc", "ip") if shutil.which(tool) is None]


def source_digest(source: Path = SOURCE) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()[:16]


def cached_build(cache_dir: Path, source: Path, suffix: str, make: Callable[[Path], None],
                 usable: Callable[[Path], bool] = lambda path: True) -> Path:
    """`<name>-<hash of source>.<suffix>` from `cache_dir` (when `usable`), or made now by `make(partial)` and
    renamed into place; its other versions are removed (one per source version is enough)."""
    cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = source.name.split(".")[0]
    target = cache_dir / f"{stem}-{source_digest(source)}.{suffix}"
    if target.exists() and usable(target):
        return target
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    try:
        make(partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    for old in cache_dir.glob(f"{stem}-*.{suffix}"):
        if old != target:
            old.unlink(missing_ok=True)
    return target


def build(cache_dir: Path) -> Path:
    """The compiled object for this source, from `cache_dir` or compiled now (clang -target bpf -O2 -g)."""
    includes = [f"-I/usr/include/{platform.machine()}-linux-gnu"]  # <asm/types.h> of Debian's multiarch layout

    def make(partial: Path) -> None:
        if not Path("/usr/include/bpf/bpf_helpers.h").exists():
            raise OffloadUnavailable("libbpf headers missing: /usr/include/bpf/bpf_helpers.h (Debian: libbpf-dev)")
        run(["clang", "-target", "bpf", "-O2", "-g", "-Wall", *includes, "-c", str(SOURCE), "-o", str(partial)],
            "compiling turn_offload.bpf.c")

    return cached_build(cache_dir, SOURCE, "o", make)


def _is_bpffs(path: Path) -> bool:
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[1] == str(path) and fields[2] == "bpf":
                return True
    except OSError:
        pass
    return False


def ensure_bpffs() -> None:
    """Mount the BPF filesystem on /sys/fs/bpf if nothing is mounted there (systemd usually has)."""
    if _is_bpffs(BPFFS):
        return
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.mount(b"bpf", str(BPFFS).encode(), b"bpf", 0, None) != 0:
        errno = ctypes.get_errno()
        raise OffloadUnavailable(f"cannot mount the BPF filesystem on {BPFFS}: {os.strerror(errno)}")


@dataclass
class Loaded:
    pin_dir: Path
    program: Path
    maps: dict[str, Path]
    program_id: int


def load(obj: Path, owner: int) -> Loaded:
    """Load the object and pin its program and maps under PIN_ROOT/<owner>."""
    ensure_bpffs()
    pin_dir = PIN_ROOT / str(owner)
    if pin_dir.exists():
        shutil.rmtree(pin_dir)
    (pin_dir / "maps").mkdir(parents=True)
    program = pin_dir / "prog"
    try:
        run(["bpftool", "prog", "load", str(obj), str(program), "type", "classifier", "pinmaps",
              str(pin_dir / "maps")], "loading the program (bpftool prog load)")
        shown = json.loads(run(["bpftool", "-j", "prog", "show", "pinned", str(program)], "bpftool prog show"))
    except (OffloadUnavailable, ValueError):
        shutil.rmtree(pin_dir, ignore_errors=True)
        raise
    return Loaded(pin_dir, program, {name: pin_dir / "maps" / name for name in MAP_NAMES}, int(shown["id"]))


def attach(device: str, program: Path, owner: int) -> bool:
    """Attach at `device`'s clsact ingress; True when this call created the clsact qdisc."""
    created = True
    try:
        run(["tc", "qdisc", "add", "dev", device, "clsact"], f"tc qdisc add dev {device} clsact")
    except OffloadUnavailable as error:
        if "exists" not in str(error).lower() and "exclusivity" not in str(error).lower():
            raise
        created = False
    run(["tc", "filter", "add", "dev", device, "ingress", "pref", str(FILTER_PREF), "handle", hex(owner),
          "protocol", "all", "bpf", "da", "object-pinned", str(program)], f"tc filter add dev {device} ingress")
    return created


def _filters(device: str, direction: str = "ingress") -> list[dict[str, object]]:
    try:
        out = run(["tc", "-j", "filter", "show", "dev", device, direction], "tc filter show")
        listed = json.loads(out) if out.strip() else []
    except (OffloadUnavailable, ValueError):
        return []
    return [f for f in listed if isinstance(f, dict)]


def detach(device: str, owner: int, remove_qdisc: bool) -> None:
    """Remove this owner's filter; the clsact qdisc too if we created it and nothing else uses it."""
    try:
        run(["tc", "filter", "del", "dev", device, "ingress", "pref", str(FILTER_PREF), "handle", hex(owner),
              "protocol", "all", "bpf"], f"tc filter del dev {device}")
    except OffloadUnavailable:
        pass  # the device or the filter is gone already
    if remove_qdisc and not any("options" in f for f in _filters(device)) \
            and not any("options" in f for f in _filters(device, "egress")):
        try:
            run(["tc", "qdisc", "del", "dev", device, "clsact"], f"tc qdisc del dev {device} clsact")
        except OffloadUnavailable:
            pass


def unpin(pin_dir: Path) -> None:
    shutil.rmtree(pin_dir, ignore_errors=True)


def devices() -> list[dict[str, object]]:
    """`ip -j addr show`: every device with its type and IPv4 addresses."""
    listed = json.loads(run(["ip", "-j", "addr", "show"], "ip addr show") or "[]")
    return [d for d in listed if isinstance(d, dict)]


def _owner_alive(pid: int) -> bool:
    """Whether `pid` is a live umedge process (a reused pid of another program does not count)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"edge.node.cli" in cmdline or b"umedge" in cmdline


def sweep_stale(own: int) -> list[str]:
    """Remove filters and pins that processes no longer alive left behind; what was removed."""
    removed: list[str] = []
    for device in devices():
        name = str(device.get("ifname", ""))
        for listed in _filters(name):
            options = listed.get("options")
            if listed.get("pref") != FILTER_PREF or not isinstance(options, dict):
                continue
            try:
                owner = int(str(options.get("handle", "")), 16)
            except ValueError:
                continue
            if owner != own and not _owner_alive(owner):
                detach(name, owner, remove_qdisc=False)
                removed.append(f"{name} filter of pid {owner}")
    if PIN_ROOT.exists():
        for pin_dir in PIN_ROOT.iterdir():
            if pin_dir.name.isdigit() and int(pin_dir.name) != own and not _owner_alive(int(pin_dir.name)):
                unpin(pin_dir)
                removed.append(f"pins of pid {pin_dir.name}")
    return removed


def egress_device(host: str) -> int:
    """The ifindex a packet to `host` leaves by, 0 when `host` is this machine's (local delivery)."""
    routes = json.loads(run(["ip", "-j", "route", "get", host], f"ip route get {host}") or "[]")
    if not routes:
        raise OffloadUnavailable(f"no route to {host}")
    route = routes[0]
    if route.get("type") == "local":
        return 0
    return socket.if_nametoindex(str(route["dev"]))
