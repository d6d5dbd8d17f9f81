"""The worker's settings from the node config, and its view of the UM directory.

`WorkerSettings.from_config` maps the [node], [worker], [edge] and [auth]
sections to what the worker needs; `Directory` is the worker's slice of the
UM directory (dial plans, hunt groups, mailboxes) and `LiveDirectory`
rebuilds it when the config or the directory file changes.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from um.worker.g711 import PCMA, PCMU
from um.worker.pins import PinPolicy

log = Logger(namespace="umedge.worker")


@dataclass
class WorkerSettings:
    host: str                          # the address the worker's SIP and direct RTP use
    advertise: str                     # what SDP and Contact name
    state_dir: str
    certs_dir: str
    node_name: str
    domain: str
    rtp_port_min: int = 1024
    rtp_port_max: int = 65535
    media_via_edge: bool = False
    edge_mras: tuple[str, int] | None = None
    edge_https: tuple[str, int] | None = None
    edge_server_name: str | None = None
    greeting_dir: str = ""
    prompt_dir: str = ""
    max_message_seconds: float = 300.0
    min_message_seconds: float = 1.0
    silence_timeout: float = 5.0
    jitter_buffer_ms: int = 60
    media_timeout: float = 30.0
    pin_policy: PinPolicy = field(default_factory=PinPolicy)
    outbound_gateway: tuple[str, int] | None = None
    codecs: tuple[str, ...] = (PCMU, PCMA)

    @property
    def media_identity(self) -> str:
        return f"sip:umworker-{self.node_name}@{self.domain}"

    @classmethod
    def from_config(cls, config: Any) -> WorkerSettings:
        node, w, edge, auth = config.node, config.worker, config.edge, config.auth
        host = node.listen_address
        advertise = host
        if host in ("0.0.0.0", "::"):
            try:
                advertise = socket.gethostbyname(node.fqdn)
            except OSError:
                advertise = "127.0.0.1"
        edge_host = edge.listen_address if edge.listen_address not in ("0.0.0.0", "::") else "127.0.0.1"
        mras = _hostport(w.edge_mras) if w.edge_mras else (edge_host, auth.mras_tls_port)
        https = _hostport(w.edge_https) if w.edge_https else (edge_host, auth.https_port)
        gateway = _hostport(w.outbound_gateway) if w.outbound_gateway else _first_gateway(config)
        return cls(host=host, advertise=advertise, state_dir=node.state_dir, certs_dir=node.certs_dir,
                   node_name=node.name, domain=node.domain, rtp_port_min=w.rtp_port_min, rtp_port_max=w.rtp_port_max,
                   media_via_edge=w.media_via_edge, edge_mras=mras, edge_https=https,
                   greeting_dir=str(Path(node.state_dir) / (w.greeting_dir or "greetings")),
                   prompt_dir=str(Path(node.state_dir) / w.prompt_dir) if w.prompt_dir else "",
                   max_message_seconds=float(w.max_message_seconds),
                   min_message_seconds=float(w.min_message_seconds), silence_timeout=float(w.silence_timeout),
                   jitter_buffer_ms=int(w.jitter_buffer_ms), media_timeout=float(w.media_timeout),
                   pin_policy=PinPolicy(min_length=w.pin_min_length, max_failures=w.pin_max_failures),
                   outbound_gateway=gateway)


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _first_gateway(config: Any) -> tuple[str, int] | None:
    import ipaddress

    for gateway in getattr(config.callrouter, "gateways", ()):
        try:
            network = ipaddress.ip_network(gateway.address, strict=False)
        except ValueError:
            return gateway.address, 5060
        if network.num_addresses == 1:
            return str(network.network_address), 5060
    return None


class LiveDirectory:
    """The worker's Directory, rebuilt when the config changes (SIGHUP) or the directory file does."""

    def __init__(self, config_source: Any) -> None:
        self._source = config_source  # () -> the current config
        self._seen: tuple[int, float] | None = None
        self._directory: Directory | None = None

    def _current(self) -> Directory:
        config = self._source()
        path = getattr(getattr(config, "callrouter", None), "directory_file", "")
        try:
            mtime = Path(path).stat().st_mtime if path else 0.0
        except OSError:
            mtime = -1.0
        key = (id(config), mtime)
        if self._directory is None or key != self._seen:
            self._directory, self._seen = Directory(config), key
        return self._directory

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current(), name)


class Directory:
    """What the worker needs of the UM directory: dial plans, hunt groups, mailboxes."""

    def __init__(self, config: Any | None) -> None:
        from um.directory import Directory as UmDirectory
        from um.directory import load_file

        self.plans: dict[str, Any] = {}
        self.hunt: dict[str, str] = {}
        self.directory = UmDirectory()
        if config is None:
            return
        cr = config.callrouter
        mailboxes = list(getattr(cr, "mailboxes", ()))
        servers = list(getattr(cr, "mailbox_servers", ()))
        if getattr(cr, "directory_file", ""):
            try:
                more, more_servers = load_file(cr.directory_file)
                mailboxes += more
                servers += more_servers
            except Exception as error:  # noqa: BLE001
                log.warn("worker: directory file not loaded: {error}", error=error)
        self.plans = {p.name: p for p in getattr(cr, "dial_plans", ())}
        self.hunt = {g.pilot: g.dial_plan for g in getattr(cr, "hunt_groups", ())}
        self.directory = UmDirectory(self.plans, tuple(mailboxes), {s.name: s for s in servers})

    def plan_for(self, pilot: str | None) -> Any:
        name = self.hunt.get(pilot or "")
        if name in self.plans:
            return self.plans[name]
        for plan in self.plans.values():
            if pilot in plan.access_numbers:
                return plan
        return next(iter(self.plans.values()), None)

    def mailbox(self, plan: Any, user: str | None, host: str | None = None) -> str | None:
        if plan is None or not user:
            return None
        found = self.directory.find(plan, user, host)
        return found.extension if found is not None else None

    def known(self, extension: str) -> bool:
        return any(self.mailbox(plan, extension) for plan in self.plans.values())


__all__ = ["Directory", "LiveDirectory", "WorkerSettings"]
