"""Prometheus metrics, read from the running services at scrape time.

Nothing is counted twice: the TURN engine, the token audit, the pool and
the mediation service keep their own counters (plain ints, cheap on the
packet path), and this collector turns them into metric families when
/metrics is scraped. Labels take bounded values only (transports, methods,
codes, reasons, configured servers), never usernames or peer addresses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from certs import pki
from edge.auth import audit
from edge.node import logsetup
from edge.node.state import NodeState
from edge.node.workerview import worker_process_metrics
from um.sip import stream as sip_stats

# Other parts of the node (the UM worker, the SIP listeners) add their families here.
EXTRA: list[Callable[[], Iterable[Metric]]] = []


def _counter(name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], float]) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for label_values, value in sorted(values.items()):
        family.add_metric(list(label_values), value)
    return family


def _gauge(name: str, doc: str, value: float, labels: list[str] | None = None,
           values: dict[tuple[str, ...], float] | None = None) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels or [])
    if values is None:
        family.add_metric([], value)
    else:
        for label_values, each in sorted(values.items()):
            family.add_metric(list(label_values), each)
    return family


class NodeCollector:
    def __init__(self, state: NodeState) -> None:
        self.state = state

    def collect(self) -> Iterable[Metric]:
        state = self.state
        engine = state.engine
        stats: dict[str, int] = dict(engine.stats) if engine is not None else {}
        allocations = state.allocations_by_transport()
        yield _gauge("umedge_turn_allocations_active", "TURN allocations now, by client transport", 0,
                     ["transport"], {(k,): v for k, v in allocations.items()})
        yield _counter("umedge_turn_allocations_created", "TURN allocations created, by client transport",
                       ["transport"], {(t,): stats.get(f"allocations_created_{t}", 0) for t in ("udp", "tcp", "tls")})
        yield _counter("umedge_turn_allocations_expired", "TURN allocations that ran out of lifetime", [],
                       {(): stats.get("allocations_expired", 0)})
        traffic = engine.traffic() if engine is not None else {}
        yield _counter("umedge_turn_relayed_datagrams", "Datagrams relayed, by direction", ["direction"],
                       {("to_peer",): traffic.get("packets_to_peer", 0),
                        ("to_client",): traffic.get("packets_to_client", 0)})
        yield _counter("umedge_turn_relayed_bytes", "Payload bytes relayed, by direction", ["direction"],
                       {("to_peer",): traffic.get("bytes_to_peer", 0),
                        ("to_client",): traffic.get("bytes_to_client", 0)})
        yield _counter("umedge_turn_offloaded_datagrams", "Of the relayed datagrams, those a fast path moved (the "
                       "kernel's, [edge] kernel_offload, or the native forwarder, [edge] native_forwarder)",
                       ["direction"],
                       {("to_peer",): traffic.get("offloaded_packets_to_peer", 0),
                        ("to_client",): traffic.get("offloaded_packets_to_client", 0)})
        offload = engine.offload.status() if engine is not None and engine.offload is not None else {}
        yield _gauge("umedge_turn_offload_active", "1 when the kernel fast path is attached",
                     1.0 if offload.get("active") else 0.0)
        yield _gauge("umedge_turn_offload_channels", "Channel bindings in the kernel fast path now",
                     float(offload.get("channels", 0)))
        native = offload.get("native") or {}
        yield _gauge("umedge_turn_native_forwarder_active", "1 when bound channels are relayed by the native "
                     "forwarder (forwarder.c)", 1.0 if native.get("active") else 0.0)
        yield _gauge("umedge_turn_native_forwarder_channels", "Channel bindings in the native forwarder now",
                     float(native.get("channels", 0)))
        yield _counter("umedge_turn_offload_bandwidth_refusals", "Allocations taken off a fast path for "
                       "exceeding allocation_bandwidth_kbps", [], {(): stats.get("offload_bandwidth_refusals", 0)})
        yield _counter("umedge_turn_auth_failures", "TURN requests failing authentication, by reason",
                       ["reason"], {(k.removeprefix("auth_failed_"),): v for k, v in stats.items()
                                    if k.startswith("auth_failed_")})
        yield _counter("umedge_turn_auth_challenges", "Normal authentication steps answered: the first 401 "
                       "(missing) and 438 (stale_nonce)", ["reason"],
                       {(k.removeprefix("auth_challenged_"),): v for k, v in stats.items()
                        if k.startswith("auth_challenged_")})
        yield _counter("umedge_stun_classic_bindings", "RFC 3489 Binding requests (no magic cookie)", [],
                       {(): stats.get("classic_bindings", 0)})
        yield _counter("umedge_turn_requests_refused", "TURN requests refused, by STUN error code", ["code"],
                       {(k.removeprefix("refused_"),): v for k, v in stats.items() if k.startswith("refused_")})
        dropped = {k.removeprefix("dropped_"): v for k, v in stats.items() if k.startswith("dropped_")}
        dropped["malformed"] = stats.get("malformed", 0)
        yield _counter("umedge_turn_dropped", "Client datagrams the relay dropped, by reason", ["reason"],
                       {(reason,): float(n) for reason, n in dropped.items()})
        yield _counter("umedge_relay_ports_exhausted", "Allocates refused because no relay port was free", [],
                       {(): stats.get("relay_ports_exhausted", 0)})
        if engine is not None:
            yield _gauge("umedge_relay_ports_free", "Relay ports not in use (per address family range)",
                         float(engine.ports.size - engine.ports.in_use))
            yield _gauge("umedge_relay_ports_size", "Relay ports in [edge] relay_port_min..relay_port_max",
                         float(engine.ports.size))
        yield _counter("umedge_stun_rate_limited", "STUN requests dropped by the per-source rate limit", [],
                       {(): stats.get("rate_limited", 0)})
        guards = [*(state.turn.guards if state.turn is not None else []), *state.guards]
        yield _counter("umedge_connections_refused", "Stream connections refused by the connection caps",
                       ["listener"], {(g.name,): g.refused for g in guards})
        yield _counter("umedge_connections_timed_out", "Stream connections cut by the handshake/idle timeouts",
                       ["listener"], {(g.name,): g.timed_out for g in guards})
        yield _counter("umedge_tls_handshakes_refused", "TLS handshakes refused (no client certificate, an "
                       "untrusted CA, not TLS)", ["listener"],
                       {(g.name,): getattr(g, "tls_refused", 0) for g in guards})
        yield _counter("umedge_sip_requests", "SIP requests received, by method", ["method"],
                       {(m,): n for m, n in sip_stats.STATS.requests.items()})
        yield _counter("umedge_sip_responses", "SIP responses sent, by status code", ["code"],
                       {(c,): n for c, n in sip_stats.STATS.responses.items()})
        yield _counter("umedge_sip_rate_limited", "SIP requests answered 503 by the per-source rate limit", [],
                       {(): sip_stats.STATS.rate_limited})
        yield _counter("umedge_tokens_issued", "Media tokens issued, by path", ["path"],
                       {(path,): audit.ISSUED.get(path, 0) for path in ("mras", "https", "cli")})
        yield _counter("umedge_tokens_refused", "Media token requests refused, by path", ["path"],
                       {(path,): audit.REFUSED.get(path, 0) for path in ("mras", "https")})
        yield _gauge("umedge_calls_active", "Calls on the UM worker slots now", state.calls_active())
        counters: dict[str, int] = state.worker.context.all_counters() if state.worker is not None else {}
        yield _counter("umedge_voicemails_stored", "Voicemail messages stored whole", [],
                       {(): counters.get("messages", 0)})
        yield _counter("umedge_worker_calls", "Calls the UM worker answered, by outcome", ["outcome"],
                       {(k,): counters.get(k, 0) for k in ("answered", "rejected", "messages_discarded")})
        mediation = state.mediation.snapshot() if state.mediation is not None else []
        yield _gauge("umedge_mediation_registered", "1 when registered at (or, in static mode, keepalive-ok "
                     "with) the mediation server", 0, ["server"],
                     {(str(s["address"]),): 1.0 if s["registration"] == "registered" or (
                         s["mode"] == "static" and s["keepalive_ok"]) else 0.0 for s in mediation})
        yield _counter("umedge_mediation_failures", "Failed keepalives and registrations per mediation server",
                       ["server"], {(str(s["address"]),): float(str(s["failures"])) for s in mediation})
        pool = state.pool
        yield _gauge("umedge_pool_members", "Live members of the edge pool (this node included)",
                     len(pool.live) if pool is not None else 0)
        yield _gauge("umedge_pool_degraded", "1 while the pool store is unreachable",
                     1.0 if pool is not None and pool.degraded else 0.0)
        yield _gauge("umedge_event_loop_lag_seconds", "How late the event loop ran its last timer",
                     state.loop_lag)
        yield _gauge("umedge_draining", "1 while the node drains after SIGTERM", 1.0 if state.draining else 0.0)
        untrusted: dict[tuple[str, ...], float] = {}
        if state.callrouter is not None:
            untrusted[("callrouter",)] = float(state.callrouter.router.counters["untrusted"])
        if state.mailbox is not None:
            untrusted[("mailbox",)] = float(state.mailbox.untrusted)
        yield _counter("umedge_sip_untrusted", "SIP requests refused (403) for their source: not a configured "
                       "gateway, call router or MTLS peer", ["role"], untrusted)
        yield _counter("umedge_log_suppressed", "Log events counted instead of written (repeats beyond the "
                       "per-minute burst), by namespace", ["namespace"],
                       {(namespace,): float(n) for namespace, n in logsetup.suppressed.items()})
        yield from certificate_metrics(state.config.node.certs_dir)
        yield from worker_process_metrics(state)
        for extra in EXTRA:
            yield from extra()


def certificate_metrics(certs_dir: str) -> Iterable[Metric]:
    """Each certificate's expiry (the files under [node] certs_dir, as SIGHUP would load them)."""
    try:
        found = pki.inventory(certs_dir)
    except (pki.PkiError, OSError, ValueError):
        found = []
    yield _gauge("umedge_certificate_expiry_timestamp_seconds", "When each certificate of [node] certs_dir "
                 "expires (Unix time); alert 30 days ahead", 0, ["name", "kind"],
                 {(info.name, "ca" if info.is_ca else "node"): info.not_after.timestamp() for info in found})


def registry_for(state: NodeState) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(state))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)


__all__ = ["EXTRA", "NodeCollector", "exposition", "registry_for"]
