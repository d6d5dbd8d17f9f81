"""The native forwarder (forwarder.c) as the engine and the UDP sockets see it: build, load, tables, batches.

Why ctypes and a compiler at first start, not a CPython extension: the library has no Python
API to keep in step with the interpreter (plain C functions over sockets and two hash
tables), so one `cc -O2 -shared` of one file, cached by its source hash under the node's state
directory, is the whole build; `auto` runs without it (one log line says why) and `"on"`
refuses to start. The engine writes the entries (edge.offload.mirror); the sockets of
edge.turn.io hand their readable events to `from_clients` / `from_peers`, which relay
bound-channel ChannelData in C and return every other datagram for the engine.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import socket
import stat
from pathlib import Path
from typing import Any, Protocol, cast

from twisted.logger import Logger

from edge.offload import loader
from edge.offload.loader import OffloadUnavailable
from edge.offload.mirror import ANY_FAMILY, ChannelMirror, port_bytes
from edge.turn.allocation import Address, Allocation, RelayEndpoint
from edge.turn.offload import SocketKey

log = Logger(namespace="umedge.offload")

SOURCE = Path(__file__).with_name("forwarder.c")
MODES = ("auto", "on", "off")
BATCH = 64  # forwarder.c's BATCH: datagrams per call (checked when the library loads)
COMPILERS = ("cc", "gcc", "clang")
_CLIENTS, _PEERS = 0, 1
STATS = ("to_peer", "to_client", "passed", "errors")
STAT_NAMES = {"errors": "dropped_native_send_errors"}  # "dropped_*": umedge_turn_dropped{reason=...}


class _Passed(ctypes.Structure):
    _fields_ = [("offset", ctypes.c_uint32), ("length", ctypes.c_uint32), ("ip", ctypes.c_uint8 * 16),
                ("port", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


_MAPPED = b"\0" * 10 + b"\xff\xff"


def _host(ip: bytes, ipv6_socket: bool) -> str:
    """forwarder.c's 16 address bytes as the engine's own reads give hosts: IPv4 dotted from an IPv4 socket,
    IPv6 text from an IPv6 one (an IPv4 client of a dual-stack listener as ::ffff:a.b.c.d, as recvfrom)."""
    if ip[:12] == _MAPPED and not ipv6_socket:
        return socket.inet_ntoa(ip[12:])
    return socket.inet_ntop(socket.AF_INET6, ip)


Datagrams = list[tuple[bytes, Address]]


class _NativeSocket(Protocol):
    """What edge.turn.io's UDP listener and relay sockets show the forwarder (when they read through it)."""

    fd: int
    address: Address
    native: bool


def _compiler() -> str:
    for name in COMPILERS:
        if shutil.which(name):
            return name
    raise OffloadUnavailable("no C compiler (cc, gcc or clang; Debian: gcc)")


def _trusted(path: Path) -> bool:
    """Only a library this user wrote and nobody else may change (nor swap, in its directory) is loaded."""
    for info in (path.stat(), path.parent.stat()):
        if info.st_uid != os.geteuid() or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return False
    return True


def build(cache_dir: Path) -> Path:
    """The shared library for this source, from `cache_dir` or compiled now."""

    def make(partial: Path) -> None:
        loader.run([_compiler(), "-O2", "-shared", "-fPIC", "-Wall", "-o", str(partial), str(SOURCE)],
                   "compiling forwarder.c")
        partial.chmod(0o700)

    library = loader.cached_build(cache_dir, SOURCE, "so", make, _trusted)
    if not _trusted(library):  # e.g. a state_dir others may write to: refuse rather than load what they put there
        raise OffloadUnavailable(f"{cache_dir} is writable by other users: not loading a library from it")
    return library


def _load(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    handle, buffer = ctypes.c_void_p, ctypes.c_char_p
    lib.fw_new.restype = handle
    lib.fw_new.argtypes = []
    lib.fw_free.argtypes = [handle]
    lib.fw_free.restype = None
    for name in ("fw_update", "fw_lookup"):
        getattr(lib, name).argtypes = [handle, ctypes.c_int, buffer, ctypes.c_void_p]
    lib.fw_delete.argtypes = [handle, ctypes.c_int, buffer]
    lib.fw_entries.argtypes = [handle, ctypes.c_int]
    lib.fw_stats.argtypes = [handle, ctypes.c_void_p]
    lib.fw_stats.restype = None
    lib.fw_buffers.argtypes = [handle]
    lib.fw_buffers.restype = ctypes.c_void_p
    lib.fw_batch.argtypes = []
    if lib.fw_batch() != BATCH:  # the arrays handed to it are BATCH long
        raise OSError(f"forwarder.c reads batches of {lib.fw_batch()}, native.py expects {BATCH}")
    for name in ("fw_from_clients", "fw_from_peers"):
        getattr(lib, name).argtypes = [handle, ctypes.c_int, buffer, buffer, ctypes.c_void_p, ctypes.c_void_p]
    return lib


class _Table:
    """One of the forwarder's two tables (edge.offload.mirror.EntryTable)."""

    def __init__(self, lib: ctypes.CDLL, handle: int, index: int, value_size: int) -> None:
        self._lib, self._handle, self._index = lib, handle, index
        self._value = ctypes.create_string_buffer(value_size)

    def update(self, key: bytes, value: bytes) -> None:
        error = self._lib.fw_update(self._handle, self._index, key, value)
        if error:
            raise OSError(-error, f"native forwarder table: {os.strerror(-error)}")

    def lookup(self, key: bytes) -> bytes | None:
        return self._value.raw if self._lib.fw_lookup(self._handle, self._index, key, self._value) == 1 else None

    def delete(self, key: bytes) -> bool:
        return bool(self._lib.fw_delete(self._handle, self._index, key) == 1)

    def __len__(self) -> int:
        return int(self._lib.fw_entries(self._handle, self._index))


class NativeForwarder(ChannelMirror):
    """The native fast path (RelayOffload) and the batched reads of the sockets that feed it."""

    what = "native forwarder"
    setting = "native_forwarder"
    layout = ANY_FAMILY

    def __init__(self, mode: str, cache_dir: Path) -> None:
        super().__init__(mode)
        self.cache_dir = cache_dir
        self.library = ""
        self._lib: ctypes.CDLL | None = None
        self._handle = 0
        self._passed = (_Passed * BATCH)()
        self._drained = ctypes.c_int(0)
        self._stats = (ctypes.c_uint64 * len(STATS))()
        self._base = 0

    # --- life cycle ------------------------------------------------------------------

    def _start(self) -> None:
        try:
            path = build(self.cache_dir)
            lib = _load(path)
        except OffloadUnavailable:
            raise
        except OSError as error:  # an unwritable state_dir, a library that does not load
            raise OffloadUnavailable(f"building or loading forwarder.c under {self.cache_dir}: {error}") from None
        handle = lib.fw_new()
        if not handle:
            raise OffloadUnavailable("out of memory")
        self._lib, self._handle, self.library = lib, handle, str(path)
        self._clients = _Table(lib, handle, _CLIENTS, ANY_FAMILY.client_value.size)
        self._peers = _Table(lib, handle, _PEERS, ANY_FAMILY.peer_value.size)
        self._base = int(lib.fw_buffers(handle))

    def _started(self) -> None:
        self.reason = f"forwarder.c {loader.source_digest(SOURCE)}"
        log.info("native forwarder: on ({mode}): bound-channel ChannelData relayed in C ({library})",
                 mode=self.mode, library=self.library)

    def stop(self) -> None:
        if self._lib is not None and self._handle:
            self._lib.fw_free(self._handle)
        self._lib, self._handle, self._base = None, 0, 0
        self._clients = self._peers = None
        if self.active:
            self.active = False
            log.info("native forwarder: stopped")
        self._forget()

    # --- ChannelMirror -----------------------------------------------------------------

    def _eligible(self, allocation: Allocation) -> bool:
        listener = getattr(allocation.client, "listener", None)
        return (allocation.dialect is None and getattr(listener, "native", False)
                and all(getattr(relay, "native", False) for relay in allocation.relays.values()))

    def _listener(self, allocation: Allocation) -> tuple[Address, int]:
        listener = cast(_NativeSocket, getattr(allocation.client, "listener"))  # noqa: B009 (not on ClientLink)
        return listener.address, listener.fd

    def _via_peer(self, relay: RelayEndpoint, peer: Address) -> int:
        return cast(_NativeSocket, relay).fd

    # --- the sockets' reads --------------------------------------------------------------

    def bound(self, sock: socket.socket) -> SocketKey | None:
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_DGRAM:
            return None
        host, port = sock.getsockname()[:2]
        return SocketKey(ANY_FAMILY.address(host), port_bytes(port), sock.family == socket.AF_INET6)

    def from_clients(self, fd: int, key: SocketKey) -> tuple[Datagrams, bool]:
        """One batch from a client listener: what the engine must see, and whether the socket is drained."""
        assert self._lib is not None
        return self._batch(self._lib.fw_from_clients, fd, key)

    def from_peers(self, fd: int, key: SocketKey) -> tuple[Datagrams, bool]:
        """One batch from a relay socket."""
        assert self._lib is not None
        return self._batch(self._lib.fw_from_peers, fd, key)

    def _batch(self, read: Any, fd: int, key: SocketKey) -> tuple[Datagrams, bool]:
        count = read(self._handle, fd, key.ip, key.port, self._passed, ctypes.byref(self._drained))
        return self._passed_up(count, key.ipv6), bool(self._drained.value)

    def _passed_up(self, count: int, ipv6_socket: bool) -> Datagrams:
        if count <= 0:
            return []  # nothing, or an error (a queued ICMP error is consumed by the read): read on next time
        base, out = self._base, []
        for passed in self._passed[:count]:
            out.append((ctypes.string_at(base + passed.offset, passed.length),
                        (_host(bytes(passed.ip), ipv6_socket), passed.port)))
        return out

    # --- what it reports ---------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        if not self.active or self._lib is None:
            return {}
        self._lib.fw_stats(self._handle, self._stats)
        totals = zip(STATS, self._stats, strict=True)
        out = {STAT_NAMES.get(name, f"native_{name}"): int(value) for name, value in totals}
        out["native_failures"] = self._failures
        return out

    def status(self) -> dict[str, Any]:
        return {"mode": self.mode, "active": self.active, "reason": self.reason, **self.entry_status(),
                "library": self.library, "counters": self.counters()}
