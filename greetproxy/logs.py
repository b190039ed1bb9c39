"""structlog set-up: one event per decision, JSON lines on stdout by default."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure(log_format: str = "json", level: str = "info") -> None:
    shared = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if log_format == "console":
        processors = [*shared, structlog.dev.ConsoleRenderer(colors=False)]
        factory = structlog.PrintLoggerFactory(sys.stdout)
    else:
        processors = [*shared, structlog.processors.JSONRenderer(serializer=orjson.dumps)]
        factory = structlog.BytesLoggerFactory(sys.stdout.buffer)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[level]),
        logger_factory=factory,
        cache_logger_on_first_use=True,
    )
    # aiosmtpd and asyncio log through the standard library; keep their warnings, as JSON too.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")


def get_logger(**context: object) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger("greetproxy", **context)
