"""The UM layer's config sections ([node], [callrouter], [mailbox], [worker], [limits], [delivery], [mwi]), typed.

um code takes `UmSections` (or one section), never the whole node config, so
it cannot reach the A/V Edge's sections. The dataclasses are the schema; the
embedded config.toml holds the defaults and the comments.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from um.attendants import AutoAttendant, parse_auto_attendants
from um.configkeys import (
    Invalid,
    Validator,
    boolean,
    bounded,
    choice,
    count,
    daily_time,
    hostname,
    ip_address,
    key,
    network_list,
    optional_host_port,
    optional_path,
    path,
    port,
    port_pair,
    rate,
    rtp_port,
    seconds,
    text,
)
from um.directory import (
    DialPlan,
    DirectoryError,
    Gateway,
    HuntGroup,
    Mailbox,
    MailboxServer,
    parse_dial_plans,
    parse_gateways,
    parse_hunt_groups,
    parse_mailboxes,
    parse_servers,
)

ROLES = ("callrouter", "mailbox", "worker", "edge", "web")
STARTUP_MODES = ("tcp", "tls", "dual")


def server_header(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 64 or not all(32 < ord(c) < 127 for c in value):
        raise Invalid('"" or a product token of up to 64 visible ASCII characters, such as "umedge"')
    return value


def role_list(value: Any) -> tuple[str, ...]:
    allowed = '["all"] or a list of ' + ", ".join(f'"{r}"' for r in ROLES)
    if not isinstance(value, list) or not value or not all(isinstance(r, str) for r in value):
        raise Invalid(allowed)
    if value == ["all"]:
        return ROLES
    if any(r not in ROLES for r in value) or len(set(value)) != len(value):
        raise Invalid(allowed)
    return tuple(r for r in ROLES if r in value)


@dataclass(frozen=True)
class NodeConfig:
    name: str = key(hostname)
    domain: str = key(hostname)
    roles: tuple[str, ...] = key(role_list)
    listen_address: str = key(ip_address)
    state_dir: str = key(path)
    certs_dir: str = key(path)
    drain_seconds: float = key(lambda v: 0.0 if v == 0 and not isinstance(v, bool) else seconds(v))
    server_header: str = key(server_header)

    @property
    def fqdn(self) -> str:
        return f"{self.name}.{self.domain}"


def _directory(parse: Callable[[Any], Any]) -> Validator:
    """Wrap a um.directory parser (tables/arrays of tables) as a config validator."""

    def check(value: Any) -> Any:
        try:
            return parse(value)
        except DirectoryError as error:
            raise Invalid(str(error)) from None

    return check


@dataclass(frozen=True)
class CallRouterConfig:
    sip_tcp_port: int = key(port)
    sip_tls_port: int = key(port)
    startup_mode: str = key(choice(*STARTUP_MODES))
    gateways: tuple[Gateway, ...] = key(_directory(parse_gateways))
    hunt_groups: tuple[HuntGroup, ...] = key(_directory(parse_hunt_groups))
    dial_plans: tuple[DialPlan, ...] = key(_directory(parse_dial_plans))
    mailboxes: tuple[Mailbox, ...] = key(_directory(parse_mailboxes))
    mailbox_servers: tuple[MailboxServer, ...] = key(_directory(parse_servers))
    auto_attendants: tuple[AutoAttendant, ...] = key(_directory(parse_auto_attendants))
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
    prompts: str = key(choice("spoken", "tones"))
    max_message_seconds: float = key(bounded(5, 3600, "seconds"))
    min_message_seconds: float = key(bounded(0, 60, "seconds"))
    silence_timeout: float = key(bounded(0, 600, "seconds; 0 never ends a message on silence"))
    jitter_buffer_ms: int = key(bounded(0, 500, "milliseconds", integer=True))
    media_timeout: float = key(bounded(0, 3600, "seconds; 0 never"))
    pin_min_length: int = key(bounded(4, 24, "digits", integer=True))
    pin_max_failures: int = key(bounded(1, 100, "wrong PINs in a row before the mailbox locks", integer=True))
    outbound_gateway: str = key(optional_host_port)
    play_on_phone_per_hour: int = key(bounded(1, 10000, "play-on-phone calls per mailbox per hour", integer=True))
    ack_timeout: float = key(bounded(1, 32, "seconds"))
    max_calls_per_source: int = key(bounded(1, 10000, "calls", integer=True))
    recycle_after_calls: int = key(bounded(0, 100_000_000, "calls; 0 never", integer=True))
    recycle_after_hours: float = key(bounded(0, 8760, "hours; 0 never"))
    recycle_memory_mb: int = key(bounded(0, 1_000_000, "MB of resident memory; 0 never", integer=True))


def email_address(value: Any) -> str:
    """An addr-spec the MTA will take: local@domain, no spaces or angle brackets."""
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9.-]{1,253}$",
                                                  value):
        raise Invalid('an email address such as "voicemail@example.com"')
    return value


def optional_host(value: Any) -> str:
    if value == "":
        return ""
    try:
        return ip_address(value)
    except Invalid:
        pass
    try:
        return hostname(value)
    except Invalid:
        raise Invalid('"" or an IP address or host name') from None


def notify_targets(value: Any) -> tuple[tuple[str, str, int, str], ...]:
    """[mwi] notify_targets: (dial plan, host, port, transport) of gateways/IP-PBXs told without a SUBSCRIBE."""
    allowed = ('a list of tables such as [{ dial_plan = "default", address = "192.0.2.7:5060", '
               'transport = "tcp" }] (transport "tcp" or "tls")')
    if not isinstance(value, list):
        raise Invalid(allowed)
    targets = []
    for item in value:
        if not isinstance(item, dict) or set(item) - {"dial_plan", "address", "transport"} or "address" not in item:
            raise Invalid(allowed)
        plan, address, transport = item.get("dial_plan", ""), item["address"], item.get("transport", "tcp")
        if not isinstance(plan, str) or transport not in ("tcp", "tls") or not address:
            raise Invalid(allowed)
        optional_host_port(address)
        host, _, port_text = str(address).rpartition(":")
        targets.append((plan, host.strip("[]"), int(port_text), transport))
    return tuple(targets)


def _port_or_default(value: Any) -> int:
    return 0 if value == 0 and not isinstance(value, bool) else port(value)


_PORT = port  # the class below has a key named port


@dataclass(frozen=True)
class DeliveryConfig:
    mode: str = key(choice("off", "smtp", "lmtp"))
    host: str = key(optional_host)
    port: int = key(_port_or_default)
    starttls: str = key(choice("required", "opportunistic", "off"))
    username: str = key(text)
    password_file: str = key(optional_path)
    from_address: str = key(email_address)
    from_name: str = key(text)
    ca_file: str = key(optional_path)
    retry_for_hours: float = key(bounded(0.01, 720, "hours"))
    retry_initial_seconds: float = key(bounded(0.1, 3600, "seconds"))
    retry_max_seconds: float = key(bounded(0.1, 86400, "seconds"))
    max_message_mb: float = key(bounded(0.1, 100, "MB"))
    audio_format: str = key(choice("wav", "mp3", "opus"))
    timeout: float = key(bounded(1, 600, "seconds"))
    imap_host: str = key(optional_host)
    imap_port: int = key(_PORT)
    imap_starttls: str = key(choice("required", "off"))
    imap_master_user: str = key(text)
    imap_master_password_file: str = key(optional_path)
    imap_poll_seconds: float = key(bounded(0.5, 3600, "seconds"))


@dataclass(frozen=True)
class MwiConfig:
    enabled: bool = key(boolean)
    digest_realm: str = key(text)
    passwords_file: str = key(optional_path)
    min_expires: int = key(bounded(1, 86400, "seconds", integer=True))
    max_expires: int = key(bounded(1, 86400, "seconds", integer=True))
    max_subscriptions: int = key(bounded(1, 1_000_000, "subscriptions", integer=True))
    notify_targets: tuple[tuple[str, str, int, str], ...] = key(notify_targets)


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


class UmSections(Protocol):
    """What the UM roles may read of a node's config: their own sections, [node] and [limits]."""

    @property
    def node(self) -> NodeConfig: ...

    @property
    def callrouter(self) -> CallRouterConfig: ...

    @property
    def mailbox(self) -> MailboxConfig: ...

    @property
    def worker(self) -> WorkerConfig: ...

    @property
    def limits(self) -> LimitsConfig: ...

    @property
    def delivery(self) -> DeliveryConfig: ...

    @property
    def mwi(self) -> MwiConfig: ...
