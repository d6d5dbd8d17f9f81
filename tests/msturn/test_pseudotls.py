"""The TURN TLS port of `umedge serve --roles edge`: [MS-TURN] pseudo-TLS beside real TLS.

The blobs and the framing are libnice's (socket/pseudossl.c, socket/udp-turn-over-tcp.c);
see edge/msturn/pseudotls.py.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Iterator

import pytest

from edge import stun
from edge.msturn import MsAttr, MsMessage, MsType, decode, decode_error_code, encode_u32
from edge.msturn.pseudotls import (
    CLIENT_GOOGLE_HANDSHAKE,
    CLIENT_MSOC_HANDSHAKE,
    SERVER_GOOGLE_HANDSHAKE,
    SERVER_MSOC_HANDSHAKE,
    frame,
)
from tests.conftest import NodeFiles, ServeProcess, write_config


@pytest.fixture(scope="module")
def edge_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeFiles]:
    files = write_config(tmp_path_factory.mktemp("pseudotls"))
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        yield files
    finally:
        process.kill()


def connect(files: NodeFiles) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", files.port("edge", "turn_tls_port")), timeout=3)
    return sock


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    kind, reserved, size = struct.unpack("!BBH", read_exactly(sock, 4))
    assert reserved == 0
    return kind, read_exactly(sock, size)


@pytest.mark.parametrize("hello,answer", [(CLIENT_MSOC_HANDSHAKE, SERVER_MSOC_HANDSHAKE),
                                          (CLIENT_GOOGLE_HANDSHAKE, SERVER_GOOGLE_HANDSHAKE)],
                         ids=["msoc", "google"])
def test_pseudo_tls_handshake_then_framed_ms_turn(edge_node: NodeFiles, hello: bytes, answer: bytes) -> None:
    allocate = MsMessage(MsType.ALLOCATE_REQUEST, None, [(MsAttr.MS_VERSION, encode_u32(1))])
    with connect(edge_node) as sock:
        sock.sendall(hello[:7])  # split: the server must wait for the whole blob
        sock.sendall(hello[7:])
        assert read_exactly(sock, len(answer)) == answer
        sock.sendall(frame(allocate.encode()))
        kind, payload = read_frame(sock)
        assert kind == 2
        reply = decode(payload)
        assert reply.msg_type == MsType.ALLOCATE_ERROR
        assert reply.transaction_id == allocate.transaction_id
        assert decode_error_code(reply.get(MsAttr.ERROR_CODE))[0] == 401
        assert reply.get(MsAttr.REALM) and reply.get(MsAttr.NONCE)


def test_handshake_answer_is_one_write(edge_node: NodeFiles) -> None:
    """libnice reads the ServerHello with one recv and needs exactly its length."""
    with connect(edge_node) as sock:
        sock.sendall(CLIENT_MSOC_HANDSHAKE)
        sock.settimeout(3)
        first = sock.recv(4096)
        assert first == SERVER_MSOC_HANDSHAKE


def test_bad_frame_type_closes(edge_node: NodeFiles) -> None:
    with connect(edge_node) as sock:
        sock.sendall(CLIENT_MSOC_HANDSHAKE)
        read_exactly(sock, len(SERVER_MSOC_HANDSHAKE))
        sock.sendall(b"\x07\x00\x00\x04abcd")
        assert sock.recv(100) == b""


def test_real_tls_on_the_same_port(edge_node: NodeFiles) -> None:
    context = ssl.create_default_context(cafile=str(edge_node.certs_dir / "ca.crt"))
    context.check_hostname = False
    binding = stun.Message(stun.BINDING, stun.REQUEST, None, [])
    with connect(edge_node) as raw, context.wrap_socket(raw) as sock:
        sock.sendall(binding.encode())
        header = read_exactly(sock, 20)
        size = struct.unpack("!H", header[2:4])[0]
        reply = stun.decode(header + read_exactly(sock, size))
        assert reply.msg_class == stun.SUCCESS and reply.method == stun.BINDING
        assert reply.transaction_id == binding.transaction_id


@pytest.mark.parametrize("garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                                     CLIENT_MSOC_HANDSHAKE[:20] + b"\xff" * 40],
                         ids=["http", "near-miss"])
def test_garbage_is_closed(edge_node: NodeFiles, garbage: bytes) -> None:
    with connect(edge_node) as sock:
        sock.sendall(garbage)
        try:
            data = sock.recv(4096)
            while data and not data.startswith(SERVER_MSOC_HANDSHAKE):
                data = sock.recv(4096)  # a TLS alert may come before the close
        except ConnectionResetError:
            data = b""
        assert data == b""



def test_handshake_timeout_ends_at_the_pseudo_tls_handshake(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """After the pseudo-TLS handshake only the idle timeout applies; a client stuck half-way is cut."""
    import time

    files = write_config(tmp_path, {"limits": {"handshake_timeout": 1, "idle_timeout": 30}})
    process = ServeProcess(files.path, "--roles", "edge")
    try:
        process.wait_ready()
        with connect(files) as sock:
            sock.sendall(CLIENT_MSOC_HANDSHAKE)
            assert read_exactly(sock, len(SERVER_MSOC_HANDSHAKE)) == SERVER_MSOC_HANDSHAKE
            time.sleep(1.5)  # longer than the handshake timeout, well inside the idle timeout
            allocate = MsMessage(MsType.ALLOCATE_REQUEST, None, [(MsAttr.MS_VERSION, encode_u32(1))])
            sock.sendall(frame(allocate.encode()))
            assert read_frame(sock)[0] == 2
        with connect(files) as stuck:
            stuck.sendall(CLIENT_MSOC_HANDSHAKE[:10])  # half a handshake, then nothing
            stuck.settimeout(5)
            started = time.monotonic()
            try:
                assert stuck.recv(10) == b""
            except ConnectionResetError:
                pass
            assert time.monotonic() - started < 3
    finally:
        process.kill()
