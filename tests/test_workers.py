"""GREETPROXY_WORKERS: several worker processes on the same port under one supervisor."""

from __future__ import annotations

import os
import signal
import smtplib

from tests.conftest import proxy_env
from tests.support.load import swarm
from tests.support.metrics import scrape
from tests.support.proxy import ProxyProcess, free_port, run_once

BURST = dict(client_concurrency="500", client_rate="10000")


def start_workers(start_proxy, **overrides: str) -> ProxyProcess:
    proxy = start_proxy(workers="2", **BURST, **overrides)
    proxy.wait_event("supervisor", state="ready", timeout=20)
    return proxy


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_workers_share_the_port_and_deliver_everything(start_proxy, backend):
    proxy = start_workers(start_proxy)
    outcomes = swarm(proxy.port, 40)
    assert all(outcome.delivered for outcome in outcomes), [o for o in outcomes if not o.delivered][:3]
    assert len(backend.wait_for_messages(40)) == 40
    connects = proxy.wait_count("connect", 40)
    assert {event["worker"] for event in connects} == {0, 1}  # the kernel spread them over both
    workers = {event["pid"] for event in proxy.find("worker", state="started")}
    assert len(workers) == 2 and proxy.pid not in workers


def test_a_dead_worker_is_started_again_and_service_goes_on(start_proxy, backend):
    proxy = start_workers(start_proxy)
    victim = proxy.find("worker", state="started", index=0)[0]["pid"]
    proxy.expected_errors.add("worker")
    os.kill(victim, signal.SIGKILL)
    died = proxy.wait_event("worker", state="died", index=0)
    assert died["status"] == -signal.SIGKILL
    restarted = proxy.wait_event("worker", state="started", index=0, where=lambda e: e["pid"] != victim)
    proxy.wait_count("listening", 3, timeout=20)  # two at first, then the new one
    for number in range(6):
        with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="w.example", timeout=10) as client:
            client.sendmail("a@sender.example", [f"w{number}@example.test"], b"Subject: w\r\n\r\nagain\r\n")
    assert len(backend.wait_for_messages(6)) == 6
    assert alive(restarted["pid"])


def test_sigterm_stops_every_worker_and_exits_0(start_proxy, backend):
    proxy = start_workers(start_proxy)
    pids = [event["pid"] for event in proxy.find("worker", state="started")]
    proxy.signal(signal.SIGTERM)
    assert proxy.wait(timeout=30) == 0
    assert not any(alive(pid) for pid in pids)
    assert len(proxy.find("worker", state="exited")) == 2


def test_metrics_are_the_sum_over_the_workers(start_proxy, backend):
    port = free_port()
    proxy = start_workers(start_proxy, metrics_listen=f"127.0.0.1:{port}")
    outcomes = swarm(proxy.port, 20)
    assert all(outcome.delivered for outcome in outcomes)
    connects = proxy.wait_count("disconnect", 20)
    assert {event["worker"] for event in connects} == {0, 1}
    samples = scrape(port)
    assert samples[("greetproxy_connections_total", (("outcome", "pass"),))] == 20
    assert samples[("greetproxy_messages_total", (("reply", "2xx"),))] == 20


def test_a_worker_that_cannot_start_stops_the_supervisor_with_its_status(stock_sendmail):
    result = run_once(proxy_env(stock_sendmail.port, workers="2"), timeout=60)  # an open relay
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr
    assert "relays for the proxy's source address" in result.stderr
