"""The shape of config.toml: one frozen dataclass per section, one validator per key.

The dataclasses are the schema (names, types, what is allowed); the embedded
config.toml holds the defaults and the comments, so each fact lives once.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ROLES = ("callrouter", "mailbox", "worker", "edge", "web")
STARTUP_MODES = ("tcp", "tls", "dual")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("debug", "info", "warn", "error")


class Invalid(ValueError):
    """A value is not allowed; carries the description of what is."""

    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


Validator = Callable[[Any], Any]


def _integer(value: Any, lo: int, hi: int, allowed: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Invalid(allowed)
    return value


def port(value: Any) -> int:
    return _integer(value, 1, 65535, "an integer port 1-65535")


def rtp_port(value: Any) -> int:
    return _integer(value, 1024, 65535, "an integer port 1024-65535")


def port_pair(value: Any) -> tuple[int, int]:
    allowed = "a list of two distinct ports 1-65535"
    if not isinstance(value, list) or len(value) != 2:
        raise Invalid(allowed)
    pair = (port(value[0]), port(value[1]))
    if pair[0] == pair[1]:
        raise Invalid(allowed)
    return pair


def choice(*values: str) -> Validator:
    allowed = " or ".join(f'"{v}"' for v in values)

    def check(value: Any) -> str:
        if value not in values:
            raise Invalid(allowed)
        return value

    return check


_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,62}[A-Za-z0-9])?$")


def hostname(value: Any) -> str:
    if not isinstance(value, str) or not _NAME.match(value) or ".." in value:
        raise Invalid("a host or domain name of letters, digits, '-' and '.'")
    return value


def path(value: Any) -> str:
    if not isinstance(value, str) or not value or "\0" in value:
        raise Invalid("a non-empty path")
    return value


def _address(value: Any, allowed: str, versions: tuple[int, ...] = (4, 6), empty: bool = False) -> str:
    if empty and value == "":
        return ""
    try:
        address = ipaddress.ip_address(value)
    except (TypeError, ValueError):
        raise Invalid(allowed) from None
    if address.version not in versions:
        raise Invalid(allowed)
    return str(address)


def ip_address(value: Any) -> str:
    return _address(value, 'an IPv4 or IPv6 address ("0.0.0.0" or "::" for all)')


def optional_ip_address(value: Any) -> str:
    return _address(value, 'an IPv4 or IPv6 address, or "" for none', empty=True)


def optional_ipv6_address(value: Any) -> str:
    return _address(value, 'an IPv6 address, or "" for no IPv6 relays', versions=(6,), empty=True)


def count(value: Any) -> int:
    return _integer(value, 1, 10_000_000, "an integer 1-10000000")


def worker_count(value: Any) -> int:
    return _integer(value, 1, 64, "an integer 1-64")


def bandwidth(value: Any) -> int:
    return _integer(value, 0, 10_000_000, "an integer 0-10000000 (kbit/s; 0 for no cap)")


def host_port_list(value: Any) -> tuple[tuple[str, int], ...]:
    allowed = 'a list of "IP:PORT" strings such as ["192.0.2.8:3478", "[2001:db8::8]:3478"]'
    if not isinstance(value, list):
        raise Invalid(allowed)
    parsed = []
    for item in value:
        if not isinstance(item, str) or ":" not in item:
            raise Invalid(allowed)
        host, _, port_text = item.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            parsed.append((str(ipaddress.ip_address(host)), port(int(port_text))))
        except (ValueError, Invalid):
            raise Invalid(allowed) from None
    return tuple(parsed)


def cidr_list(value: Any) -> tuple[str, ...]:
    allowed = 'a list of CIDRs such as ["10.0.0.0/8", "fd00::/8"]'
    if not isinstance(value, list):
        raise Invalid(allowed)
    try:
        return tuple(str(ipaddress.ip_network(item, strict=True)) for item in value)
    except (TypeError, ValueError):
        raise Invalid(allowed + " (host bits zero)") from None


def secret_list(value: Any) -> tuple[str, ...]:
    allowed = "a list of secrets of at least 16 characters each"
    if not isinstance(value, list) or not all(isinstance(s, str) and len(s) >= 16 for s in value):
        raise Invalid(allowed)
    return tuple(value)


def token_lifetime(value: Any) -> int:
    return _integer(value, 1, 10080, "an integer 1-10080 (minutes; Lync's default is 480)")


def api_key_list(value: Any) -> tuple[str, ...]:
    allowed = "a list of distinct API keys of 16-256 printable ASCII characters each"
    if not isinstance(value, list) or not all(
            isinstance(k, str) and 16 <= len(k) <= 256 and k.isascii() and k.isprintable() and " " not in k
            for k in value) or len(set(value)) != len(value):
        raise Invalid(allowed)
    return tuple(value)


def hostname_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid("a list of domain names")
    return tuple(hostname(item).lower() for item in value)


def role_list(value: Any) -> tuple[str, ...]:
    allowed = '["all"] or a list of ' + ", ".join(f'"{r}"' for r in ROLES)
    if not isinstance(value, list) or not value or not all(isinstance(r, str) for r in value):
        raise Invalid(allowed)
    if value == ["all"]:
        return ROLES
    if any(r not in ROLES for r in value) or len(set(value)) != len(value):
        raise Invalid(allowed)
    return tuple(r for r in ROLES if r in value)


def key(check: Validator, *, secret: bool = False) -> Any:
    """Declare a config key: its validator, and whether its value must never be shown."""
    return field(metadata={"check": check, "secret": secret})


@dataclass(frozen=True)
class NodeConfig:
    name: str = key(hostname)
    domain: str = key(hostname)
    roles: tuple[str, ...] = key(role_list)
    listen_address: str = key(ip_address)
    state_dir: str = key(path)
    certs_dir: str = key(path)
    drain_seconds: float = key(lambda v: 0.0 if v == 0 and not isinstance(v, bool) else seconds(v))

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.domain}"


@dataclass(frozen=True)
class LogConfig:
    format: str = key(choice(*LOG_FORMATS))
    level: str = key(choice(*LOG_LEVELS))


def _directory(parse: Callable[[Any], Any]) -> Validator:
    """Wrap a um.directory parser (tables/arrays of tables) as a config validator."""

    def check(value: Any) -> Any:
        from um.directory import DirectoryError

        try:
            return parse(value)
        except DirectoryError as error:
            raise Invalid(str(error)) from None

    return check


def _um(name: str) -> Validator:
    def parse(value: Any) -> Any:
        import um.directory

        return getattr(um.directory, name)(value)

    return _directory(parse)


def seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86400:
        raise Invalid("a number of seconds, more than 0 and at most 86400")
    return float(value)


def optional_path(value: Any) -> str:
    return "" if value == "" else path(value)


def daily_time(value: Any) -> str:
    if value == "" or (isinstance(value, str) and re.match(r"^([01]\d|2[0-3]):[0-5]\d$", value)):
        return value
    raise Invalid('"HH:MM" (local time, 24 hours), or "" for no daily recycle')


def network_list(value: Any) -> tuple[str, ...]:
    allowed = 'a list of IP addresses or CIDRs such as ["127.0.0.1", "10.0.0.0/8"]'
    if not isinstance(value, list):
        raise Invalid(allowed)
    try:
        return tuple(str(ipaddress.ip_network(item, strict=True)) for item in value)
    except (TypeError, ValueError):
        raise Invalid(allowed + " (host bits zero)") from None


@dataclass(frozen=True)
class CallRouterConfig:
    sip_tcp_port: int = key(port)
    sip_tls_port: int = key(port)
    startup_mode: str = key(choice(*STARTUP_MODES))
    gateways: tuple[Any, ...] = key(_um("parse_gateways"))
    hunt_groups: tuple[Any, ...] = key(_um("parse_hunt_groups"))
    dial_plans: tuple[Any, ...] = key(_um("parse_dial_plans"))
    mailboxes: tuple[Any, ...] = key(_um("parse_mailboxes"))
    mailbox_servers: tuple[Any, ...] = key(_um("parse_servers"))
    directory_file: str = key(optional_path)
    directory_reload_interval: float = key(seconds)
    probe_interval: float = key(seconds)
    probe_timeout: float = key(seconds)
    probe_failure_threshold: int = key(count)
    probe_success_threshold: int = key(count)
    lookup_timeout: float = key(seconds)
    retry_after: int = key(count)


@dataclass(frozen=True)
class MailboxConfig:
    sip_tcp_port: int = key(port)
    sip_tls_port: int = key(port)
    startup_mode: str = key(choice(*STARTUP_MODES))
    call_routers: tuple[str, ...] = key(network_list)
    recycle_time: str = key(daily_time)
    drain_timeout: float = key(seconds)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise Invalid("true or false")
    return value


def optional_host_port(value: Any) -> str:
    """"" or "HOST:PORT" ("[v6]:PORT" for IPv6)."""
    allowed = '"" or "HOST:PORT" such as "192.0.2.5:5060" ("[2001:db8::5]:5060" for IPv6)'
    if value == "":
        return value
    if not isinstance(value, str) or ":" not in value:
        raise Invalid(allowed)
    host, _, port_text = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise Invalid(allowed)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        hostname(host)
    return value


def bounded(lo: float, hi: float, what: str, integer: bool = False) -> Validator:
    allowed = f"{'an integer' if integer else 'a number'} {lo:g}-{hi:g} ({what})"

    def check(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or not lo <= value <= hi:
            raise Invalid(allowed)
        return value

    return check


@dataclass(frozen=True)
class WorkerConfig:
    startup_mode: str = key(choice(*STARTUP_MODES))
    sip_ports: tuple[int, int] = key(port_pair)
    sip_dual_tls_ports: tuple[int, int] = key(port_pair)
    rtp_port_min: int = key(rtp_port)
    rtp_port_max: int = key(rtp_port)
    media_via_edge: bool = key(boolean)
    edge_mras: str = key(optional_host_port)
    edge_https: str = key(optional_host_port)
    greeting_dir: str = key(optional_path)
    prompt_dir: str = key(optional_path)
    max_message_seconds: float = key(bounded(5, 3600, "seconds"))
    min_message_seconds: float = key(bounded(0, 60, "seconds"))
    silence_timeout: float = key(bounded(0, 600, "seconds; 0 never ends a message on silence"))
    jitter_buffer_ms: int = key(bounded(0, 500, "milliseconds", integer=True))
    media_timeout: float = key(bounded(0, 3600, "seconds; 0 never"))
    pin_min_length: int = key(bounded(4, 24, "digits", integer=True))
    pin_max_failures: int = key(bounded(1, 100, "wrong PINs in a row before the mailbox locks", integer=True))
    outbound_gateway: str = key(optional_host_port)


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


@dataclass(frozen=True)
class AuthConfig:
    https_port: int = key(port)
    mras_tls_port: int = key(port)
    max_token_lifetime: int = key(token_lifetime)
    api_keys: tuple[str, ...] = key(api_key_list, secret=True)
    served_domains: tuple[str, ...] = key(hostname_list)


@dataclass(frozen=True)
class WebConfig:
    http_port: int = key(port)


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


def optional_domain(value: Any) -> str:
    return "" if value == "" else hostname(value)


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


def user_part(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9._~!$&'()*+,;=-]{0,64}$", value):
        raise Invalid("a SIP user part of up to 64 unreserved characters")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 256 or any(ord(c) < 0x20 for c in value):
        raise Invalid("text of up to 256 printable characters")
    return value


@dataclass(frozen=True)
class MediationConfig:
    servers: tuple[str, ...] = key(sip_uri_list)
    domain: str = key(optional_domain)
    mode: str = key(choice("register", "static"))
    aor_user: str = key(user_part)
    expires: int = key(lambda v: _integer(v, 60, 86400, "an integer 60-86400 (seconds)"))
    keepalive_interval: float = key(seconds)
    timeout: float = key(seconds)
    dns_servers: tuple[tuple[str, int], ...] = key(dns_server_list)
    username: str = key(user_part)
    password: str = key(text, secret=True)


def rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 1_000_000:
        raise Invalid("a number 1-1000000 (per second)")
    return float(value)


@dataclass(frozen=True)
class LimitsConfig:
    stun_requests_per_second: float = key(rate)
    stun_burst: int = key(count)
    sip_requests_per_second: float = key(rate)
    sip_burst: int = key(count)
    connections_per_source: int = key(count)
    max_connections: int = key(count)
    handshake_timeout: float = key(seconds)
    idle_timeout: float = key(seconds)
    max_pending_allocations: int = key(count)


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
    source: str = "<embedded default>"
