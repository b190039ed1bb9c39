"""Prometheus metrics at GREETPROXY_METRICS_LISTEN, derived from the log events.

Every decision is already one log event, so the counters are kept by a structlog processor that
sees each event before the level filter: no code path counts anything twice, and a new event type
is one more branch here. The gauges are set from the proxy's own counts once a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .config import Endpoint
from .outcomes import connection_outcome, reply_class

GAUGE_REFRESH = 1.0  # seconds
_PAUSE_BUCKETS = (0.01, 0.1, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, 300)
_SESSION_BUCKETS = (0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.connections = Counter(
            "greetproxy_connections", "Connections by what they came to", ["outcome"], registry=registry
        )
        self.pause = Histogram(
            "greetproxy_pause_seconds",
            "Time from connect to passing screening",
            buckets=_PAUSE_BUCKETS,
            registry=registry,
        )
        self.session = Histogram(
            "greetproxy_session_seconds", "Connection lifetimes", buckets=_SESSION_BUCKETS, registry=registry
        )
        self.dnsbl = Counter(
            "greetproxy_dnsbl_answers",
            "DNSBL/DNSWL answers by list and result",
            ["list", "result"],
            registry=registry,
        )
        self.messages = Counter(
            "greetproxy_messages",
            "Messages by the backend's end-of-data reply class",
            ["reply"],
            registry=registry,
        )
        self.backend_errors = Counter(
            "greetproxy_backend_errors",
            "Backend error replies by command and class",
            ["command", "reply"],
            registry=registry,
        )
        self.tls = Counter(
            "greetproxy_tls_sessions", "STARTTLS handshakes by version", ["version"], registry=registry
        )
        self.tls_errors = Counter("greetproxy_tls_errors", "Failed STARTTLS handshakes", registry=registry)
        self.state_errors = Counter(
            "greetproxy_state_errors", "Failed calls to the shared state (Redis)", registry=registry
        )
        # livesum: under GREETPROXY_WORKERS the supervisor adds up the live workers' values
        self.waiting = Gauge(
            "greetproxy_connections_waiting",
            "Connections in the greet pause",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.served = Gauge(
            "greetproxy_connections_served",
            "Connections past the pause (relayed or enforced)",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self._counts: tuple[Callable[[], int], Callable[[], int]] = (lambda: 0, lambda: 0)
        self._dnsbl_lists: Callable[[], tuple[str, ...]] = tuple

    def watch(
        self,
        waiting: Callable[[], int],
        served: Callable[[], int],
        dnsbl_lists: Callable[[], tuple[str, ...]],
    ) -> None:
        """Where the counts come from; ``dnsbl_lists``, the lists of the moment (SIGHUP may change them)."""
        self._counts = (waiting, served)
        self._dnsbl_lists = dnsbl_lists

    async def refresh_forever(self) -> None:
        """The gauges, once a second: a value read at scrape time would not reach the files that
        the supervisor adds up under GREETPROXY_WORKERS."""
        while True:
            self.waiting.set(self._counts[0]())
            self.served.set(self._counts[1]())
            await asyncio.sleep(GAUGE_REFRESH)

    def serve(self, endpoint: Endpoint) -> None:
        """The /metrics endpoint, in a thread of prometheus-client's."""
        start_http_server(endpoint.port, addr=endpoint.host, registry=self.registry)

    def __call__(self, _: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        """The structlog processor: count the event, pass it on unchanged."""
        name = event.get("event")
        outcome = connection_outcome(event)
        if outcome is not None:
            self.connections.labels(outcome).inc()
        if name == "pass":
            self.pause.observe(event.get("waited", 0))
        elif name == "reject" and event.get("by") == "backend":
            self.backend_errors.labels(event.get("command", "?"), reply_class(event.get("code"))).inc()
        elif name == "disconnect":
            self.session.observe(event.get("duration", 0))
        elif name == "message":
            self.messages.labels(reply_class(event.get("reply"))).inc()
        elif name == "dnsbl":
            self._dnsbl(event)
        elif name == "tls":
            self.tls.labels(event.get("tls_version", "?")).inc()
        elif name == "tls_error":
            self.tls_errors.inc()
        elif name == "state_error":
            self.state_errors.inc()
        return event

    def _dnsbl(self, event: MutableMapping[str, Any]) -> None:
        listed = {item.split("=", 1)[0] for item in event.get("listed", [])}
        failed = {item.split(":", 1)[0] for item in event.get("errors", [])}
        for domain in self._dnsbl_lists():
            result = "listed" if domain in listed else "error" if domain in failed else "not_listed"
            self.dnsbl.labels(domain, result).inc()
