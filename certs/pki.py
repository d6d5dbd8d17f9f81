"""The private pool CA and node certificates, as PEM files in one directory.

Layout: <dir>/ca.crt, <dir>/ca.key, <dir>/NAME.crt, <dir>/NAME.key. Keys are
written 0600 and every file is written to a temp file and renamed, so an
interrupted run never leaves a half key behind.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "ca"
CA_DAYS = 3650
NODE_DAYS = 397  # the CA/Browser Forum ceiling, which operators' tooling expects
EXPIRY_WARNING_DAYS = 30
_CERT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class PkiError(Exception):
    """A PKI operation cannot be done; the message says why."""


@dataclass(frozen=True)
class CertInfo:
    name: str
    subject: str
    issuer: str
    sans: tuple[str, ...]
    not_after: dt.datetime
    is_ca: bool

    def days_left(self, now: dt.datetime | None = None) -> int:
        now = now or dt.datetime.now(dt.UTC)
        return (self.not_after - now).days

    @property
    def expiring_soon(self) -> bool:
        return self.days_left() < EXPIRY_WARNING_DAYS


def _write(path: Path, data: bytes, mode: int) -> None:
    try:
        _write_atomically(path, data, mode)
    except OSError as error:
        raise PkiError(f"{path}: cannot write: {error.strerror or error}") from None


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def check_name(name: str) -> str:
    if not _CERT_NAME.match(name) or name == CA_NAME:
        raise PkiError(f"certificate name {name!r} not allowed; allowed: letters, digits, '.', '_', '-' "
                       f"(up to 64, not {CA_NAME!r})")
    return name


def paths(certs_dir: str | Path, name: str) -> tuple[Path, Path]:
    base = Path(certs_dir)
    return base / f"{name}.crt", base / f"{name}.key"


def read(path: Path) -> bytes:
    """A PKI file's bytes; PkiError naming the path and the reason if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as error:
        raise PkiError(f"{path}: cannot read: {error.strerror or error}") from None


def load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(read(path))
    except ValueError:
        raise PkiError(f"{path}: not a PEM certificate") from None


def load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(read(path), password=None)
    except (ValueError, TypeError):
        raise PkiError(f"{path}: not an unencrypted PEM private key") from None
    return key  # type: ignore[return-value]


def ca_exists(certs_dir: str | Path) -> bool:
    crt, key = paths(certs_dir, CA_NAME)
    return crt.exists() and key.exists()


def _make_dir(base: Path) -> None:
    try:
        base.mkdir(parents=True, exist_ok=True)
        os.chmod(base, 0o700)
    except OSError as error:
        raise PkiError(f"{base}: cannot create the certificate directory: {error.strerror or error}") from None


def init_ca(certs_dir: str | Path, common_name: str) -> Path:
    """Create the pool CA unless one exists (never overwrite a CA others trust)."""
    base = Path(certs_dir)
    _make_dir(base)
    crt_path, key_path = paths(base, CA_NAME)
    if crt_path.exists() or key_path.exists():
        if ca_exists(base):
            return crt_path
        raise PkiError(f"{base}: half a CA (one of ca.crt/ca.key missing); restore it or remove both")
    key = _new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "umedge pool CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(key_path, _key_pem(key), 0o600)
    _write(crt_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return crt_path


def _general_names(sans: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for san in dict.fromkeys(sans):  # keep order, drop repeats
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            if not re.match(r"^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?$", san):
                raise PkiError(f"SAN {san!r} not allowed; allowed: a DNS name or an IP address") from None
            names.append(x509.DNSName(san))
    return names


def issue(certs_dir: str | Path, name: str, sans: list[str], days: int = NODE_DAYS) -> Path:
    """Issue (or re-issue) NAME.crt/NAME.key from the pool CA for server and client use."""
    check_name(name)
    if not ca_exists(certs_dir):
        raise PkiError(f"{certs_dir}: no pool CA; run `umedge certs init` first")
    ca_crt_path, ca_key_path = paths(certs_dir, CA_NAME)
    ca_cert, ca_key = load_certificate(ca_crt_path), load_key(ca_key_path)
    key = _new_key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=True,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_general_names([name, *sans])), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    crt_path, key_path = paths(certs_dir, name)
    _write(key_path, _key_pem(key), 0o600)
    _write(crt_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return crt_path


def ensure_node(certs_dir: str | Path, ca_common_name: str, name: str, sans: list[str]) -> list[str]:
    """Create the CA and this node's certificate if missing, then check that all of them load.

    Returns what was created. Never overwrites: half a node pair (a certificate without its key or
    the reverse) is refused, since a new pair would silently replace a certificate others may pin.
    """
    created = []
    if not ca_exists(certs_dir):
        init_ca(certs_dir, ca_common_name)
        created.append(str(paths(certs_dir, CA_NAME)[0]))
    crt, key = paths(certs_dir, name)
    if crt.exists() != key.exists():
        present, missing = (crt, key) if crt.exists() else (key, crt)
        raise PkiError(f"{missing}: missing while {present} exists; restore it, or remove {present} and "
                       f"reissue with `umedge certs issue {name}`")
    if not crt.exists():
        issue(certs_dir, name, sans)
        created.append(str(crt))
    ca_crt, ca_key = paths(certs_dir, CA_NAME)
    load_certificate(ca_crt)
    load_certificate(crt)
    load_key(key)
    return created


def describe(path: Path) -> CertInfo:
    cert = load_certificate(path)
    try:
        san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = tuple([*san_ext.get_values_for_type(x509.DNSName),
                      *(str(ip) for ip in san_ext.get_values_for_type(x509.IPAddress))])
    except x509.ExtensionNotFound:
        sans = ()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(path.stem, cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), sans,
                    cert.not_valid_after_utc, is_ca)


def inventory(certs_dir: str | Path) -> list[CertInfo]:
    """Every certificate in the directory, CA first."""
    base = Path(certs_dir)
    if not base.is_dir():
        return []
    found = sorted(base.glob("*.crt"), key=lambda p: (p.stem != CA_NAME, p.stem))
    return [describe(p) for p in found]
