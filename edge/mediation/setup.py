"""Build the mediation service from config: discovery, the SIP user-agent client, the edge's Contact."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from certs import tls
from edge.config import EdgeSections
from edge.mediation.discovery import Discovery, make_resolver
from edge.mediation.registration import (
    MediationService,
    RegistrationSettings,
    instance_id,
)

STATUS_FILE = "mediation.json"


def enabled(config: EdgeSections) -> bool:
    return bool(config.mediation.servers or config.mediation.domain)


def status_path(config: EdgeSections) -> Path:
    return Path(config.node.state_dir) / STATUS_FILE


def mediation_service(config: EdgeSections, pool_store: Callable[[], Any] | None = None) -> MediationService:
    """The mediation association of this edge (requires enabled(config))."""
    from um.sip.uac import UserAgentClient
    from um.sip.uri import bracket

    m, node = config.mediation, config.node
    contact_host = config.edge.external_address or config.edge.listen_address
    if contact_host in ("0.0.0.0", "::"):
        contact_host = node.fqdn
    settings = RegistrationSettings(
        mode=m.mode, aor=f"sip:{m.aor_user}@{node.domain}", registrar_domain=node.domain,
        contact=f"sips:{bracket(contact_host)}:{config.auth.mras_tls_port};transport=tls",
        instance=instance_id(node.fqdn), expires=m.expires, keepalive_interval=m.keepalive_interval,
        timeout=m.timeout, username=m.username, password=m.password)
    resolver = make_resolver(m.dns_servers, timeout=m.timeout) if m.domain and not m.servers else None
    discovery = Discovery(m.servers, m.domain, resolver)
    client = UserAgentClient(via_host=node.fqdn,
                             ssl_context=lambda: tls.client_ssl_context(node.certs_dir, node.name))

    def publish(server: str, state: dict[str, object]) -> None:
        store = pool_store() if pool_store else None
        if store is None or not getattr(store, "shared", False):
            return

        async def write() -> None:
            try:
                await store.set_registration(node.name, server, state, ttl=3 * m.keepalive_interval)
            except Exception:  # noqa: BLE001 - the pool is advisory; its outage is logged by the pool
                pass

        asyncio.ensure_future(write())

    return MediationService(settings, discovery, client, node.fqdn, status_path(config), publish)
