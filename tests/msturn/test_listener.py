"""MS-TURN on the real UDP listener of `umedge serve --roles edge`, beside RFC TURN, and switched off."""

from __future__ import annotations

import socket
from pathlib import Path

from edge import stun
from edge.msturn import MsAttr, MsMessage, MsType, decode, decode_error_code, encode_u32
from tests.conftest import ServeProcess, write_config


def ask(port: int, data: bytes) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(1.5)
        sock.sendto(data, ("127.0.0.1", port))
        try:
            return sock.recv(2048)
        except TimeoutError:
            return None


def test_both_dialects_on_one_port_and_the_switch(tmp_path: Path) -> None:
    ms_allocate = MsMessage(MsType.ALLOCATE_REQUEST, None, [(MsAttr.MS_VERSION, encode_u32(1))]).encode()
    rfc_allocate = stun.Message(stun.ALLOCATE, stun.REQUEST, None, [
        (stun.Attr.REQUESTED_TRANSPORT, stun.encode_requested_transport(17))]).encode()
    for enabled in (True, False):
        directory = tmp_path / str(enabled)
        directory.mkdir()
        files = write_config(directory, {"edge": {"ms_turn": enabled}})
        process = ServeProcess(files.path, "--roles", "edge")
        try:
            process.wait_ready()
            port = files.port("edge", "turn_udp_port")
            answer = ask(port, ms_allocate)
            if enabled:
                reply = decode(answer)  # type: ignore[arg-type]
                assert reply.msg_type == MsType.ALLOCATE_ERROR
                assert decode_error_code(reply.get(MsAttr.ERROR_CODE))[0] == 401
            else:
                assert answer is None  # not RFC STUN: discarded
            rfc = stun.decode(ask(port, rfc_allocate))  # type: ignore[arg-type]
            assert rfc.error_code()[0] == 401 and rfc.get(stun.Attr.NONCE)
        finally:
            process.kill()
