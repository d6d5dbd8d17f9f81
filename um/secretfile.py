"""A node's generated secret in a file of its state directory: random, 0600, written atomically once."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def generated_secret(path: Path) -> str:
    """The secret in `path`, created (32 random bytes as URL-safe text, mode 0600) if the file is missing.

    Written to a temporary file, fsynced and renamed, so a crash never leaves half a secret; a second
    process starting at the same time at worst writes one more and both read the one that won.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, secrets.token_urlsafe(32).encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    return path.read_text().strip()
