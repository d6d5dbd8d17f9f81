"""Start-up failures: exit 1, one line `umedge: <what>: <path>: <why>` on stderr, no traceback, nothing changed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ROOT, NodeFiles, ServeProcess, write_config


def snapshot(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(directory.rglob("*")) if "serve-" not in p.name}


def serve_once(files: NodeFiles) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.node.cli", "serve", "--config", str(files.path),
                           "--roles", "edge"], capture_output=True, text=True, timeout=30, cwd=ROOT)


def started_once(tmp_path: Path) -> NodeFiles:
    """A node whose first start created its CA and certificate."""
    files = write_config(tmp_path)
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
    finally:
        process.kill()
    return files


def garbage(path: Path) -> None:
    path.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")


def unreadable(path: Path) -> None:
    path.unlink()
    path.mkdir()  # reading it fails whoever runs the test (root reads a mode-000 file)


BROKEN: dict[str, tuple[Callable[[Path], None], str]] = {
    "garbage node certificate": (lambda certs: garbage(certs / "node1.crt"), "node1.crt: not a PEM certificate"),
    "garbage CA": (lambda certs: garbage(certs / "ca.crt"), "ca.crt: not a PEM certificate"),
    "unreadable key": (lambda certs: unreadable(certs / "node1.key"), "node1.key: cannot read: Is a directory"),
    "half a CA": (lambda certs: (certs / "ca.key").unlink(), "half a CA"),
    "key missing beside its certificate": (
        lambda certs: (certs / "node1.key").unlink(),
        "node1.key: missing while {certs}/node1.crt exists; restore it, or remove {certs}/node1.crt and "
        "reissue with `umedge certs issue node1`"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_certificate_is_one_line(tmp_path: Path, case: str) -> None:
    files = started_once(tmp_path)
    certs = tmp_path / "certs"
    breaks, expected = BROKEN[case]
    breaks(certs)
    before = snapshot(tmp_path)
    result = serve_once(files)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("umedge:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("umedge: certificates: ") and expected.format(certs=certs) in lines[0]
    assert snapshot(tmp_path) == before  # nothing reissued, nothing overwritten


@pytest.mark.parametrize("key", ["state_dir", "certs_dir"])
def test_a_directory_that_cannot_be_made_is_one_line(tmp_path: Path, key: str) -> None:
    (tmp_path / "a-file").write_text("not a directory\n")
    files = write_config(tmp_path, {"node": {"name": "node1", "state_dir": "state", "certs_dir": "certs",
                                             key: "a-file/sub"}})
    before = snapshot(tmp_path)
    result = serve_once(files)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    [line] = [line for line in result.stderr.splitlines() if line.startswith("umedge:")]
    assert f"{tmp_path}/a-file/sub" in line and "a-file is not a directory" in line
    assert snapshot(tmp_path) == before  # no CA, no certificate, no state created
