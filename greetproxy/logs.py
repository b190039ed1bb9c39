"""structlog set-up: one event per decision, JSON lines on stdout by default."""

from __future__ import annotations

import logging
import sys
import time

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
    shared: list[Processor] = [_level_and_time]
    if worker is not None:
        shared.insert(0, _add_worker(worker))
    if counter is not None:
        shared = [counter, _below(_LEVELS[level]), *shared]
    if log_format == "console":
        # repr() of every string: a client's control characters never reach the terminal raw
        renderer = structlog.dev.ConsoleRenderer(colors=False, repr_native_str=True)
        processors = [*shared, _cut_long_values, renderer]
        factory = structlog.PrintLoggerFactory(sys.stdout)
    else:
        processors = [*shared, _json_line]
        factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=processors,
        # With a counter the level is applied after it, by _below; else here, where it costs least.
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if counter else _LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # aiosmtpd and asyncio log through the standard library; keep their warnings, as JSON too.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")


MAX_VALUE = 300  # characters of a string value; clients control many (HELO, addresses, replies)
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
    line = orjson.dumps(event, default=repr)
    return line if len(line) <= MAX_VALUE else orjson.dumps(_cut_long_values(_, method, event), default=repr)


def _cut_long_values(_: object, __: str, event: EventDict) -> EventDict:
    for key, value in event.items():
        if isinstance(value, str) and len(value) > MAX_VALUE and key != "traceback":
            event[key] = f"{value[:MAX_VALUE]}...(+{len(value) - MAX_VALUE} chars)"
    return event


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
    return structlog.get_logger("greetproxy", **context)
