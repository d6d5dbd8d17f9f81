"""A caller made of aioice and aiortc's RTP, behind its own TURN relay (a second edge), calls a mailbox
through the call router. The worker answers with ICE and a relay candidate on its edge (token over
MRAS), so the media path is caller -> caller's relay -> worker's relay -> worker; the edge's counters
show the relayed packets and the stored WAV holds exactly the G.711 the caller sent."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.tokens import mint
from tests.conftest import NodeFiles, ServeProcess, write_config
from tests.worker.caller import Caller, sdp_offer, sine_payloads, stored_message
from tests.worker.webauth import worker_status
from um.worker.store import VoicemailStore

CALLER_EDGE_SECRET = "caller-side-edge-secret-0123456789"


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[NodeFiles, NodeFiles, ServeProcess]]:
    (tmp_path / "main").mkdir()
    main = write_config(tmp_path / "main", {
        "worker": {"media_via_edge": True, "rtp_port_min": 42000, "rtp_port_max": 42999, "silence_timeout": 0},
        "edge": {"allowed_peer_networks": ["127.0.0.0/8"]}})
    (tmp_path / "caller-edge").mkdir()
    other = write_config(tmp_path / "caller-edge", {
        "node": {"name": "edge2", "state_dir": "state", "certs_dir": "certs"},
        "edge": {"auth_secrets": [CALLER_EDGE_SECRET], "allowed_peer_networks": ["127.0.0.0/8"],
                 "relay_port_min": 60000, "relay_port_max": 60999}})
    node = ServeProcess(main.path, "--roles", "callrouter,mailbox,worker,edge,web")
    caller_edge = ServeProcess(other.path, "--roles", "edge")
    try:
        node.wait_ready()
        caller_edge.wait_ready()
        yield main, other, node
    finally:
        node.kill()
        caller_edge.kill()


def status(files: NodeFiles) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{files.port('web', 'http_port')}/v1/status", timeout=5) as r:
        return json.loads(r.read())


def test_ice_caller_behind_its_own_relay_leaves_a_bit_exact_message(
        nodes: tuple[NodeFiles, NodeFiles, ServeProcess]) -> None:
    main, other, node = nodes
    audio = sine_payloads(6.0, seed=7)
    before = status(main)

    async def call() -> tuple[Caller, str]:
        caller = Caller()
        token = mint(CALLER_EDGE_SECRET, "sip:caller@example.test", 600, time.time())
        ice = await caller.open_ice(("127.0.0.1", other.port("edge", "turn_udp_port")), token.username,
                                    token.password)
        default = ice.get_default_candidate(1)
        assert default.type == "relay" and 60000 <= default.port <= 60999  # the caller sits behind its relay
        host, port = await caller.redirect(main.port("callrouter", "sip_tcp_port"), "5000", "1004")
        answer = await caller.call(port, "5000", "1004", sdp_offer(default.host, default.port, ice=ice))
        assert answer.status == 200, answer.reason
        text = answer.body.decode()
        await caller.connect_ice(text)
        await caller.send_audio(audio)
        await asyncio.sleep(0.3)
        assert (await caller.bye()).status == 200
        await asyncio.sleep(0.2)
        await caller.close()
        return caller, text

    caller, answer_sdp = asyncio.run(call())
    assert "a=ice-ufrag:" in answer_sdp and "typ relay" in answer_sdp and "typ host" not in answer_sdp
    store = VoicemailStore(Path(main.path.parent / "state"))
    message = stored_message(store, "1004")
    stored = store.audio(message).data
    sent = b"".join(caller.sent_payloads)
    assert message.duration >= 3.0
    # Recording starts after the greeting and the tone: the message is the sent audio from then on, bit for bit.
    offset = sent.find(stored[:1600])
    assert offset >= 0 and offset % 160 == 0 and stored == sent[offset:offset + len(stored)]
    assert len(stored) >= len(sent) - offset - 160 * 3  # at most the jitter buffer's tail cut by the BYE
    assert len(caller.received) >= 50  # greeting and tone came back over the relays
    after = status(main)
    relayed_to_worker = after["relayed"]["packets_to_client"] - before["relayed"].get("packets_to_client", 0)
    relayed_to_caller = after["relayed"]["packets_to_peer"] - before["relayed"].get("packets_to_peer", 0)
    assert relayed_to_worker >= len(stored) // 160 and relayed_to_caller >= 50
    [finished] = worker_status(main)["recent"]  # the live calls: admin over HTTPS
    assert finished["transport"]["kind"] == "ice" and 42000 <= finished["transport"]["host_port"] <= 42999
    assert 50000 <= finished["transport"]["local"][1] <= 59999  # the worker's relay candidate on its edge
    log = node.stderr()
    assert "media ice" in log and "allocated 127.0.0.1:" in log and "sip:umworker-node1@example.test" in log
