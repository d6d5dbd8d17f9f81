"""The log is one line per event, keeps tracebacks, and cannot be flooded or fed raw wire bytes."""

from __future__ import annotations

import io
import json
import logging

from twisted.logger import LogLevel, globalLogPublisher

from edge.node import logsetup
from edge.node.logsetup import MAX_LINE, LineObserver, RepeatLimiter, _StdlibBridge


def event(fmt: str, now: float, level: LogLevel = LogLevel.warn, **values: object) -> dict[str, object]:
    return {"log_format": fmt, "log_time": now, "log_level": level, "log_namespace": "umedge.test", **values}


def test_repeats_beyond_the_burst_are_counted_then_summarized() -> None:
    stream = io.StringIO()
    observer = LineObserver("text", stream, RepeatLimiter(burst=3, window=60))
    before = logsetup.suppressed["umedge.test"]
    for index in range(1000):
        observer(event("bad datagram from {peer}", 100.0 + index * 0.01, peer=f"192.0.2.{index % 250}"))
    assert len(stream.getvalue().splitlines()) == 3
    assert logsetup.suppressed["umedge.test"] - before == 997
    observer(event("bad datagram from {peer}", 161.0, peer="192.0.2.1"))  # the next minute
    lines = stream.getvalue().splitlines()
    assert len(lines) == 5 and "997 more events like 'bad datagram from {peer}'" in lines[3]
    assert lines[4].endswith("bad datagram from 192.0.2.1")


def test_other_kinds_of_event_are_not_held_back_by_a_flood() -> None:
    stream = io.StringIO()
    observer = LineObserver("text", stream, RepeatLimiter(burst=2, window=60))
    for index in range(50):
        observer(event("flood {n}", 10.0, n=index))
    observer(event("started roles={roles}", 10.0, level=LogLevel.info, roles="edge"))
    assert stream.getvalue().splitlines()[-1].endswith("started roles=edge")


def test_wire_bytes_are_escaped_and_capped() -> None:
    stream = io.StringIO()
    LineObserver("text", stream)(event("rejected {what}", 1.0, what="INVITE\r\x00\x1b[31m" + "A" * 50_000))
    [line] = stream.getvalue().splitlines()
    assert "\\r\\x00\\x1b[31m" in line and "\x1b" not in line and "\x00" not in line
    assert len(line) < MAX_LINE + 200 and "more characters)" in line
    stream = io.StringIO()
    LineObserver("json", stream)(event("rejected {what}", 1.0, what="a\x7fb"))
    assert json.loads(stream.getvalue())["message"] == "rejected a\\x7fb"


def test_stdlib_exceptions_keep_their_traceback() -> None:
    seen: list[dict[str, object]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        try:
            {}["missing"]
        except KeyError:
            record = logging.getLogger("asyncio").makeRecord(
                "asyncio", logging.ERROR, __file__, 1, "Exception in callback %s", ("Reader._readable",),
                exc_info=__import__("sys").exc_info())
        _StdlibBridge().emit(record)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    [bridged] = [e for e in seen if e.get("log_namespace") == "asyncio"]
    stream = io.StringIO()
    LineObserver("text", stream)(bridged)
    line = stream.getvalue()
    assert "Exception in callback Reader._readable" in line and "KeyError: 'missing'" in line
    assert "test_logsetup.py" in line and line.count("\n") == 1
