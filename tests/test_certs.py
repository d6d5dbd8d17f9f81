"""The pool PKI: `umedge certs init|issue|show` and what the files hold."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from certs import pki
from tests.conftest import umedge, write_config


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_creates_ca_and_node_certificate(tmp_path: Path) -> None:
    files = write_config(tmp_path)
    result = umedge("certs", "init", "--config", str(files.path))
    assert result.returncode == 0, result.stderr
    certs = files.certs_dir
    for name in ("ca", "node1"):
        assert (certs / f"{name}.crt").exists()
        assert mode(certs / f"{name}.key") == 0o600
    ca = x509.load_pem_x509_certificate((certs / "ca.crt").read_bytes())
    node = x509.load_pem_x509_certificate((certs / "node1.crt").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    node.verify_directly_issued_by(ca)
    eku = node.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"node1", "node1.example.test"} <= set(sans.get_values_for_type(x509.DNSName))
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)

    ca_bytes = (certs / "ca.crt").read_bytes()
    again = umedge("certs", "init", "--config", str(files.path))
    assert again.returncode == 0 and "kept" in again.stdout
    assert (certs / "ca.crt").read_bytes() == ca_bytes  # never overwrite a CA others trust


def test_issue_with_extra_sans(tmp_path: Path) -> None:
    files = write_config(tmp_path)
    assert umedge("certs", "init", "--config", str(files.path)).returncode == 0
    result = umedge("certs", "issue", "edge2", "--san", "edge2.example.test", "--san", "192.0.2.7",
                    "--san", "2001:db8::7", "--config", str(files.path))
    assert result.returncode == 0, result.stderr
    info = pki.describe(files.certs_dir / "edge2.crt")
    assert set(info.sans) == {"edge2", "edge2.example.test", "192.0.2.7", "2001:db8::7"}
    assert mode(files.certs_dir / "edge2.key") == 0o600


def test_issue_refuses_bad_names_and_missing_ca(tmp_path: Path) -> None:
    files = write_config(tmp_path)
    result = umedge("certs", "issue", "edge2", "--config", str(files.path))
    assert result.returncode == 1 and "no pool CA" in result.stderr
    umedge("certs", "init", "--config", str(files.path))
    result = umedge("certs", "issue", "../evil", "--config", str(files.path))
    assert result.returncode == 1 and "not allowed" in result.stderr
    result = umedge("certs", "issue", "ok", "--san", "bad name!", "--config", str(files.path))
    assert result.returncode == 1 and "SAN 'bad name!' not allowed" in result.stderr


def test_show_lists_and_warns_about_expiry(tmp_path: Path) -> None:
    files = write_config(tmp_path)
    umedge("certs", "init", "--config", str(files.path))
    pki.issue(files.certs_dir, "shortlived", [], days=10)
    result = umedge("certs", "show", "--config", str(files.path))
    assert result.returncode == 0
    assert "ca.crt  CA" in result.stdout and "node1.crt  node" in result.stdout
    assert "sans=node1,node1.example.test" in result.stdout
    warnings = [line for line in result.stdout.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1 and "shortlived.crt expires in 9 days" in warnings[0]


def test_half_a_ca_is_an_error(tmp_path: Path) -> None:
    pki.init_ca(tmp_path, "x")
    (tmp_path / "ca.key").unlink()
    with pytest.raises(pki.PkiError, match="half a CA"):
        pki.init_ca(tmp_path, "x")
