"""The node's whole config: the aggregate of every layer's sections, plus [log] and [web].

Each layer defines its own sections (um.config, edge.config); only the
composition root (edge.node) sees them all.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.config import AuthConfig, EdgeConfig, MediationConfig, PoolConfig, api_key_list
from um.config import (
    CallRouterConfig,
    DeliveryConfig,
    LimitsConfig,
    MailboxConfig,
    MwiConfig,
    NodeConfig,
    WorkerConfig,
)
from um.configkeys import choice, key, port

EMBEDDED = "<embedded default>"
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warn", "error")


@dataclass(frozen=True)
class LogConfig:
    format: str = key(choice(*LOG_FORMATS))
    level: str = key(choice(*LOG_LEVELS))


@dataclass(frozen=True)
class WebConfig:
    http_port: int = key(port)
    admin_keys: tuple[str, ...] = key(api_key_list, secret=True)  # the operator's console (edge.node.admin)


SECTIONS: dict[str, type] = {
    "node": NodeConfig,
    "log": LogConfig,
    "callrouter": CallRouterConfig,
    "mailbox": MailboxConfig,
    "worker": WorkerConfig,
    "edge": EdgeConfig,
    "auth": AuthConfig,
    "web": WebConfig,
    "pool": PoolConfig,
    "mediation": MediationConfig,
    "limits": LimitsConfig,
    "delivery": DeliveryConfig,
    "mwi": MwiConfig,
}


@dataclass(frozen=True)
class Config:
    """A validated configuration; paths in [node] are absolute."""

    node: NodeConfig
    log: LogConfig
    callrouter: CallRouterConfig
    mailbox: MailboxConfig
    worker: WorkerConfig
    edge: EdgeConfig
    auth: AuthConfig
    web: WebConfig
    pool: PoolConfig
    mediation: MediationConfig
    limits: LimitsConfig
    delivery: DeliveryConfig
    mwi: MwiConfig
    source: str = EMBEDDED
