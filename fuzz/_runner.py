"""Shared atheris driver: instrument the parser's modules, then fuzz one function."""

from __future__ import annotations

import sys
from typing import Callable


def run(load: Callable[[], Callable[[bytes], None]]) -> None:
    import atheris

    with atheris.instrument_imports():
        target = load()
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
