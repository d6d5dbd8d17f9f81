"""Extra TURN relay processes for `[edge] workers = N`: spawned, awaited, stopped with the node.

Each worker runs `umedge serve --turn-worker I` with the same config: only the
TURN listeners, bound with SO_REUSEPORT beside the main process's. Workers
die with their parent (PR_SET_PDEATHSIG), so a killed node leaves no orphan
relays.

Without a Redis pool the console reaches them through their pipes: the main
process writes a question as one JSON line ({"id", "op", "args"}) to each
worker's stdin and reads the answers ({"id", "answer"}) from their stdout
(`ask`); a worker answers with its own console (`answer_on_stdin`). On a Redis
pool they answer over the pool's channel instead, like any node.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from twisted.logger import Logger

log = Logger(namespace="umedge.edge")

READY_LINE = "turn-worker ready"
ANSWER_WAIT = 1.5  # seconds the console waits for the workers' answers (as for a pool's nodes)
MAX_LINE = 4 * 1024 * 1024
_PR_SET_PDEATHSIG = 1
Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


def die_with_parent() -> None:
    """Ask Linux to send this process SIGTERM when its parent exits."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: the parent's stop() still ends the workers


class _Lines:
    """Whole lines from a non-blocking fd, bounded: a line longer than MAX_LINE is dropped."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        self.buffer += chunk
        lines = []
        while (end := self.buffer.find(b"\n")) >= 0:
            lines.append(bytes(self.buffer[:end]))
            del self.buffer[:end + 1]
        if len(self.buffer) > MAX_LINE:
            self.buffer.clear()
        return lines


class RelayWorkers:
    def __init__(self, config_path: str | None, count: int, log_format: str, node: str = "") -> None:
        base = [sys.executable, "-m", "edge.node.cli", "serve", "--log-format", log_format]
        if config_path:
            base += ["--config", config_path]
        self.node = node
        self.processes = [subprocess.Popen([*base, "--turn-worker", str(index)], stdin=subprocess.PIPE,
                                           stdout=subprocess.PIPE, text=True) for index in range(1, count)]
        # question id -> (done when every asked worker answered, the answers, how many were asked)
        self._waiting: dict[str, tuple[asyncio.Future[None], list[dict[str, Any]], int]] = {}
        self._lines = [_Lines() for _ in self.processes]

    # --- the console's questions (without a Redis pool) -----------------------------

    def listen(self) -> None:
        """Read the workers' answers from now on (after wait_ready consumed their ready lines)."""
        loop = asyncio.get_event_loop()
        for index, process in enumerate(self.processes):
            if process.stdout is not None and process.stdin is not None:
                os.set_blocking(process.stdout.fileno(), False)
                os.set_blocking(process.stdin.fileno(), False)  # a worker that stops reading never blocks us
                loop.add_reader(process.stdout.fileno(), self._readable, index)

    def _readable(self, index: int) -> None:
        process = self.processes[index]
        assert process.stdout is not None
        try:
            chunk = os.read(process.stdout.fileno(), 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the worker is gone
            asyncio.get_event_loop().remove_reader(process.stdout.fileno())
            return
        for line in self._lines[index].feed(chunk):
            try:
                reply = json.loads(line)
                waiting = self._waiting.get(str(reply["id"]))
                answer = dict(reply["answer"])
            except (ValueError, KeyError, TypeError):
                continue
            if waiting is not None:
                future, answers, asked = waiting
                answers.append(answer)
                if len(answers) >= asked and not future.done():
                    future.set_result(None)

    def names(self) -> list[str]:
        return [f"{self.node}/relay{index}" for index in range(1, len(self.processes) + 1)]

    async def ask(self, op: str, args: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
        """Every live worker's answer to (op, args) within ANSWER_WAIT, and the workers that did not answer."""
        ident = secrets.token_hex(12)
        question = (json.dumps({"id": ident, "op": op, "args": args}) + "\n").encode()
        asked = 0
        for process in self.processes:
            if process.poll() is None and process.stdin is not None:
                try:
                    if os.write(process.stdin.fileno(), question) == len(question):
                        asked += 1
                except OSError:  # gone, or its pipe is full (it stopped reading): named as missing
                    continue
        future: asyncio.Future[None] = asyncio.get_event_loop().create_future()
        answers: list[dict[str, Any]] = []
        self._waiting[ident] = (future, answers, asked)  # no answer can be read before this: nothing awaited yet
        try:
            if asked:
                try:
                    await asyncio.wait_for(future, ANSWER_WAIT)
                except TimeoutError:
                    pass
        finally:
            del self._waiting[ident]
        answered = {str(answer.get("node")) for answer in answers}
        return answers, [name for name in self.names() if name not in answered]

    def wait_ready(self, timeout: float = 20.0) -> list[str]:
        """Wait for every worker's ready line; the problems of those that did not make it."""
        deadline = time.monotonic() + timeout
        problems = []
        for index, process in enumerate(self.processes, start=1):
            assert process.stdout is not None
            ready, _, _ = select.select([process.stdout], [], [], max(0.0, deadline - time.monotonic()))
            line = process.stdout.readline() if ready else ""
            if line.strip() != READY_LINE:
                problems.append(f"TURN worker {index} did not start (exit {process.poll()})")
        return problems

    def signal(self, number: int) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(number)

    def stop(self, timeout: float = 3.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in self.processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def answer_on_stdin(handler: Handler, node: str) -> None:
    """In a relay worker: answer the main process's console questions (stdin) on stdout, one line each."""
    loop = asyncio.get_event_loop()
    lines = _Lines()
    running: set[asyncio.Future[None]] = set()  # answers being prepared (kept until done)
    os.set_blocking(0, False)

    async def answer(line: bytes) -> None:
        try:
            question = json.loads(line)
            ident, op, args = str(question["id"]), str(question["op"]), dict(question["args"])
        except (ValueError, KeyError, TypeError):
            return
        try:
            reply = {"node": node, **await handler(op, args)}
        except Exception as error:  # noqa: BLE001 - one bad question must not stop the worker
            reply = {"node": node, "error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps({"id": ident, "answer": reply}) + "\n")
        sys.stdout.flush()

    def readable() -> None:
        try:
            chunk = os.read(0, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:  # the parent closed the pipe: it is stopping
            loop.remove_reader(0)
            return
        for line in lines.feed(chunk):
            task = asyncio.ensure_future(answer(line))
            running.add(task)
            task.add_done_callback(running.discard)

    loop.add_reader(0, readable)
