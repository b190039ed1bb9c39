"""Fixtures: one real sendmail for the whole run, and greetproxy daemons in front of it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme

from greetproxy import logs
from tests.support.fleet import RedisServer, fleet_tools_missing
from tests.support.proxy import ProxyProcess, free_port
from tests.support.sendmail import DEBIAN_STOCK_ACCESS, Sendmail, sendmail_available
from tests.support.tls import CertFiles, write_pair

IN_CI = os.environ.get("CI") == "true"
PROXY_HOSTNAME = "proxy.example.test"
PAUSE = "0.3s"


def started_sendmail(
    tmp_path_factory: pytest.TempPathFactory, name: str, **options: Any
) -> Iterator[Sendmail]:
    """A private sendmail in its own folder and port, for a fixture to ``yield from``."""
    server = Sendmail(tmp_path_factory.mktemp(name), free_port(), **options)
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def loggers_follow_configuration() -> None:
    """In-process tests capture events (structlog.testing.capture_logs) after a test that called
    logs.configure may have run: loggers must follow the configuration of the moment."""
    logs.follow_configuration()


@pytest.fixture(scope="session")
def sendmail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sendmail]:
    if not sendmail_available():
        message = "sendmail is not installed; `sh scripts/test` (as root) installs it"
        if IN_CI:
            pytest.fail(message + ": CI must not skip the sendmail tests")
        pytest.skip(message)
    yield from started_sendmail(tmp_path_factory, "sendmail")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the run (Debian's package), on a loopback port."""
    missing = fleet_tools_missing()
    if missing:
        message = f"{', '.join(missing)} not installed; `sh scripts/test` (as root) installs them"
        if IN_CI:
            pytest.fail(message + ": CI must not skip the fleet tests")
        pytest.skip(message)
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def fresh_redis(redis_server: RedisServer) -> RedisServer:
    """The shared redis-server, running (a test may have killed it) and empty."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    with redis_server.client() as client:
        client.flushall()
    return redis_server


@pytest.fixture(scope="session")
def stock_sendmail(tmp_path_factory: pytest.TempPathFactory, sendmail: Sendmail) -> Iterator[Sendmail]:
    """A second sendmail with Debian's stock access map (Connect:127 RELAY), emptied per use."""
    yield from started_sendmail(tmp_path_factory, "stock-sendmail", access=DEBIAN_STOCK_ACCESS)


@pytest.fixture(scope="session")
def test_ca() -> trustme.CA:
    return trustme.CA(organization_name="greetproxy tests")


@pytest.fixture(scope="session")
def proxy_certs(tmp_path_factory: pytest.TempPathFactory, test_ca: trustme.CA) -> CertFiles:
    """An RSA-2048 certificate for the proxy (its host name and 127.0.0.1), from the test CA."""
    return write_pair(test_ca, tmp_path_factory.mktemp("proxy-tls"), PROXY_HOSTNAME, "127.0.0.1")


@pytest.fixture
def backend(sendmail: Sendmail) -> Sendmail:
    """The shared sendmail, emptied of earlier tests' messages and running."""
    if not sendmail.is_running():
        sendmail.start()
    sendmail.clear()
    return sendmail


def proxy_env(backend_port: int, **overrides: str) -> dict[str, str]:
    env = {
        "GREETPROXY_LISTEN": f"127.0.0.1:{free_port()}",
        "GREETPROXY_BACKEND": f"127.0.0.1:{backend_port}",
        "GREETPROXY_BACKEND_SOURCE": "127.0.0.2",
        "GREETPROXY_GREET_PAUSE": PAUSE,
        "GREETPROXY_HOSTNAME": PROXY_HOSTNAME,
        "GREETPROXY_SHUTDOWN_GRACE": "2s",
        "GREETPROXY_LOG_LEVEL": "debug",
        # every test client comes from 127.0.0.1: one pass would let the rest skip the pause
        "GREETPROXY_PASS_TTL": "0",
    }
    env.update({f"GREETPROXY_{key.upper()}": value for key, value in overrides.items()})
    return env


@pytest.fixture
def start_proxy(backend: Sendmail) -> Iterator[Callable[..., ProxyProcess]]:
    """Start a greetproxy daemon in front of the shared sendmail; keyword arguments set variables."""
    yield from proxies_for(backend)


def proxies_for(backend: Sendmail) -> Iterator[Callable[..., ProxyProcess]]:
    """For a fixture to ``yield from``: a starter of proxies in front of ``backend``, stopped after
    the test, which fails if one logged a traceback or an unexpected error."""
    started: list[ProxyProcess] = []

    def start(**overrides: str) -> ProxyProcess:
        process = ProxyProcess(proxy_env(backend.port, **overrides)).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()
    for process in started:
        assert not process.tracebacks(), f"the proxy logged a traceback or error: {process.tracebacks()}"


@pytest.fixture
def proxy(start_proxy: Callable[..., ProxyProcess]) -> ProxyProcess:
    return start_proxy()
