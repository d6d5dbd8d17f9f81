"""CANCEL while the worker still sets up media (here: a token service that never answers) gets 200,
the INVITE 487, and the slot lets go of the call; without any token the INVITE gets 503."""

from __future__ import annotations

import asyncio
import secrets
import socket
import threading
from pathlib import Path

from tests.conftest import ServeProcess, write_config
from tests.worker.caller import Caller, sdp_offer
from tests.worker.webauth import worker_status


def black_hole() -> tuple[socket.socket, int]:
    """A TCP port that accepts connections and never says a word (an unresponsive token service)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


def test_cancel_during_media_setup_and_503_without_a_token(tmp_path: Path) -> None:
    hole, port = black_hole()
    files = write_config(tmp_path, {"worker": {"media_via_edge": True, "edge_mras": f"127.0.0.1:{port}",
                                               "edge_https": f"127.0.0.1:{port}",
                                               "rtp_port_min": 46000, "rtp_port_max": 46999}})
    process = ServeProcess(files.path, "--roles", "callrouter,mailbox,worker,web")
    worker = int(files.values["worker"]["sip_ports"][0])  # type: ignore[index]

    async def scenario() -> tuple[int, list[int], int]:
        caller = Caller()
        await caller._connect(worker)
        assert caller.sip is not None
        call_id, tag, branch = secrets.token_hex(6), secrets.token_hex(4), "z9hG4bK" + secrets.token_hex(6)
        host, local = caller.local
        invite = caller._invite(f"sip:5000@127.0.0.1:{worker};transport=tcp", "1009",
                                sdp_offer("127.0.0.1", 9000), call_id, tag).decode()
        invite = invite.replace(invite.split("branch=")[1].split(";")[0], branch, 1)
        caller.sip.transport.write(invite.encode())
        trying = await asyncio.wait_for(caller.sip.responses.get(), 5)
        await asyncio.sleep(0.3)
        caller.sip.transport.write((
            f"CANCEL sip:5000@127.0.0.1:{worker};transport=tcp SIP/2.0\r\nVia: SIP/2.0/TCP {host}:{local};"
            f"branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: \"Test Caller\" <sip:4711@{host}>;tag={tag}\r\n"
            f"To: <sip:1009@127.0.0.1>\r\nCall-ID: {call_id}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").encode())
        finals = sorted([(await asyncio.wait_for(caller.sip.responses.get(), 5)).status for _ in range(2)])
        await caller.close()
        late = Caller()  # the same black hole, nobody cancels: the token fetch times out -> 503
        rtp = await late.open_direct()
        answer = await late.call(worker, "5000", "1009", sdp_offer("127.0.0.1", rtp), timeout=30)
        await late.close()
        return trying.status, finals, answer.status

    try:
        process.wait_ready()
        trying, finals, unavailable = asyncio.run(scenario())
        assert trying == 100 and finals == [200, 487] and unavailable == 503
        status = worker_status(files)  # the live calls: admin over HTTPS
        assert status["active_calls"] == 0 and status["tokens"]["mras_failed"] >= 1
        assert "media setup failed" in process.stderr()
    finally:
        process.kill()
        hole.close()


def test_media_token_falls_back_to_https_when_mras_is_down(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port with nobody listening: MRAS refused
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    files = write_config(tmp_path, {"worker": {"media_via_edge": True, "edge_mras": f"127.0.0.1:{closed}",
                                               "rtp_port_min": 46000, "rtp_port_max": 46999},
                                    "edge": {"allowed_peer_networks": ["127.0.0.0/8"]}})
    process = ServeProcess(files.path, "--roles", "callrouter,mailbox,worker,edge,web")
    worker = int(files.values["worker"]["sip_ports"][0])  # type: ignore[index]

    async def scenario() -> str:
        caller = Caller()
        rtp = await caller.open_direct()
        answer = await caller.call(worker, "5000", "1009", sdp_offer("127.0.0.1", rtp))
        assert answer.status == 200, answer.reason
        assert (await caller.bye()).status == 200
        await caller.close()
        return answer.body.decode()

    try:
        process.wait_ready()
        answer = asyncio.run(scenario())
        port = int(answer.split("m=audio ")[1].split()[0])
        assert 50000 <= port <= 59999  # the relay on the edge
        tokens = worker_status(files)["tokens"]
        assert tokens["mras_failed"] == 1 and tokens["https"] == 1 and tokens["mras"] == 0
        assert "path=https" in process.stderr()  # the edge's audit line: issued over HTTPS to the node certificate
    finally:
        process.kill()
