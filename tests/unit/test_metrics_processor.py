"""The metrics processor: what each log event counts, and that the log level does not hide events."""

from __future__ import annotations

import io

import orjson
import pytest
import structlog

from greetproxy import logs
from greetproxy.metrics import Metrics


def value(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


class Written(io.BytesIO):
    def close(self) -> None:  # the wrapper's close would end it before the test reads it
        pass


@pytest.fixture
def written(monkeypatch):
    output = Written()
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(output))
    return output


@pytest.fixture
def metrics(written):
    saved = structlog.get_config()
    counter = Metrics()
    logs.configure("json", "warning", counter=counter)
    yield counter
    structlog.configure(**saved)


def test_events_below_the_log_level_are_counted_but_not_written(metrics, written):
    log = logs.get_logger(session="s1")
    log.info("pass", via="cache", waited=0.002)
    log.info("reject", command="CONNECT", reason="pregreet, dnsbl", code=554)
    log.info("reject", command="CONNECT", reason="client_rate", code=421)
    log.warning("backend_unavailable", reason="refused")
    log.warning("backend_unavailable", reason="mid-session", sender="a@b")  # counted at the gate only
    log.info("message", reply="451 4.3.0 later")
    log.info("enforce", reason="pregreet")
    log.debug("state_error", error="Timeout connecting to server", state="redis://10.0.0.5:6379/0")
    log.warning("proxy_protocol_error", error="PROXY unrecognized signature")
    assert value(metrics, "greetproxy_state_errors_total") == 1
    assert value(metrics, "greetproxy_connections_total", outcome="proxy_protocol_error") == 1
    assert value(metrics, "greetproxy_connections_total", outcome="pass_cached") == 1
    assert value(metrics, "greetproxy_connections_total", outcome="pregreet") == 1
    assert value(metrics, "greetproxy_connections_total", outcome="limit") == 1
    assert value(metrics, "greetproxy_connections_total", outcome="backend_unavailable") == 1
    assert value(metrics, "greetproxy_connections_total", outcome="enforce") == 1
    assert value(metrics, "greetproxy_messages_total", reply="4xx") == 1
    assert value(metrics, "greetproxy_pause_seconds_count") == 1
    lines = [orjson.loads(line) for line in written.getvalue().splitlines()]
    assert [line["event"] for line in lines] == [
        "backend_unavailable",
        "backend_unavailable",
        "proxy_protocol_error",
    ]
