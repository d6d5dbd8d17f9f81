"""The UM roles' parts, built from config: call router, mailbox UM service with its worker slots,
the worker's calls. Only the composition root (edge.node.build) calls these.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from twisted.application import service
from twisted.logger import Logger

from certs import tls
from edge.node import logsetup
from edge.node.schema import EMBEDDED, Config
from um.callrouter import CallRouter, GatewayTable, ProbeSettings
from um.config import CallRouterConfig
from um.directory import LiveDirectory, load_directory
from um.mailbox import MailboxService
from um.services import CallRouterService
from um.sip.uac import DeferredUac, UserAgentClient
from um.slots import CallHandler
from um.worker.context import WorkerContext
from um.worker.handler import WorkerCalls
from um.worker.pins import PinPolicy
from um.worker.settings import WorkerSettings, host_port
from um.worker.supervisor import RecycleLimits, WorkerSupervisor

log = Logger(namespace="umedge.worker")


def advertised_host(config: Config) -> str:
    """What SIP Contacts and Vias name: the listen address, or the FQDN when listening on all."""
    address = config.node.listen_address
    if ipaddress.ip_address(address).is_unspecified:
        return config.node.fqdn
    return f"[{address}]" if ":" in address else address


def _first_gateway(config: CallRouterConfig) -> tuple[str, int] | None:
    for gateway in config.gateways:
        network = gateway.network
        if network is None:
            return gateway.address, 5060
        if network.num_addresses == 1:
            return str(network.network_address), 5060
    return None


def worker_settings(config: Config) -> WorkerSettings:
    """The worker's settings: [worker] plus where this node's edge answers for media tokens."""
    node, w, edge, auth = config.node, config.worker, config.edge, config.auth
    host = node.listen_address
    advertise = host
    if host in ("0.0.0.0", "::"):
        try:
            advertise = socket.gethostbyname(node.fqdn)
        except OSError:
            advertise = "127.0.0.1"
    edge_host = edge.listen_address if edge.listen_address not in ("0.0.0.0", "::") else "127.0.0.1"
    mras = host_port(w.edge_mras) if w.edge_mras else (edge_host, auth.mras_tls_port)
    https = host_port(w.edge_https) if w.edge_https else (edge_host, auth.https_port)
    gateway = host_port(w.outbound_gateway) if w.outbound_gateway else _first_gateway(config.callrouter)
    return WorkerSettings(
        host=host, advertise=advertise, state_dir=node.state_dir, certs_dir=node.certs_dir,
        node_name=node.name, domain=node.domain, rtp_port_min=w.rtp_port_min, rtp_port_max=w.rtp_port_max,
        media_via_edge=w.media_via_edge, edge_mras=mras, edge_https=https,
        greeting_dir=str(Path(node.state_dir) / (w.greeting_dir or "greetings")),
        prompt_dir=str(Path(node.state_dir) / w.prompt_dir) if w.prompt_dir else "",
        spoken_prompts=w.prompts == "spoken",
        languages=tuple(sorted({plan.language for plan in config.callrouter.dial_plans} or {"en"})),
        max_message_seconds=float(w.max_message_seconds), min_message_seconds=float(w.min_message_seconds),
        silence_timeout=float(w.silence_timeout), jitter_buffer_ms=int(w.jitter_buffer_ms),
        media_timeout=float(w.media_timeout),
        pin_policy=PinPolicy(min_length=w.pin_min_length, max_failures=w.pin_max_failures),
        outbound_gateway=gateway, ack_timeout=w.ack_timeout, max_calls_per_source=w.max_calls_per_source)


def slot_rtp_ports(config: Config, slot: int) -> tuple[int, int]:
    """The worker slot's half of [worker] rtp_port_min..rtp_port_max: two processes never share a port."""
    low, high = config.worker.rtp_port_min, config.worker.rtp_port_max
    middle = (low + high) // 2
    if middle % 2 == 0:  # slot 1 ends on an odd port, so both halves keep whole even/odd pairs
        middle -= 1
    return (low, middle) if slot == 1 else (middle + 1, high)


def worker_calls(config: Config, current: Callable[[], Config], slot: int | None = None) -> WorkerCalls:
    """The worker's call handler; its directory follows `current()` (SIGHUP) and the directory file.

    `slot`: the worker process of that slot (its half of the RTP ports, its own recordings-in-progress
    directory); None: the node's main process (the UM web services' store, PINs and play on phone).
    """
    directory = LiveDirectory(lambda: current().callrouter,
                              on_error=lambda why: log.warn("worker: {why}", why=why))
    settings = worker_settings(config)
    if slot is not None:
        low, high = slot_rtp_ports(config, slot)
        settings = replace(settings, rtp_port_min=low, rtp_port_max=high, slot=slot)
    return WorkerCalls(WorkerContext(settings, directory))


def worker_process_argv(config: Config, slot: int) -> list[str]:
    """How the supervisor starts a slot's worker process (edge.node.workerproc) with this node's config."""
    argv = [sys.executable, "-m", "edge.node.workerproc", "--slot", str(slot), "--roles", ",".join(config.node.roles),
            "--log-format", logsetup.current_format]
    if config.source != EMBEDDED:
        argv += ["--config", config.source]
    return argv


def worker_supervisor(config: Config, current: Callable[[], Config], mailbox: MailboxService,
                      context: WorkerContext, loop: object, clock: object) -> WorkerSupervisor:
    """The mailbox service's worker slots as processes; the main process's worker context (web services)
    reports what they report."""

    def limits() -> RecycleLimits:
        w = current().worker
        return RecycleLimits(w.recycle_after_calls, w.recycle_after_hours, w.recycle_memory_mb)

    supervisor = WorkerSupervisor(mailbox, lambda slot: worker_process_argv(current(), slot), limits,
                                  lambda: current().mailbox.drain_timeout, loop, clock, reload_token=current)
    context.remote = supervisor.remote_status
    return supervisor


def mailbox_service(config: Config, host: str, calls: CallHandler | None, clock: object,
                    gateways: Callable[[], GatewayTable], serve_slot: int | None = None) -> MailboxService:
    """`gateways()`: the UM IP gateway table the worker trusts (the call router's, FQDNs resolved, if it runs);
    `serve_slot`: in a worker process, the slot it serves."""
    m, w = config.mailbox, config.worker
    return MailboxService(host, w.startup_mode, w.sip_ports, w.sip_dual_tls_ports, m.call_routers,
                          m.drain_timeout, call_handler=calls, clock=clock, gateway=lambda peer: gateways().match(peer),
                          serve_slot=serve_slot)


def call_router_service(config: Config, host: str, local: MailboxService | None, reactor: object
                        ) -> CallRouterService:
    cr, node = config.callrouter, config.node
    client = DeferredUac(UserAgentClient(
        via_host=host, ssl_context=lambda: tls.client_ssl_context(node.certs_dir, node.name)))
    router = CallRouter(GatewayTable(cr.gateways), cr.hunt_groups, load_directory(cr), local, client,
                        probe=ProbeSettings(cr.probe_interval, cr.probe_timeout, cr.probe_failure_threshold,
                                            cr.probe_success_threshold, cr.retry_after, cr.lookup_timeout))
    return CallRouterService(router, cr, host)


def unified_messaging(config: Config, current: Callable[[], Config], mailbox: MailboxService | None,
                      host: str) -> list[service.Service]:
    """Voicemail delivery (um.delivery) and message-waiting indication (um.mwi), in this process: both watch
    the voicemail store on disk, so they work whether the worker runs here or in a child process."""
    from edge.node import metrics
    from um.delivery.setup import delivery_service, warnings
    from um.delivery.status import metric_families
    from um.mwi.setup import mwi_service

    directory = LiveDirectory(lambda: current().callrouter,
                              on_error=lambda why: log.warn("delivery: {why}", why=why))
    for line in warnings(config, directory.current()):
        log.warn("{line}", line=line)
    parts: list[service.Service] = []
    delivery = delivery_service(config, directory.current)
    if delivery is not None:
        delivery.prepare()  # before the worker recovers its store: what it finishes is queued too
        parts.append(delivery)
    mwi = None
    if mailbox is not None:
        node = config.node
        mwi = mwi_service(config, mailbox, directory.current, host,
                          ssl_context=lambda: tls.client_ssl_context(node.certs_dir, node.name))
        if mwi is not None:
            parts.append(mwi)
    metrics.EXTRA.append(lambda: metric_families(delivery, mwi))
    return parts
