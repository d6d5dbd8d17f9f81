"""TLS contexts for the pool: MTLS servers, optional-client-cert servers, MTLS clients.

Built with Twisted's CertificateOptions on pyOpenSSL: TLS 1.2 or newer, and
with a trust root the server asks for, verifies and requires the peer's
certificate from the pool CA.
"""

from __future__ import annotations

import ssl as stdlib_ssl
import weakref
from collections.abc import Callable
from pathlib import Path

import zope.interface
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IOpenSSLServerConnectionCreator

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


class ServerOptions:
    """A TLS server's context that can be rebuilt: every new connection gets the current one.

    `reload_server_options()` (on SIGHUP) rebuilds every live instance from
    the files again: new connections get the renewed node certificate and CA,
    connections already open keep the context they started with. A rebuild
    that fails (a half-written file) keeps the old context and says why.
    """

    def __init__(self, build: Callable[[], ssl.CertificateOptions], what: str) -> None:
        self._build, self.what = build, what
        self.current = build()
        self.current.getContext()  # fail at start-up, not on the first connection
        _LIVE.add(self)

    def reload(self) -> None:
        fresh = self._build()
        fresh.getContext()
        self.current = fresh

    def getContext(self) -> SSL.Context:
        return self.current.getContext()

    def serverConnectionForTLS(self, protocol: object) -> SSL.Connection:
        return SSL.Connection(self.current.getContext(), None)


_LIVE: weakref.WeakSet[ServerOptions] = weakref.WeakSet()
zope.interface.classImplements(ServerOptions, IOpenSSLServerConnectionCreator)


def reload_server_options() -> tuple[int, list[str]]:
    """Rebuild every live server context from its files: (how many were renewed, what failed and why)."""
    renewed, failed = 0, []
    for options in list(_LIVE):
        try:
            options.reload()
            renewed += 1
        except (PkiError, SSL.Error, crypto.Error, OSError, ValueError) as error:
            failed.append(f"{options.what}: {error}")
    return renewed, failed


def server_options(certs_dir: str | Path, name: str, *, client_cert: str = "required",
                   alpn: tuple[bytes, ...] = ()) -> ServerOptions:
    """Server side: `client_cert` is "required" (MTLS), "optional" (verified if sent) or "none".

    `alpn` lists the protocols this listener speaks (RFC 7301), such as
    b"stun.turn" (RFC 7443) or b"http/1.1": without a list, pyOpenSSL under
    Twisted answers any client that offers ALPN with an internal_error alert.
    The result follows `reload_server_options()` (certificate rotation).
    """
    if client_cert not in ("required", "optional", "none"):
        raise ValueError(f"client_cert must be required, optional or none, not {client_cert!r}")

    def build() -> ssl.CertificateOptions:
        node = node_certificate(certs_dir, name)
        common = dict(privateKey=node.privateKey.original, certificate=node.original,
                      raiseMinimumTo=MINIMUM, acceptableProtocols=list(alpn) or None)
        if client_cert == "none":
            return ssl.CertificateOptions(**common)
        ca = ca_certificate(certs_dir).original
        if client_cert == "required":
            return ssl.CertificateOptions(**common, trustRoot=ssl.trustRootFromCertificates(
                [ca_certificate(certs_dir)]))
        return ssl.CertificateOptions(**common, verify=True, caCerts=[ca], requireCertificate=False)

    return ServerOptions(build, f"{Path(certs_dir) / name}.crt ({client_cert} client certificate)")


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
