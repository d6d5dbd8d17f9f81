"""The Python packing of the map entries (edge.offload.mirror) matches the C structs, read from the object's BTF."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from edge.offload import loader, mirror
from tests.conftest import REQUIRE_TOOLS

# C struct -> (the Python Struct, its fields' byte offsets in pack order, padding left out)
LAYOUTS: dict[str, tuple[struct.Struct, list[tuple[str, int]]]] = {
    "client_key": (mirror.IPV4.client_key, [("client_ip", 0), ("server_ip", 4), ("client_port", 8),
                                         ("server_port", 10), ("channel", 12)]),
    "client_value": (mirror.IPV4.client_value, [("relay_ip", 0), ("peer_ip", 4), ("relay_port", 8), ("peer_port", 10),
                                             ("ifindex", 12), ("expires_ns", 16), ("packets", 24), ("bytes", 32)]),
    "peer_key": (mirror.IPV4.peer_key, [("peer_ip", 0), ("relay_ip", 4), ("peer_port", 8), ("relay_port", 10)]),
    "peer_value": (mirror.IPV4.peer_value, [("client_ip", 0), ("server_ip", 4), ("client_port", 8), ("server_port", 10),
                                         ("channel", 12), ("ifindex", 16), ("expires_ns", 24),
                                         ("permission_ns", 32), ("packets", 40), ("bytes", 48)]),
}


def test_map_entries_are_packed_as_the_program_reads_them(tmp_path: Path) -> None:
    missing = [tool for tool in ("clang", "bpftool") if shutil.which(tool) is None]
    if missing or not Path("/usr/include/bpf/bpf_helpers.h").exists():
        why = f"needs clang, bpftool and libbpf-dev (missing: {missing or ['libbpf-dev']})"
        if REQUIRE_TOOLS:
            pytest.fail(why)
        pytest.skip(why)
    obj = loader.build(tmp_path)
    assert obj.name == f"turn_offload-{loader.source_digest()}.o"
    assert loader.build(tmp_path) == obj  # cached by source hash: not compiled twice
    dump = json.loads(subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(obj)], capture_output=True,
                                     text=True, check=True, timeout=30).stdout)
    structs = {t["name"]: t for t in dump["types"] if t.get("kind") == "STRUCT" and t.get("name") in LAYOUTS}
    for name, (packing, fields) in LAYOUTS.items():
        btf = structs[name]
        assert btf["size"] == packing.size, name
        offsets = {m["name"]: m["bits_offset"] // 8 for m in btf["members"]}
        for field, offset in fields:
            assert offsets[field] == offset, (name, field)
        # Every field in pack order at its offset: pack distinct values and find each where the C layout puts it.
        values: list[object] = []
        for index, code in enumerate(c for c in packing.format.lstrip("=") if not c.isdigit() and c != "x"):
            values.append(bytes([index + 1]) * {"4s": 4, "2s": 2}.get(_width(packing, index), 1)
                          if code == "s" else index + 1)
        packed = packing.pack(*values)
        for (field, offset), value in zip(fields, values, strict=True):
            if isinstance(value, bytes):
                assert packed[offset:offset + len(value)] == value, (name, field)
            else:
                assert packed[offset] == value, (name, field)


def _width(packing: struct.Struct, index: int) -> str:
    """The struct code (with its count) of the `index`th packed value."""
    codes, count = [], ""
    for char in packing.format.lstrip("="):
        if char.isdigit():
            count += char
            continue
        if char != "x":
            codes.append(count + char)
        count = ""
    return codes[index]
