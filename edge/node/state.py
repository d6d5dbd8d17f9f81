"""One view of what this node is doing now, for the status page, `umedge status` and /metrics.

build() hands the running services to a NodeState; readers call snapshot()
(plain JSON-able values) so the page, the CLI and the metrics can never
disagree: they read the same numbers from the same place.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from twisted.application import service
from twisted.internet import task

from certs import pki
from edge.auth.issuer import TokenIssuer
from edge.auth.secrets import auth_secrets
from edge.mediation.registration import MediationService
from edge.node.listeners import listeners
from edge.node.schema import Config
from edge.pool.service import PoolMembership
from edge.turn.engine import TurnEngine
from edge.turn.service import TurnService
from um.mailbox import MailboxService
from um.netguard import ConnectionGuard, RateLimiter
from um.services import CallRouterService
from um.sip.uri import bracket
from um.worker.service import WorkerService

HISTORY_SECONDS = 600
SAMPLE_EVERY = 2.0


class NodeState:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.pool: PoolMembership | None = None
        self.engine: TurnEngine | None = None
        self.turn: TurnService | None = None
        self.mediation: MediationService | None = None
        self.issuer: TokenIssuer | None = None  # shared by the MRAS and HTTPS paths
        self.callrouter: CallRouterService | None = None
        self.mailbox: MailboxService | None = None  # the UM service and its worker slots
        self.worker: WorkerService | None = None
        self.sip_limiter: RateLimiter | None = None  # shared by the SIP listeners
        self.guards: list[ConnectionGuard] = []  # of each SIP listener
        self.console: Any = None  # edge.node.admin.Console: sessions, calls, refusals
        self.draining = False
        self.started = time.time()
        self.loop_lag = 0.0  # seconds the event loop was late on its last timer
        self._history: deque[tuple[float, float]] = deque(maxlen=int(HISTORY_SECONDS / SAMPLE_EVERY))
        self._last_packets: tuple[float, int] | None = None

    # --- SIGHUP and SIGTERM ---------------------------------------------------------------

    def reconfigure(self, config: Config) -> None:
        """SIGHUP: secrets (rotation), token policy, gateways, hunt groups and the directory."""
        self.config = config
        if self.engine is not None:
            secrets = auth_secrets(config)
            self.engine.auth.use_secrets(lambda: secrets)
        if self.issuer is not None:
            self.issuer.reconfigure(config)
        if self.callrouter is not None:
            self.callrouter.reconfigure(config.callrouter)

    def start_drain(self) -> None:
        """SIGTERM: take no new allocations or calls; what is active runs on."""
        self.draining = True
        if self.engine is not None:
            self.engine.accepting = False
        if self.mailbox is not None:
            self.mailbox.draining = True

    def busy(self) -> int:
        """Calls plus allocations still active (the drain waits for these)."""
        return self.calls_active() + sum(self.allocations_by_transport().values())

    # --- what the services say ---------------------------------------------------------

    def allocations_by_transport(self) -> dict[str, int]:
        counts = {"udp": 0, "tcp": 0, "tls": 0}
        engine = self.engine
        for allocation in list(engine.allocations.values()) if engine is not None else []:
            kind = allocation.client.kind
            counts[kind] = counts.get(kind, 0) + 1
        return counts

    def calls_active(self) -> int:
        mailbox = self.mailbox
        return sum(slot.call_count for slot in mailbox.slots) if mailbox is not None else 0

    def relayed_packets(self) -> int:
        engine = self.engine
        if engine is None:
            return 0
        traffic = engine.traffic()
        return traffic["packets_to_peer"] + traffic["packets_to_client"]

    def sample(self) -> None:
        """Every SAMPLE_EVERY seconds: relayed packets per second, for the 10-minute chart."""
        now, packets = time.time(), self.relayed_packets()
        if self._last_packets is not None:
            then, before = self._last_packets
            self._history.append((now, max(0, packets - before) / max(now - then, 1e-3)))
        self._last_packets = (now, packets)

    # --- the snapshot --------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        config = self.config
        engine = self.engine
        pool = self.pool
        allocations = self.allocations_by_transport()
        snapshot: dict[str, Any] = {
            "node": config.node.name, "fqdn": config.node.fqdn, "roles": list(config.node.roles),
            "uptime_seconds": round(time.time() - self.started, 1), "draining": self.draining,
            "listeners": [row.as_dict() for row in listeners(config)],
            "allocations": {"active": sum(allocations.values()), "by_transport": allocations},
            "relay_ports": ({"size": engine.ports.size, "in_use": engine.ports.in_use,
                             "free": engine.ports.size - engine.ports.in_use,
                             "exhausted_refusals": engine.stats["relay_ports_exhausted"]}
                            if engine is not None else {}),
            "calls": {"active": self.calls_active()},
            "relayed": engine.traffic() if engine is not None else {},
            "kernel_offload": engine.offload.status() if engine is not None and engine.offload is not None else {},
            "relayed_pps_history": [[round(t, 1), round(v, 1)] for t, v in self._history],
            "mediation": self.mediation.snapshot() if self.mediation is not None else [],
            "pool": {
                "store": "memory" if config.pool.store == "memory" else "redis",
                "degraded": bool(pool.degraded) if pool is not None else False,
                "members": [{"name": m.name, "relay": f"{bracket(m.relay_host)}:{m.udp_port}",
                             "allocations": m.allocations, "load": round(m.load, 4)}
                            for m in (pool.live if pool is not None else [])],
            },
            "certificates": [{"name": info.name, "subject": info.subject,
                              "not_after": info.not_after.isoformat(), "days_left": info.days_left(),
                              "expiring_soon": info.expiring_soon}
                             for info in pki.inventory(config.node.certs_dir)],
            "event_loop_lag_seconds": round(self.loop_lag, 4),
        }
        if self.mailbox is not None:
            snapshot["worker_slots"] = self.mailbox.status()
        return snapshot


class StateSampler(service.Service):
    """Samples the relayed packet rate for the chart and measures event-loop lag."""

    def __init__(self, state: NodeState) -> None:
        self.state = state
        self._loop: Any = None

    def startService(self) -> None:
        from twisted.internet import reactor

        super().startService()
        expected = [reactor.seconds() + SAMPLE_EVERY]

        def tick() -> None:
            now = reactor.seconds()
            self.state.loop_lag = max(0.0, now - expected[0])
            expected[0] = now + SAMPLE_EVERY
            self.state.sample()

        self._loop = task.LoopingCall(tick)
        self._loop.start(SAMPLE_EVERY, now=False)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
