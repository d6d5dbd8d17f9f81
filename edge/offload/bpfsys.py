"""The bpf(2) system call through ctypes: open pinned maps, and look up, update and delete entries.

Just the five commands the offload needs, so it takes no library beyond the C library: bpftool
loads the program and pins its maps (edge.offload.loader); this module reads and writes them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from pathlib import Path
from typing import Literal

_NR_BPF = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "ppc64le": 361, "s390x": 351, "riscv64": 280}
_MAP_LOOKUP_ELEM, _MAP_UPDATE_ELEM, _MAP_DELETE_ELEM, _MAP_GET_NEXT_KEY, _OBJ_GET = 1, 2, 3, 4, 7
_ATTR_SIZE = 128  # a zeroed prefix of union bpf_attr is enough for these commands
BPF_ANY = 0

_libc: ctypes.CDLL | None = None


class BpfError(OSError):
    """A bpf(2) command failed (errno and what was asked)."""


def _syscall() -> ctypes.CDLL:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def supported() -> str | None:
    """None when bpf(2) can be called on this machine, else why not."""
    if platform.system() != "Linux":
        return "not Linux"
    if platform.machine() not in _NR_BPF:
        return f"bpf(2) number unknown for {platform.machine()}"
    return None


def _bpf(command: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    libc = _syscall()
    result = libc.syscall(ctypes.c_long(_NR_BPF[platform.machine()]), ctypes.c_int(command),
                          ctypes.byref(attr), ctypes.c_uint(_ATTR_SIZE))
    if result < 0:
        errno = ctypes.get_errno()
        raise BpfError(errno, os.strerror(errno))
    return int(result)


def _attr(*fields: tuple[int, int, int]) -> ctypes.Array[ctypes.c_char]:
    """A zeroed bpf_attr with (offset, size, value) fields set, little or big endian as the host."""
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    for offset, size, value in fields:
        ctypes.memmove(ctypes.addressof(attr) + offset, value.to_bytes(size, _ENDIAN), size)
    return attr


_ENDIAN: Literal["little", "big"] = sys.byteorder


def possible_cpus() -> int:
    """How many values a per-CPU map holds per key (the kernel's possible CPUs, not the online ones)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += (int(high) if high else int(low)) - int(low) + 1
    return count


class PinnedMap:
    """A BPF map opened from its bpffs pin; keys and values are raw bytes of fixed sizes."""

    def __init__(self, path: Path | str, key_size: int, value_size: int) -> None:
        encoded = ctypes.create_string_buffer(os.fsencode(str(path)))
        self._path_buffer = encoded
        self.fd = _bpf(_OBJ_GET, _attr((0, 8, ctypes.addressof(encoded))))
        self.key_size, self.value_size = key_size, value_size

    def _elem(self, command: int, key: bytes, value: ctypes.Array[ctypes.c_char] | None, flags: int = 0) -> int:
        if len(key) != self.key_size:
            raise ValueError(f"key of {len(key)} bytes, the map's are {self.key_size}")
        key_buffer = ctypes.create_string_buffer(key, len(key))
        fields = [(0, 4, self.fd), (8, 8, ctypes.addressof(key_buffer)), (24, 8, flags)]
        if value is not None:
            fields.append((16, 8, ctypes.addressof(value)))
        return _bpf(command, _attr(*fields))

    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None:
        if len(value) != self.value_size:
            raise ValueError(f"value of {len(value)} bytes, the map's are {self.value_size}")
        self._elem(_MAP_UPDATE_ELEM, key, ctypes.create_string_buffer(value, len(value)), flags)

    def lookup(self, key: bytes) -> bytes | None:
        value = ctypes.create_string_buffer(self.value_size)
        try:
            self._elem(_MAP_LOOKUP_ELEM, key, value)
        except BpfError as error:
            if error.errno == 2:  # ENOENT
                return None
            raise
        return value.raw

    def delete(self, key: bytes) -> bool:
        try:
            self._elem(_MAP_DELETE_ELEM, key, None)
        except BpfError as error:
            if error.errno == 2:
                return False
            raise
        return True

    def keys(self, limit: int = 1 << 20) -> list[bytes]:
        """Every key (bounded by `limit`), for tests and the stale-entry sweep."""
        out: list[bytes] = []
        key: bytes | None = None
        while len(out) < limit:
            following = ctypes.create_string_buffer(self.key_size)
            current = ctypes.create_string_buffer(key, self.key_size) if key is not None else None
            try:
                _bpf(_MAP_GET_NEXT_KEY, _attr((0, 4, self.fd),
                                              (8, 8, ctypes.addressof(current) if current is not None else 0),
                                              (16, 8, ctypes.addressof(following))))
            except BpfError as error:
                if error.errno == 2:
                    break
                raise
            key = following.raw
            out.append(key)
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
