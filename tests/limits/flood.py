"""Send STUN Binding requests from one socket at a fixed rate for a fixed time (a flood, bounded).

Run: python -m tests.limits.flood PORT RATE SECONDS; prints how many it sent.
"""

from __future__ import annotations

import socket
import sys
import time

from edge import stun


def main() -> None:
    port, rate, seconds = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    request = stun.Message(stun.BINDING, stun.REQUEST, b"f" * 12).encode()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    start, sent, batch = time.monotonic(), 0, 100
    while (elapsed := time.monotonic() - start) < seconds:
        due = int(elapsed * rate)
        if sent >= due:
            time.sleep(batch / rate / 4)
            continue
        for _ in range(min(batch, due - sent)):
            try:
                sock.sendto(request, ("127.0.0.1", port))
            except BlockingIOError:
                pass
            sent += 1
        try:
            while sock.recv(2048):  # keep our own receive buffer from filling
                pass
        except BlockingIOError:
            pass
    print(sent, flush=True)


if __name__ == "__main__":
    main()
