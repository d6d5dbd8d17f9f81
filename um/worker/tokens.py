"""Media relay tokens for the worker: MRAS over MTLS with the node certificate, HTTPS as fallback.

`TokenSource.get(identity)` returns a `MediaToken` (TURN REST username and
password, when it expires, and the edge's TURN UDP address) and caches it
until 80 % of its lifetime has passed. MRAS (SIP SERVICE to the A/V
Authentication service, as a Lync pool server asks) comes first; when it
fails, `POST /v1/credentials` over HTTPS with the same pool client
certificate. The MTLS connection is kept and reused.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from twisted.logger import Logger

from um.mras.client import MrasClient, client_ssl_context

log = Logger(namespace="umedge.worker.tokens")


class TokenError(Exception):
    pass


@dataclass(frozen=True)
class MediaToken:
    username: str
    password: str
    expires: float                    # unix time
    relay: tuple[str, int]            # the edge's TURN UDP address
    source: str                       # "mras" or "https"

    def fresh(self, now: float, issued: float) -> bool:
        return now < issued + (self.expires - issued) * 0.8


async def _resolve(host: str, port: int) -> tuple[str, int]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    for family in (socket.AF_INET, socket.AF_INET6):
        for info in infos:
            if info[0] == family:
                return str(info[4][0]), port
    raise TokenError(f"cannot resolve {host}")


class TokenSource:
    def __init__(self, certs_dir: str | Path, node_name: str, mras: tuple[str, int] | None,
                 https: tuple[str, int] | None, *, server_hostname: str | None = None,
                 relay_override: tuple[str, int] | None = None, timeout: float = 5.0) -> None:
        self.certs_dir, self.node_name = certs_dir, node_name
        self.mras, self.https = mras, https
        self.server_hostname = server_hostname
        self.relay_override = relay_override
        self.timeout = timeout
        self._client: MrasClient | None = None
        self._cache: dict[str, tuple[MediaToken, float]] = {}
        self._pending: dict[str, asyncio.Task[MediaToken]] = {}
        self.counters = {"mras": 0, "https": 0, "mras_failed": 0, "https_failed": 0, "cached": 0}

    def _context(self) -> ssl.SSLContext:
        context = client_ssl_context(self.certs_dir, self.node_name)
        context.check_hostname = self.server_hostname is not None
        return context

    async def get(self, identity: str) -> MediaToken:
        """A fresh token for `identity`; concurrent callers share one fetch, which a caller's
        cancellation (a CANCELled call) does not stop."""
        now = time.time()
        cached = self._cache.get(identity)
        if cached is not None and cached[0].fresh(now, cached[1]):
            self.counters["cached"] += 1
            return cached[0]
        task = self._pending.get(identity)
        if task is None:
            task = asyncio.ensure_future(self._fetch_and_cache(identity, now))
            self._pending[identity] = task
            task.add_done_callback(lambda t: (self._pending.pop(identity, None),
                                              t.cancelled() or t.exception()))
        return await asyncio.shield(task)

    async def _fetch_and_cache(self, identity: str, now: float) -> MediaToken:
        token = await self._fetch(identity)
        self._cache[identity] = (token, now)
        return token

    async def _fetch(self, identity: str) -> MediaToken:
        errors = []
        if self.mras is not None:
            try:
                token = await self._mras(identity)
                self.counters["mras"] += 1
                return token
            except Exception as error:  # noqa: BLE001 - fall back to HTTPS
                self.counters["mras_failed"] += 1
                errors.append(f"MRAS {self.mras[0]}:{self.mras[1]}: {error!r}")
                log.warn("media token over MRAS failed ({error}); trying HTTPS", error=repr(error))
                await self._drop_client()
        if self.https is not None:
            try:
                token = await self._https(identity)
                self.counters["https"] += 1
                return token
            except Exception as error:  # noqa: BLE001
                self.counters["https_failed"] += 1
                errors.append(f"HTTPS {self.https[0]}:{self.https[1]}: {error!r}")
        raise TokenError("no media token: " + "; ".join(errors or ["no token service configured"]))

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.close()
            except Exception:  # noqa: BLE001
                pass

    async def _mras(self, identity: str) -> MediaToken:
        assert self.mras is not None
        if self._client is None:
            host, port = self.mras
            self._client = await MrasClient.connect(host, port, self._context(),
                                                    server_hostname=self.server_hostname or host,
                                                    user=identity, timeout=self.timeout)
        grant = await self._client.request_credentials(identity, location="intranet")
        creds = grant.credentials
        relay = self.relay_override
        if relay is None:
            for entry in grant.media_relays:
                relay_host = entry.direct_ip_address or entry.host_name
                if relay_host and entry.udp_port:
                    relay = await _resolve(relay_host, entry.udp_port)
                    break
        if relay is None:
            raise TokenError("the MRAS answer names no UDP media relay")
        return MediaToken(creds.username, creds.password, time.time() + creds.duration * 60, relay, "mras")

    async def _https(self, identity: str) -> MediaToken:
        assert self.https is not None
        host, port = self.https
        body = json.dumps({"identity": identity}).encode()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            host, port, ssl=self._context(), server_hostname=self.server_hostname or host), self.timeout)
        try:
            writer.write(b"POST /v1/credentials HTTP/1.1\r\nHost: " + host.encode() +
                         b"\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: " +
                         str(len(body)).encode() + b"\r\n\r\n" + body)
            await writer.drain()
            raw = await asyncio.wait_for(reader.read(), self.timeout)
        finally:
            writer.close()
        head, _, payload = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
        if status != 200:
            raise TokenError(f"HTTPS token service answered {status}: {payload[:200]!r}")
        answer = json.loads(payload)
        relay = self.relay_override
        if relay is None:
            for uri in answer.get("uris", []):
                if uri.startswith("turn:") and uri.endswith("transport=udp"):
                    hostport = uri[5:].split("?")[0]
                    parsed = urllib.parse.urlsplit("//" + hostport)
                    relay = await _resolve(parsed.hostname or "", parsed.port or 3478)
                    break
        if relay is None:
            raise TokenError("the HTTPS answer names no turn: UDP URI")
        return MediaToken(answer["username"], answer["password"], time.time() + int(answer["ttl"]), relay, "https")

    async def close(self) -> None:
        await self._drop_client()
