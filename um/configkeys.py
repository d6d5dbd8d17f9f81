"""The config validator toolkit: one function per kind of value, shared by every layer's sections.

A validator returns the normalized value or raises `Invalid` carrying what is
allowed; the loader (edge.node.config) turns that into one problem line
naming the file, the [section].key and the allowed values.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import field
from typing import Any


class Invalid(ValueError):
    """A value is not allowed; carries the description of what is."""

    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


Validator = Callable[[Any], Any]


def integer(value: Any, lo: int, hi: int, allowed: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Invalid(allowed)
    return value


def port(value: Any) -> int:
    return integer(value, 1, 65535, "an integer port 1-65535")


def rtp_port(value: Any) -> int:
    return integer(value, 1024, 65535, "an integer port 1024-65535")


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


def address(value: Any, allowed: str, versions: tuple[int, ...] = (4, 6), empty: bool = False) -> str:
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
    return address(value, 'an IPv4 or IPv6 address ("0.0.0.0" or "::" for all)')


def optional_ip_address(value: Any) -> str:
    return address(value, 'an IPv4 or IPv6 address, or "" for none', empty=True)


def optional_ipv6_address(value: Any) -> str:
    return address(value, 'an IPv6 address, or "" for no IPv6 relays', versions=(6,), empty=True)


def count(value: Any) -> int:
    return integer(value, 1, 10_000_000, "an integer 1-10000000")


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


def _networks(value: Any, allowed: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid(allowed)
    try:
        return tuple(str(ipaddress.ip_network(item, strict=True)) for item in value)
    except (TypeError, ValueError):
        raise Invalid(allowed + " (host bits zero)") from None


def cidr_list(value: Any) -> tuple[str, ...]:
    return _networks(value, 'a list of CIDRs such as ["10.0.0.0/8", "fd00::/8"]')


def hostname_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise Invalid("a list of domain names")
    return tuple(hostname(item).lower() for item in value)


def key(check: Validator, *, secret: bool = False) -> Any:
    """Declare a config key: its validator, and whether its value must never be shown."""
    return field(metadata={"check": check, "secret": secret})


def seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 86400:
        raise Invalid("a number of seconds, more than 0 and at most 86400")
    return float(value)


def optional_path(value: Any) -> str:
    return "" if value == "" else path(value)


def network_list(value: Any) -> tuple[str, ...]:
    return _networks(value, 'a list of IP addresses or CIDRs such as ["127.0.0.1", "10.0.0.0/8"]')


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


def optional_domain(value: Any) -> str:
    return "" if value == "" else hostname(value)


def user_part(value: Any) -> str:
    if not isinstance(value, str) or not re.match(r"^[A-Za-z0-9._~!$&'()*+,;=-]{0,64}$", value):
        raise Invalid("a SIP user part of up to 64 unreserved characters")
    return value


def text(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 256 or any(ord(c) < 0x20 for c in value):
        raise Invalid("text of up to 256 printable characters")
    return value


def rate(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 1_000_000:
        raise Invalid("a number 1-1000000 (per second)")
    return float(value)


def daily_time(value: Any) -> str:
    if value == "" or (isinstance(value, str) and re.match(r"^([01]\d|2[0-3]):[0-5]\d$", value)):
        return value
    raise Invalid('"HH:MM" (local time, 24 hours), or "" for no daily recycle')
