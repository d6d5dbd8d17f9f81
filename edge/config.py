"""The A/V Edge's config sections ([edge], [auth], [pool], [mediation]), typed.

Edge role code takes `EdgeSections` (or one section); [node] and [limits]
are the UM layer's shared sections (um.config).
"""

from __future__ import annotations

import ipaddress
import urllib.parse
from dataclasses import dataclass
from typing import Any, Protocol

from um.config import LimitsConfig, NodeConfig
from um.configkeys import (
    Invalid,
    boolean,
    choice,
    cidr_list,
    count,
    host_port_list,
    hostname,
    hostname_list,
    integer,
    ip_address,
    key,
    optional_domain,
    optional_ip_address,
    optional_ipv6_address,
    port,
    seconds,
    text,
    user_part,
)


def worker_count(value: Any) -> int:
    return integer(value, 1, 64, "an integer 1-64")


def bandwidth(value: Any) -> int:
    return integer(value, 0, 10_000_000, "an integer 0-10000000 (kbit/s; 0 for no cap)")


def secret_list(value: Any) -> tuple[str, ...]:
    allowed = "a list of secrets of at least 16 characters each"
    if not isinstance(value, list) or not all(isinstance(s, str) and len(s) >= 16 for s in value):
        raise Invalid(allowed)
    return tuple(value)


def token_lifetime(value: Any) -> int:
    return integer(value, 1, 10080, "an integer 1-10080 (minutes; Lync's default is 480)")


def api_key_list(value: Any) -> tuple[str, ...]:
    allowed = "a list of distinct API keys of 16-256 printable ASCII characters each"
    if not isinstance(value, list) or not all(
            isinstance(k, str) and 16 <= len(k) <= 256 and k.isascii() and k.isprintable() and " " not in k
            for k in value) or len(set(value)) != len(value):
        raise Invalid(allowed)
    return tuple(value)


@dataclass(frozen=True)
class EdgeConfig:
    listen_address: str = key(ip_address)
    relay_address: str = key(ip_address)
    external_address: str = key(optional_ip_address)
    turn_udp_port: int = key(port)
    turn_tcp_port: int = key(port)
    turn_tls_port: int = key(port)
    relay_port_min: int = key(port)
    relay_port_max: int = key(port)
    realm: str = key(hostname)
    auth_secrets: tuple[str, ...] = key(secret_list, secret=True)
    allowed_peer_networks: tuple[str, ...] = key(cidr_list)
    denied_peer_networks: tuple[str, ...] = key(cidr_list)
    relay_address_v6: str = key(optional_ipv6_address)
    max_allocations: int = key(count)
    max_allocations_per_user: int = key(count)
    allocation_bandwidth_kbps: int = key(bandwidth)
    alternate_servers: tuple[tuple[str, int], ...] = key(host_port_list)
    workers: int = key(worker_count)
    ms_turn: bool = key(boolean)
    alternate_address: str = key(optional_ip_address)
    alternate_port: int = key(port)
    kernel_offload: str = key(choice("auto", "on", "off"))
    native_forwarder: str = key(choice("auto", "on", "off"))
    socket_buffer_kb: int = key(lambda v: integer(v, 64, 262144, "an integer 64-262144 (KiB)"))
    permission_lifetime: int = key(lambda v: integer(v, 1, 300, "an integer 1-300 (seconds; RFC 8656: 300)"))


@dataclass(frozen=True)
class AuthConfig:
    https_port: int = key(port)
    mras_tls_port: int = key(port)
    max_token_lifetime: int = key(token_lifetime)
    api_keys: tuple[str, ...] = key(api_key_list, secret=True)
    served_domains: tuple[str, ...] = key(hostname_list)


def store_spec(value: Any) -> str:
    allowed = '"memory" or "redis://HOST:PORT/DB" (rediss:// for TLS)'
    if value == "memory":
        return value
    if not isinstance(value, str):
        raise Invalid(allowed)
    parsed = urllib.parse.urlsplit(value)
    try:
        valid_port = parsed.port is None or 1 <= parsed.port <= 65535
    except ValueError:
        valid_port = False
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname or not valid_port or (
            parsed.path not in ("", "/") and not parsed.path[1:].isdigit()):
        raise Invalid(allowed)
    return value


@dataclass(frozen=True)
class PoolConfig:
    store: str = key(store_spec, secret=True)  # a redis URL may carry a password
    heartbeat_interval: float = key(seconds)
    member_ttl: float = key(seconds)
    key_prefix: str = key(hostname)


def sip_uri_list(value: Any) -> tuple[str, ...]:
    from edge.mediation.targets import TargetError, parse_uri

    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid('a list of SIP URIs such as ["sip:192.0.2.5:5068;transport=tcp", "sips:med1.example.test:5067"]')
    for uri in value:
        try:
            parse_uri(uri)
        except TargetError as error:
            raise Invalid(str(error).split("allowed: ", 1)[-1]) from None
    return tuple(value)


def dns_server_list(value: Any) -> tuple[tuple[str, int], ...]:
    allowed = 'a list of "IP" or "IP:PORT" DNS servers (empty: the system resolver)'
    if not isinstance(value, list):
        raise Invalid(allowed)
    servers = []
    for item in value:
        if isinstance(item, str) and item.count(":") <= 1 and ":" in item:
            host, _, port_text = item.partition(":")
        else:
            host, port_text = item, "53"
        try:
            servers.append((str(ipaddress.ip_address(host)), port(int(port_text))))
        except (TypeError, ValueError, Invalid):
            raise Invalid(allowed) from None
    return tuple(servers)


@dataclass(frozen=True)
class MediationConfig:
    servers: tuple[str, ...] = key(sip_uri_list)
    domain: str = key(optional_domain)
    mode: str = key(choice("register", "static"))
    aor_user: str = key(user_part)
    expires: int = key(lambda v: integer(v, 60, 86400, "an integer 60-86400 (seconds)"))
    keepalive_interval: float = key(seconds)
    timeout: float = key(seconds)
    dns_servers: tuple[tuple[str, int], ...] = key(dns_server_list)
    username: str = key(user_part)
    password: str = key(text, secret=True)


class EdgeSections(Protocol):
    """What the A/V Edge roles may read of a node's config."""

    @property
    def node(self) -> NodeConfig: ...

    @property
    def edge(self) -> EdgeConfig: ...

    @property
    def auth(self) -> AuthConfig: ...

    @property
    def pool(self) -> PoolConfig: ...

    @property
    def mediation(self) -> MediationConfig: ...

    @property
    def limits(self) -> LimitsConfig: ...
