"""The NAT lab needs root, ip and nft; in CI (UMEDGE_REQUIRE_TOOLS=1) a missing piece fails."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.conftest import REQUIRE_TOOLS
from tests.e2e import lab as lab_module


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the NAT lab needs root (network namespaces)"
    for tool in ("ip", "nft"):
        if not shutil.which(tool):
            return f"{tool} not installed"
    return None


@pytest.fixture(scope="session")
def nat_lab() -> Iterator[lab_module.Lab]:
    missing = _missing()
    if missing:
        if REQUIRE_TOOLS:
            pytest.fail(missing)
        pytest.skip(missing)
    tables_before = lab_module.run("nft", "list", "tables", check=False).stdout
    built = lab_module.Lab()
    try:
        yield built.build()
    finally:
        lab_module.destroy()
        assert lab_module.leftovers() == [], "lab namespaces left behind"
        assert lab_module.run("nft", "list", "tables", check=False).stdout == tables_before
