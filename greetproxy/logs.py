"""structlog set-up: one event per decision, JSON lines on stdout by default."""

from __future__ import annotations

import logging
import sys

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
    shared: list[Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _cut_long_values,
    ]
    if worker is not None:
        shared.insert(0, _add_worker(worker))
    if counter is not None:
        shared = [counter, _below(_LEVELS[level]), *shared]
    if log_format == "console":
        # repr() of every string: a client's control characters never reach the terminal raw
        processors = [*shared, structlog.dev.ConsoleRenderer(colors=False, repr_native_str=True)]
        factory = structlog.PrintLoggerFactory(sys.stdout)
    else:
        processors = [*shared, structlog.processors.JSONRenderer(serializer=orjson.dumps)]
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
