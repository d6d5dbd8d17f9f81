"""Which fast path the engine gets: the kernel's when it attaches, else the native forwarder, else none.

One RelayOffload for the engine and one start/stop for the TURN service, so neither needs to
know which path runs; the UDP sockets read through `native` (edge.turn.offload.DatagramBatches),
which is active only when the kernel path is not.
"""

from __future__ import annotations

from typing import Any

from edge.offload.fastpath import KernelOffload
from edge.offload.mirror import ChannelMirror
from edge.offload.native import NativeForwarder
from edge.turn.allocation import Allocation


class FastPaths:
    def __init__(self, kernel: KernelOffload, native: NativeForwarder) -> None:
        self.kernel, self.native = kernel, native
        self.current: ChannelMirror | None = None

    def start(self) -> None:
        """Kernel first (its "on" may refuse start-up), then the native forwarder (likewise)."""
        self.kernel.start()
        if self.kernel.active:
            self.current = self.kernel
            return
        self.native.start()
        self.current = self.native if self.native.active else None

    def stop(self) -> None:
        self.kernel.stop()
        self.native.stop()
        self.current = None

    # --- RelayOffload ------------------------------------------------------------------

    def update(self, allocation: Allocation, now: float) -> None:
        if self.current is not None:
            self.current.update(allocation, now)

    def remove(self, allocation: Allocation) -> None:
        if self.current is not None:
            self.current.remove(allocation)

    def collect(self, allocation: Allocation) -> int:
        return self.current.collect(allocation) if self.current is not None else 0

    def counters(self) -> dict[str, int]:
        return self.current.counters() if self.current is not None else {}

    def status(self) -> dict[str, Any]:
        """The kernel path's status (what `umedge status` and the console read) with the forwarder's inside."""
        return {**self.kernel.status(), "native": self.native.status()}
