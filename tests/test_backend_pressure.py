"""Backend pressure: many clients that pass the pause together never overrun sendmail."""

from __future__ import annotations

import select
import time
from collections.abc import Iterator

import pytest

from tests.conftest import proxy_env, started_sendmail
from tests.support.client import RawClient
from tests.support.load import PeakCounter, swarm
from tests.support.proxy import ProxyProcess
from tests.support.sendmail import Sendmail

CLIENTS = 300


@pytest.fixture(scope="module")
def stock_listen_sendmail(tmp_path_factory, sendmail) -> Iterator[Sendmail]:
    """sendmail with its own defaults for the listen backlog (10) and no rate throttle."""
    yield from started_sendmail(tmp_path_factory, "stock-listen", listen_backlog=None)


@pytest.fixture(scope="module")
def throttled_sendmail(tmp_path_factory, sendmail) -> Iterator[Sendmail]:
    """Debian's sendmail.mc setting: at most 15 new connections a second."""
    yield from started_sendmail(
        tmp_path_factory, "throttled", listen_backlog=None, connection_rate_throttle=15
    )


def run_proxy(backend: Sendmail, **overrides: str) -> ProxyProcess:
    overrides.setdefault("log_level", "info")
    # every test client comes from 127.0.0.1: lift the per-client limits for these bursts
    overrides.update(client_concurrency=str(CLIENTS), client_rate=str(10 * CLIENTS))
    return ProxyProcess(proxy_env(backend.port, **overrides)).start()


def assert_all_delivered(outcomes, backend: Sendmail) -> None:
    failed = [outcome for outcome in outcomes if not outcome.delivered]
    assert not failed, f"{len(failed)} of {len(outcomes)} not delivered, e.g. {failed[:3]}"
    assert all(code < 500 for outcome in outcomes for code in outcome.codes if code not in (550,))
    delivered = backend.wait_for_messages(len(outcomes), timeout=60)
    assert len(delivered) == len(outcomes)


@pytest.mark.parametrize("limit", ["100", "20"])
def test_a_burst_against_stock_sendmail_all_delivers_within_the_limit(stock_listen_sendmail, limit):
    backend = stock_listen_sendmail
    backend.clear()
    proxy = run_proxy(backend, backend_max_connections=limit)
    try:
        with PeakCounter(backend.port) as counter:
            outcomes = swarm(proxy.port, CLIENTS)
        assert_all_delivered(outcomes, backend)
        assert counter.peak <= int(limit)
        assert counter.peak >= min(int(limit), 5)  # the load really reached the backend in parallel
        assert max(event["in_use"] for event in proxy.find("backend_queue")) <= int(limit)
        waits = [event["waited"] for event in proxy.find("backend_queue")]
        print(
            f"limit {limit}: peak {counter.peak} backend connections, {len(waits)} queued, "
            f"longest wait {max(waits, default=0):.2f}s, "
            f"longest banner {max(outcome.banner_after for outcome in outcomes):.2f}s"
        )
    finally:
        assert proxy.stop() == 0


def test_a_burst_against_a_rate_throttled_sendmail_all_delivers(throttled_sendmail):
    backend = throttled_sendmail
    backend.clear()
    proxy = run_proxy(backend, backend_connect_rate="15", backend_max_connections="20")
    try:
        with PeakCounter(backend.port) as counter:
            outcomes = swarm(proxy.port, CLIENTS, timeout=120)
        assert_all_delivered(outcomes, backend)
        assert counter.peak <= 20
        assert proxy.find("backend_busy") == []
        print(
            f"throttled: peak {counter.peak}, "
            f"longest banner {max(outcome.banner_after for outcome in outcomes):.2f}s"
        )
    finally:
        assert proxy.stop() == 0


def hold_the_only_backend_connection(proxy: ProxyProcess) -> RawClient:
    holder = RawClient(proxy.port)
    assert holder.reply().code == 220
    assert holder.command("EHLO holder.example").code == 250
    return holder


def test_queue_timeout_gives_421_all_server_ports_busy(start_proxy):
    proxy = start_proxy(backend_max_connections="1", backend_queue_timeout="0.5s")
    with hold_the_only_backend_connection(proxy), RawClient(proxy.port) as late:
        started = time.monotonic()
        answer = late.reply()
        assert answer.code == 421
        assert answer.text.endswith("all server ports are busy, try again later")
        assert answer.text.startswith("4.3.2")
        assert time.monotonic() - started >= 0.3 + 0.5
        assert late.is_closed()
    event = proxy.wait_event("backend_busy")
    assert proxy.wait_event("disconnect", session=event["session"])["outcome"] == "backend_busy"


def ready(clients: list[RawClient], wait: float) -> list[int]:
    readable, _, _ = select.select([client.sock for client in clients], [], [], wait)
    return [index for index, client in enumerate(clients) if client.sock in readable]


def test_queued_clients_are_served_in_arrival_order(start_proxy, backend):
    proxy = start_proxy(backend_max_connections="1", greet_pause_jitter="0")
    holder = hold_the_only_backend_connection(proxy)
    queued = []
    for _ in range(3):
        queued.append(RawClient(proxy.port))
        time.sleep(0.1)
    time.sleep(0.5)  # everyone is past the pause, waiting for the backend
    assert ready(queued, 0.2) == []
    holder.command("QUIT")
    holder.close()
    while queued:  # each time, the earliest of those still waiting is the one served
        assert ready(queued, 5) == [0]
        client = queued.pop(0)
        assert client.reply().code == 220
        assert client.command("QUIT").code == 221
        client.close()
    assert len(proxy.wait_count("backend_queue", 3)) == 3


def test_early_talk_while_queued_is_dropped_and_gives_up_the_place(start_proxy, backend):
    proxy = start_proxy(backend_max_connections="1", greet_pause_jitter="0")
    holder = hold_the_only_backend_connection(proxy)
    with RawClient(proxy.port) as bot:
        time.sleep(0.6)  # past the pause, now in the backend queue
        bot.send(b"EHLO bot.example\r\n")
        assert bot.reply().code == 554
    bot_session = proxy.wait_event("pregreet")["session"]
    with RawClient(proxy.port) as patient:
        time.sleep(0.5)
        holder.command("QUIT")
        holder.close()
        assert patient.reply(timeout=5).code == 220  # not held up by the bot's old place
    kinds = [event["event"] for event in proxy.session_events(bot_session)]
    assert "pass" not in kinds and "backend_queue" not in kinds
