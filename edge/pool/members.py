"""A pool member as the pool sees it: its relays and its load, with JSON for the store."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Member:
    name: str
    relay_host: str  # the address clients reach this node's TURN listeners on (ALTERNATE-SERVER)
    intranet_host: str  # MRAS "intranet" relay: the listen address, or the FQDN on a wildcard
    internet_host: str  # MRAS "internet" relay: the external address, or "" for none
    udp_port: int
    tcp_port: int
    tls_port: int
    allocations: int
    capacity: int
    updated: float

    @property
    def load(self) -> float:
        return self.allocations / self.capacity if self.capacity else 1.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Member | None:
        try:
            data = json.loads(text)
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (ValueError, TypeError, KeyError):
            return None  # a member written by another version: ignore rather than crash


def least_loaded_first(members: list[Member]) -> list[Member]:
    return sorted(members, key=lambda m: (m.load, m.name))
