"""Shared pieces of the delivery and MWI tests: a node config with [delivery], SIPp voicemail calls, WAV checks."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import NodeFiles, ServeProcess, umedge, write_config
from tests.delivery.mailstack import Dovecot, skip_reason
from tests.sip.sipp_tools import BUSY, run_command, sipp_command
from tests.support import free_port
from tests.worker.caller import free_udp_port, sine_payloads
from tests.worker.sipp_media import write_rtp_pcap, write_voicemail_scenario
from um.config import WorkerConfig
from um.worker import wav

RTP_RANGE = (42000, 42999)
ROLES = ("--roles", "callrouter,mailbox,worker,web")


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A Dovecot (LMTP + IMAP, master user) for the test; skipped, or failed under UMEDGE_REQUIRE_TOOLS, without it."""
    reason = skip_reason("dovecot")
    if reason:
        pytest.skip(reason)
    store = Dovecot().start()
    try:
        yield store
    finally:
        store.stop()


def imap_keys(dovecot: Dovecot, poll: float) -> dict[str, Any]:
    """[delivery] keys that follow read state in `dovecot` over plain IMAP as its master user every `poll` s."""
    return {"imap_host": "127.0.0.1", "imap_port": dovecot.imap_port, "imap_starttls": "off",
            "imap_master_user": "umedge", "imap_master_password_file": str(dovecot.master_password_file),
            "imap_poll_seconds": poll}


def lmtp_into(dovecot: Dovecot, poll: float, **keys: Any) -> dict[str, Any]:
    """[delivery] straight into `dovecot`'s LMTP (no TLS), read state over IMAP (`imap_keys`), plus `keys`."""
    return {"mode": "lmtp", "host": "127.0.0.1", "port": dovecot.lmtp_port, "starttls": "off", **keys,
            **imap_keys(dovecot, poll)}


def started(files: NodeFiles) -> ServeProcess:
    """A node with the delivery roles, ready; the caller kills it (kill -9 is what these tests want)."""
    process = ServeProcess(files.path, *ROLES)
    process.wait_ready()
    return process


def node_config(tmp_path: Path, delivery: dict[str, Any], mwi: dict[str, Any] | None = None,
                mailboxes: list[dict[str, Any]] | None = None) -> NodeFiles:
    worker: dict[str, object] = {"rtp_port_min": RTP_RANGE[0], "rtp_port_max": RTP_RANGE[1], "silence_timeout": 0,
                                 "min_message_seconds": 0}
    if "prompts" in {f.name for f in dataclasses.fields(WorkerConfig)}:
        worker["prompts"] = "tones"  # the short tone greeting: the pcap's audio all lands in the message
    overrides: dict[str, dict[str, object]] = {
        "node": {"domain": "umedge.test"},
        "worker": worker,
        "callrouter": {"mailboxes": mailboxes or [
            {"extension": "1000-1009", "server": "local", "dial_plan": "default",
             "email": "{extension}@example.test"}]},
        "delivery": delivery,
    }
    if mwi is not None:
        overrides["mwi"] = mwi
    return write_config(tmp_path, overrides)


class Calls:
    """SIPp as the UM IP gateway: voicemail calls with a known G.711 payload."""

    def __init__(self, tmp_path: Path, files: NodeFiles, seconds: float = 1.5, called: str = "1001",
                 wait_ms: int = 2500) -> None:
        """`wait_ms` 2500: all the audio comes after the greeting and beep (1.65 s); shorter only where the
        recorded samples do not matter."""
        self.payloads = sine_payloads(seconds)
        pcap = write_rtp_pcap(tmp_path / f"gateway-{called}.pcap", self.payloads)
        self.scenario = write_voicemail_scenario(tmp_path / f"voicemail-{called}.xml", pcap, called=called,
                                                 wait_ms=wait_ms, talk_ms=int(seconds * 1000) + 600)
        self.files = files

    @property
    def audio(self) -> bytes:
        return b"".join(self.payloads)

    def run(self, calls: int = 1, rate: int = 1, limit: int | None = None) -> None:
        media = free_udp_port()
        while RTP_RANGE[0] <= media <= RTP_RANGE[1] or media >= 50000:
            media = free_udp_port()
        result = self._sipp(media, calls, rate, limit)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]

    def _sipp(self, media: int, calls: int, rate: int, limit: int | None) -> subprocess.CompletedProcess[str]:
        """tests/worker's SIPp run with its own free signalling port (-p): batches side by side, and other
        tests' SIPp, would otherwise all try SIPp's default 5060."""
        command = sipp_command(self.scenario, f"127.0.0.1:{self.files.port('callrouter', 'sip_tcp_port')}",
                               calls=calls, rate=rate, timeout=60, recv_timeout_ms=20000, limit=limit,
                               options=["-p", str(free_port()), "-mi", "127.0.0.1", "-mp", str(media),
                                        "-max_socket", "1000", *BUSY])
        return run_command(command, self.scenario.parent, 60)


def together(*runs: Callable[[], None]) -> None:
    """Run SIPp batches at the same time (each in a thread); re-raise the first failure."""
    with ThreadPoolExecutor(len(runs)) as pool:
        for future in [pool.submit(run) for run in runs]:
            future.result()


def voicemails(files: NodeFiles) -> list[dict[str, Any]]:
    out = umedge("voicemail", "list", "--json", "--config", str(files.path))
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout))


def outbox(files: NodeFiles) -> dict[str, Any]:
    out = umedge("voicemail", "outbox", "--json", "--config", str(files.path))
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def wav_of(mail: Message) -> wav.Wav:
    parts = [p for p in mail.walk() if p.get_content_type() == "audio/wav"]
    assert len(parts) == 1, [p.get_content_type() for p in mail.walk()]
    payload = parts[0].get_payload(decode=True)
    assert isinstance(payload, bytes)
    return wav.read(io.BytesIO(payload))


def attachment(mail: Message, content_type: str) -> bytes | None:
    for part in mail.walk():
        if part.get_content_type() == content_type:
            payload = part.get_payload(decode=True)
            return payload if isinstance(payload, bytes) else None
    return None
