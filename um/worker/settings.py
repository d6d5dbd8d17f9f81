"""The worker's settings: plain values the composition root (edge.node) derives from the config.

The worker never reads the node config itself: where its media tokens come
from, which gateway it calls out through and where it keeps its state are
decided once, at build time, and handed in here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.logger import Logger

from um.worker.g711 import PCMA, PCMU
from um.worker.pins import PinPolicy

log = Logger(namespace="umedge.worker")


@dataclass
class WorkerSettings:
    host: str                          # the address the worker's SIP and direct RTP use
    advertise: str                     # what SDP and Contact name
    state_dir: str
    certs_dir: str
    node_name: str
    domain: str
    rtp_port_min: int = 1024
    rtp_port_max: int = 65535
    media_via_edge: bool = False
    edge_mras: tuple[str, int] | None = None
    edge_https: tuple[str, int] | None = None
    edge_server_name: str | None = None
    greeting_dir: str = ""
    prompt_dir: str = ""
    spoken_prompts: bool = True        # [worker] prompts = "spoken" (else tones)
    languages: tuple[str, ...] = ("en",)  # the dial plans' languages: rendered at start
    max_message_seconds: float = 300.0
    min_message_seconds: float = 1.0
    silence_timeout: float = 5.0
    jitter_buffer_ms: int = 60
    media_timeout: float = 30.0
    pin_policy: PinPolicy = field(default_factory=PinPolicy)
    outbound_gateway: tuple[str, int] | None = None
    codecs: tuple[str, ...] = (PCMU, PCMA)
    ack_timeout: float = 8.0           # seconds an answered call waits for its ACK
    max_calls_per_source: int = 40     # calls at once from one source address
    slot: int | None = None            # the worker slot this process serves (None: the node's main process)

    @property
    def media_identity(self) -> str:
        return f"sip:umworker-{self.node_name}@{self.domain}"


def host_port(text: str) -> tuple[str, int]:
    """"HOST:PORT" or "[v6]:PORT" (validated by the config) as a tuple."""
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


__all__ = ["WorkerSettings"]
