"""Running the libnice drivers (GI bindings of Debian's libnice) from the tests: they need the *system*
Python (/usr/bin/python3 with python3-gi and gir1.2-nice-0.1), without the venv's environment."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.conftest import REQUIRE_TOOLS

SYSTEM_PYTHON = "/usr/bin/python3"


def libnice_missing() -> str | None:
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} missing"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('Nice', '0.1'); from gi.repository import Nice"],
        capture_output=True, text=True, timeout=30, check=False)
    return None if probe.returncode == 0 else "libnice GI bindings missing (apt-get install gir1.2-nice-0.1 python3-gi)"


MISSING = libnice_missing()  # why libnice cannot run here, or None
# A test module's `pytestmark`: skipped without libnice, failed instead under UMEDGE_REQUIRE_TOOLS.
needs_libnice = pytest.mark.skipif(bool(MISSING) and not REQUIRE_TOOLS, reason=MISSING or "")


def system_env() -> dict[str, str]:
    """This environment without the venv's Python settings, for SYSTEM_PYTHON."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
