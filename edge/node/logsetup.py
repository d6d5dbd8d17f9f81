"""One line per event on stderr, as text or JSON, from Twisted and stdlib loggers alike.

Libraries we use (aioice, aiortc) log through the stdlib; they are bridged so
an operator greps one stream in one format, tracebacks included.

No remote input may fill the disk through the log: a line is capped and its
control characters escaped (messages quote bytes from the wire), and an event
that repeats (same namespace and format) more than `REPEAT_BURST` times a
minute is counted instead of written, with one summary line when its minute
ends (`umedge_log_suppressed_total`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from typing import IO, Any

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    Logger,
    LogLevel,
    LogLevelFilterPredicate,
    formatEvent,
    globalLogBeginner,
)
from zope.interface import implementer

_LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
           "error": LogLevel.error}
_STDLIB_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
                  "error": logging.ERROR}


def _timestamp(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds % 1 * 1000):03d}Z"


MAX_LINE = 4000  # characters of one event's message, traceback included
REPEAT_BURST = 20  # lines per minute of one kind of event before the rest are only counted
REPEAT_WINDOW = 60.0
suppressed: Counter[str] = Counter()  # namespace -> events counted instead of written (for /metrics)


def _bounded(text: str) -> str:
    """Control characters escaped (a message may quote wire bytes), and at most MAX_LINE characters."""
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    if len(text) > MAX_LINE:
        text = f"{text[:MAX_LINE]}... ({len(text) - MAX_LINE} more characters)"
    return text


class RepeatLimiter:
    """Lets REPEAT_BURST events of one kind through per window; counts the rest."""

    def __init__(self, burst: int = REPEAT_BURST, window: float = REPEAT_WINDOW) -> None:
        self.burst, self.window = burst, window
        self._kinds: dict[tuple[str, str], list[float]] = {}  # kind -> [window start, seen, held back]

    def admit(self, kind: tuple[str, str], now: float) -> tuple[bool, int]:
        """(write this event?, events held back in the window that just ended, to report now)."""
        entry = self._kinds.get(kind)
        held = 0
        if entry is None or now - entry[0] >= self.window:
            held = int(entry[2]) if entry is not None else 0
            if len(self._kinds) > 10_000:  # bounded: a flood of distinct formats cannot grow it forever
                self._kinds.clear()
            entry = self._kinds[kind] = [now, 0, 0]
        entry[1] += 1
        if entry[1] <= self.burst:
            return True, held
        entry[2] += 1
        return False, held


def _json_safe(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


@implementer(ILogObserver)
class LineObserver:
    """Writes each event as one line: text for people, JSON for collectors."""

    def __init__(self, fmt: str, stream: IO[str], limiter: RepeatLimiter | None = None) -> None:
        self.fmt, self.stream = fmt, stream
        self.limiter = limiter or RepeatLimiter()

    def __call__(self, event: dict[str, Any]) -> None:
        namespace = event.get("log_namespace", "-")
        now = event.get("log_time", time.time())
        kind = str(event.get("log_site") or event.get("log_format"))
        write, held = self.limiter.admit((namespace, kind), now)
        if held:
            self._write(now, "warn", namespace, _bounded(f"{held} more events like {kind[:200]!r} in the last "
                                                         f"{self.limiter.window:.0f}s were counted, not written"), {})
        if not write:
            suppressed[namespace] += 1
            return
        level = event.get("log_level", LogLevel.info).name
        message = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            message += " | " + failure.getTraceback().strip()
        self._write(now, level, namespace, _bounded(message.replace("\n", " | ")), event)

    def _write(self, now: float, level: str, namespace: str, message: str, event: dict[str, Any]) -> None:
        stamp = _timestamp(now)
        if self.fmt == "json":
            record = {"time": stamp, "level": level, "namespace": namespace, "message": message}
            record.update({k: v for k, v in event.items()
                           if not k.startswith("log_") and _json_safe(v) and k not in record})
            line = json.dumps(record, separators=(",", ":"))
        else:
            line = f"{stamp} {level:<5} {namespace}: {message}"
        self.stream.write(line + "\n")
        self.stream.flush()


class _StdlibBridge(logging.Handler):
    """Sends stdlib log records into the Twisted log, keeping their logger name."""

    _map = {logging.DEBUG: LogLevel.debug, logging.INFO: LogLevel.info,
            logging.WARNING: LogLevel.warn, logging.ERROR: LogLevel.error,
            logging.CRITICAL: LogLevel.critical}

    def emit(self, record: logging.LogRecord) -> None:
        level = self._map.get(record.levelno, LogLevel.info)
        message = record.getMessage()
        if record.exc_info:  # e.g. asyncio's "Exception in callback ...": name the exception and where
            message += "\n" + logging.Formatter().formatException(record.exc_info)
        # The call site names the kind of event, so repeats of one warning are limited together.
        Logger(namespace=record.name).emit(level, "{message}", message=message,
                                           log_site=f"{record.pathname}:{record.lineno}")


current_format = "text"  # what start() was given: worker processes log the same way


def start(fmt: str = "text", level: str = "info", stream: IO[str] | None = None) -> None:
    """Route every log event of the process to `stream` (stderr by default)."""
    global current_format
    current_format = fmt
    observer = LineObserver(fmt, stream or sys.stderr)
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[level])
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])],
                                     discardBuffer=True, redirectStandardIO=False)
    root = logging.getLogger()
    root.handlers = [_StdlibBridge()]
    root.setLevel(_STDLIB_LEVELS[level])
