"""One line per event on stderr, as text or JSON, from Twisted and stdlib loggers alike.

Libraries we use (aioice, aiortc) log through the stdlib; they are bridged so
an operator greps one stream in one format.
"""

from __future__ import annotations

import json
import logging
import sys
import time
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


def _json_safe(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool)) or value is None


@implementer(ILogObserver)
class LineObserver:
    """Writes each event as one line: text for people, JSON for collectors."""

    def __init__(self, fmt: str, stream: IO[str]) -> None:
        self.fmt, self.stream = fmt, stream

    def __call__(self, event: dict[str, Any]) -> None:
        level = event.get("log_level", LogLevel.info).name
        namespace = event.get("log_namespace", "-")
        message = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            message += " | " + failure.getTraceback().strip().replace("\n", " | ")
        stamp = _timestamp(event.get("log_time", time.time()))
        if self.fmt == "json":
            record = {"time": stamp, "level": level, "namespace": namespace, "message": message}
            record.update({k: v for k, v in event.items()
                           if not k.startswith("log_") and _json_safe(v) and k not in record})
            line = json.dumps(record, separators=(",", ":"))
        else:
            line = f"{stamp} {level:<5} {namespace}: {message.replace(chr(10), ' | ')}"
        self.stream.write(line + "\n")
        self.stream.flush()


class _StdlibBridge(logging.Handler):
    """Sends stdlib log records into the Twisted log, keeping their logger name."""

    _map = {logging.DEBUG: LogLevel.debug, logging.INFO: LogLevel.info,
            logging.WARNING: LogLevel.warn, logging.ERROR: LogLevel.error,
            logging.CRITICAL: LogLevel.critical}

    def emit(self, record: logging.LogRecord) -> None:
        level = self._map.get(record.levelno, LogLevel.info)
        Logger(namespace=record.name).emit(level, "{message}", message=record.getMessage())


def start(fmt: str = "text", level: str = "info", stream: IO[str] | None = None) -> None:
    """Route every log event of the process to `stream` (stderr by default)."""
    observer = LineObserver(fmt, stream or sys.stderr)
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[level])
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [predicate])],
                                     discardBuffer=True, redirectStandardIO=False)
    root = logging.getLogger()
    root.handlers = [_StdlibBridge()]
    root.setLevel(_STDLIB_LEVELS[level])
