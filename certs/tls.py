"""TLS contexts for the pool: MTLS servers, optional-client-cert servers, MTLS clients.

Built with Twisted's CertificateOptions on pyOpenSSL: TLS 1.2 or newer, and
with a trust root the server asks for, verifies and requires the peer's
certificate from the pool CA.
"""

from __future__ import annotations

import ssl as stdlib_ssl
from pathlib import Path

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator

from certs.pki import CA_NAME, PkiError, paths, read

MINIMUM = ssl.TLSVersion.TLSv1_2


def ca_certificate(certs_dir: str | Path) -> ssl.Certificate:
    path = paths(certs_dir, CA_NAME)[0]
    try:
        return ssl.Certificate.loadPEM(read(path))
    except (SSL.Error, crypto.Error):
        raise PkiError(f"{path}: not a PEM certificate") from None


def node_certificate(certs_dir: str | Path, name: str) -> ssl.PrivateCertificate:
    crt, key = paths(certs_dir, name)
    try:
        certificate: ssl.PrivateCertificate = ssl.PrivateCertificate.loadPEM(read(crt) + b"\n" + read(key))
    except (SSL.Error, crypto.Error):
        raise PkiError(f"{crt}, {key}: not a PEM certificate and its private key") from None
    return certificate


def server_options(certs_dir: str | Path, name: str, *, client_cert: str = "required",
                   alpn: tuple[bytes, ...] = ()) -> ssl.CertificateOptions:
    """Server side: `client_cert` is "required" (MTLS), "optional" (verified if sent) or "none".

    `alpn` lists the protocols this listener speaks (RFC 7301), such as
    b"stun.turn" (RFC 7443) or b"http/1.1": without a list, pyOpenSSL under
    Twisted answers any client that offers ALPN with an internal_error alert.
    """
    if client_cert not in ("required", "optional", "none"):
        raise ValueError(f"client_cert must be required, optional or none, not {client_cert!r}")
    node = node_certificate(certs_dir, name)
    common = dict(privateKey=node.privateKey.original, certificate=node.original,
                  raiseMinimumTo=MINIMUM, acceptableProtocols=list(alpn) or None)
    if client_cert == "none":
        return ssl.CertificateOptions(**common)
    ca = ca_certificate(certs_dir).original
    if client_cert == "required":
        return ssl.CertificateOptions(**common, trustRoot=ssl.trustRootFromCertificates(
            [ca_certificate(certs_dir)]))
    options = ssl.CertificateOptions(**common, verify=True, caCerts=[ca], requireCertificate=False)
    return options


def client_options(certs_dir: str | Path, name: str | None, hostname: str) -> IOpenSSLClientConnectionCreator:
    """Client side: trust only the pool CA, present NAME's certificate when given."""
    client_cert = node_certificate(certs_dir, name) if name else None
    return ssl.optionsForClientTLS(hostname, trustRoot=ca_certificate(certs_dir),
                                   clientCertificate=client_cert, extraCertificateOptions={
                                       "raiseMinimumTo": MINIMUM})


def client_ssl_context(certs_dir: str | Path, name: str | None) -> stdlib_ssl.SSLContext:
    """The same client side for asyncio (um.sip.uac): trust only the pool CA, present NAME's certificate."""
    context = stdlib_ssl.create_default_context(cafile=str(paths(certs_dir, CA_NAME)[0]))
    if name:
        crt, key = paths(certs_dir, name)
        context.load_cert_chain(str(crt), str(key))
    context.minimum_version = stdlib_ssl.TLSVersion.TLSv1_2
    return context


def peer_common_name(connection: SSL.Connection) -> str | None:
    """The verified peer certificate's common name, if the peer sent one."""
    cert = connection.get_peer_certificate()
    if cert is None:
        return None
    return cert.get_subject().commonName
