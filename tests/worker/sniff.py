"""Watch UDP on the loopback interface (AF_PACKET, root only): which ports talk to which."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any

ETH_P_ALL = 0x0003


class LoopbackUdp:
    """Records (src_port, dst_port, payload length) of every IPv4 UDP packet on lo while running."""

    def __init__(self) -> None:
        self.flows: list[tuple[int, int, int]] = []
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @staticmethod
    def available() -> bool:
        try:
            socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)).close()
            return True
        except (OSError, AttributeError):
            return False

    def __enter__(self) -> LoopbackUdp:
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self._sock.bind(("lo", 0))
        self._sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                frame, info = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            if info[2] == socket.PACKET_OUTGOING:
                continue  # on lo every packet shows twice: keep the incoming copy
            if len(frame) < 42 or frame[12:14] != b"\x08\x00" or frame[23] != 17:
                continue
            header = (frame[14] & 0x0F) * 4
            sport, dport, length = struct.unpack_from("!HHH", frame, 14 + header)
            self.flows.append((sport, dport, length - 8))

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()
