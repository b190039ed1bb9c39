"""structlog set-up: one event per decision, JSON lines on stdout by default."""

from __future__ import annotations

import asyncio
import atexit
import logging
import sys
import threading
import time
from typing import IO, Any

import orjson
import structlog
from structlog.typing import EventDict, Processor

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_METHOD_LEVELS = {
    **_LEVELS,
    "warn": logging.WARNING,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


def configure(
    log_format: str = "json", level: str = "info", counter: Processor | None = None, worker: int | None = None
) -> None:
    """``counter``: a processor that sees every event, whatever the level (the metrics);
    ``worker``: the worker's index, added to every event."""
    global _base, _writer
    shared: list[Processor] = [_level_and_time]
    if worker is not None:
        shared.insert(0, _add_worker(worker))
    if counter is not None:
        shared = [counter, _below(_LEVELS[level]), *shared]
    if log_format == "console":
        # repr() of every string: a client's control characters never reach the terminal raw
        renderer = structlog.dev.ConsoleRenderer(colors=False, repr_native_str=True)
        processors = [*shared, _escape_bytes, _cut_long_values, renderer]
        factory = structlog.PrintLoggerFactory(sys.stdout)
        _writer = None
    else:
        processors = [*shared, _json_line]
        _writer = LineWriter(sys.stdout.buffer)
        factory = _writer.factory
    structlog.configure(
        processors=processors,
        # With a counter the level is applied after it, by _below; else here, where it costs least.
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if counter else _LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    _base = structlog.get_logger("greetproxy").bind()
    # aiosmtpd and asyncio log through the standard library; keep their warnings, as JSON too.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")


MAX_VALUE = 300  # characters of a string value; clients control many (HELO, addresses, replies)
_ESCAPES = {0x5C: "\\\\", 0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t", 0x00: "\\0"}
# For str.translate over bytes read as Latin-1: every byte that is not printable ASCII (and the
# backslash) to its escape, at C speed.
_ESCAPE_TABLE = {
    byte: _ESCAPES.get(byte, f"\\x{byte:02x}")
    for byte in range(256)
    if byte in _ESCAPES or not 0x20 <= byte < 0x7F
}
_base: structlog.typing.FilteringBoundLogger | None = None  # bound once a configuration, see get_logger


def escape(data: bytes) -> str:
    """C-style escapes for everything that is not printable ASCII: how bytes a client sent (an
    event's ``bytes`` values) are logged, escaped only if the event is logged at all."""
    return data.decode("latin-1").translate(_ESCAPE_TABLE)


def _render_value(value: object) -> str:
    """orjson's fallback: bytes escaped (and cut like other strings), anything else as repr()."""
    return _cut(escape(value) if isinstance(value, bytes | bytearray) else repr(value))


def _escape_bytes(_: object, __: str, event: EventDict) -> EventDict:
    for key, value in event.items():
        if isinstance(value, bytes | bytearray):
            event[key] = escape(value)
    return event


_LEVEL_NAMES = {"warn": "warning", "exception": "error"}
_second = (0, "")  # a whole second and its ISO form: formatting it is most of a timestamp's cost


def _level_and_time(_: object, method: str, event: EventDict) -> EventDict:
    """structlog's add_log_level and TimeStamper(fmt="iso", utc=True) in one, at a third of the cost
    (every relayed message logs an event)."""
    global _second
    event["level"] = _LEVEL_NAMES.get(method, method)
    now = time.time()
    second = int(now)
    if second != _second[0]:
        _second = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    event["timestamp"] = f"{_second[1]}.{int((now - second) * 1_000_000):06d}Z"
    return event


def _json_line(_: object, method: str, event: EventDict) -> bytes:
    """The event as a JSON line, its long strings cut; a line no longer than MAX_VALUE can have
    none, and most are that short, so the values are looked at only when the line is longer."""
    line = orjson.dumps(event, default=_render_value)
    if len(line) <= MAX_VALUE:
        return line
    return orjson.dumps(_cut_long_values(_, method, event), default=_render_value)


def _cut_long_values(_: object, __: str, event: EventDict) -> EventDict:
    for key, value in event.items():
        if isinstance(value, str) and len(value) > MAX_VALUE and key != "traceback":
            event[key] = _cut(value)
    return event


def _cut(text: str) -> str:
    return text if len(text) <= MAX_VALUE else f"{text[:MAX_VALUE]}...(+{len(text) - MAX_VALUE} chars)"


def _add_worker(index: int) -> Processor:
    def add(_: object, __: str, event: EventDict) -> EventDict:
        event["worker"] = index
        return event

    return add


def _below(threshold: int) -> Processor:
    def drop(_: object, method: str, event: EventDict) -> EventDict:
        if _METHOD_LEVELS.get(method, logging.INFO) < threshold:
            raise structlog.DropEvent
        return event

    return drop


def get_logger(**context: object) -> structlog.typing.FilteringBoundLogger:
    """A logger with ``context`` bound. Once configured, bound from one logger made then: a lazy
    structlog proxy per connection costs twice as much to make, and again at every call."""
    if _base is None:
        return structlog.get_logger("greetproxy", **context)
    return _base.bind(**context)


def follow_configuration() -> None:
    """From now on, loggers are structlog's lazy proxies, which follow a later change of its
    configuration (tests that capture events with structlog.testing.capture_logs)."""
    global _base
    _base = None


class LineWriter:
    """structlog's output for JSON lines. Inside the event loop (see ``batch_in``) the lines of one
    loop turn go out in one write at its end: under a flood of bots, four events each, a write per
    event was a third of the cost of a dropped connection. Elsewhere (start-up, the commands,
    another thread) each line is written at once."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lines: list[bytes] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0  # the loop's thread
        self._lock = threading.Lock()

    def factory(self, *_: Any) -> LineWriter:
        return self

    def msg(self, message: bytes) -> None:
        if self._loop is not None and threading.get_ident() == self._thread:
            self._lines.append(message)
            if len(self._lines) == 1:
                self._loop.call_soon(self.flush)
            return
        self._write(message + b"\n")

    debug = info = warning = warn = error = critical = exception = fatal = msg

    def batch_in(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Batch the lines of each turn of ``loop`` (the calling thread's); None: write each again."""
        self.flush()
        self._loop, self._thread = loop, threading.get_ident()

    def flush(self) -> None:
        if self._lines:
            data = b"\n".join(self._lines) + b"\n"
            self._lines.clear()
            self._write(data)

    def _write(self, data: bytes) -> None:
        with self._lock:
            self._stream.write(data)
            self._stream.flush()


_writer: LineWriter | None = None


@atexit.register
def _flush_at_exit() -> None:
    if _writer is not None:
        _writer.flush()


def batch_in(loop: asyncio.AbstractEventLoop | None) -> None:
    """JSON lines logged inside ``loop`` go out once a loop turn (None: at once again)."""
    if _writer is not None:
        _writer.batch_in(loop)
