"""The per-connection state object, passed from the gate to the relay or the enforce engine."""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

from .logs import get_logger

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from .tls import TlsInfo


_ids = random.Random()  # seeded from os.urandom: unique enough for logs, and no syscall per connection


def new_session_id() -> str:
    return f"{_ids.getrandbits(48):012x}"


class Session:
    __slots__ = (
        "id",
        "client_ip",
        "client_port",
        "started",
        "log",
        "bytes_in",
        "bytes_out",
        "commands",
        "messages",
        "finished",
        "tls",
        "counted",
    )

    def __init__(self, client_ip: str, client_port: int) -> None:
        self.id = new_session_id()
        self.client_ip = client_ip
        self.client_port = client_port
        self.started = time.monotonic()
        # An explicitly bound logger rather than contextvars: protocol callbacks under uvloop
        # run outside the connection's task, where contextvars would leak between connections.
        self.log: FilteringBoundLogger = get_logger(session=self.id, client=client_ip, port=client_port)
        self.bytes_in = 0
        self.bytes_out = 0
        self.commands = 0
        self.messages = 0
        self.finished = False
        self.tls: TlsInfo | None = None  # set once STARTTLS succeeded
        self.counted = False  # in this instance's per-client counts (released when it ends)

    def behind(self, client_ip: str, client_port: int, balancer: str) -> None:
        """A PROXY header named the real client: it is the client from now on, in every test,
        limit, log line and Received header; the load balancer stays in the log context."""
        self.client_ip, self.client_port = client_ip, client_port
        self.log = get_logger(session=self.id, client=client_ip, port=client_port, balancer=balancer)

    def tls_fields(self) -> dict[str, object]:
        return self.tls.fields() if self.tls is not None else {}

    @property
    def age(self) -> float:
        return time.monotonic() - self.started

    def finish(self, outcome: str) -> bool:
        """Log the one ``disconnect`` event; False if the session was already finished."""
        if self.finished:
            return False
        self.finished = True
        self.log.info(
            "disconnect",
            outcome=outcome,
            duration=round(self.age, 3),
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            commands=self.commands,
            messages=self.messages,
            **self.tls_fields(),
        )
        return True
