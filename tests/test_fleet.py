"""Two greetproxy instances behind a real HAProxy (PROXY protocol v1/v2), sharing a real Redis,
in front of the one sendmail: passes and per-client limits hold across the fleet, the client's
own address reaches every log line and the Received header, and Redis can die without a lost
message."""

from __future__ import annotations

import email
import re
import smtplib
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import proxy_env
from tests.support.client import RawClient
from tests.support.fleet import HAProxy, RedisServer
from tests.support.proxy import ProxyProcess, free_port, run_once

DOMAIN = "example.test"
Fleet = Callable[..., tuple[ProxyProcess, ProxyProcess, HAProxy]]


@pytest.fixture
def fleet(start_proxy, fresh_redis: RedisServer, tmp_path) -> Iterator[Fleet]:
    """``fleet(proxy_option, **settings)``: two instances sharing Redis, each with its own state
    directory, trusting PROXY headers from 127.0.0.1 (HAProxy's address), and HAProxy before them."""
    balancers: list[HAProxy] = []

    def start(
        proxy_option: str = "send-proxy", **settings: str
    ) -> tuple[ProxyProcess, ProxyProcess, HAProxy]:
        settings = {"state": fresh_redis.url, "proxy_protocol_from": "127.0.0.1", **settings}
        first, second = start_proxy(**settings), start_proxy(**settings)
        workdir = tmp_path / f"haproxy{len(balancers)}"
        workdir.mkdir()
        balancer = HAProxy(workdir, [first.port, second.port], proxy_option).start()
        balancers.append(balancer)
        return first, second, balancer

    yield start
    for balancer in balancers:
        balancer.stop()


def serving(
    instances: tuple[ProxyProcess, ...], name: str, timeout: float = 10, **fields: object
) -> ProxyProcess:
    """The instance that logged the event (HAProxy chose which)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for instance in instances:
            if instance.find(name, **fields):
                return instance
        time.sleep(0.02)
    raise AssertionError(f"no {name!r} event {fields} on any instance within {timeout}s")


def banner_after(port: int, source: str) -> float:
    """Seconds from connect to the 220, from ``source``; the client says QUIT after it."""
    with RawClient(port, source=source) as client:
        assert client.reply().code == 220
        waited = time.monotonic() - client.connected_at
        client.command("QUIT")
    return waited


def test_a_pass_on_one_instance_is_a_cached_pass_on_the_other(fleet):
    first, second, balancer = fleet(pass_ttl="1d", greet_pause="1s")
    assert banner_after(balancer.port, "127.0.0.5") >= 1.0
    assert banner_after(balancer.port, "127.0.0.5") < 0.5  # round robin: the other instance
    passes = [
        proxy.wait_event("pass", client="127.0.0.5") for proxy in (first, second)
    ]  # one on each instance
    assert sorted(event["via"] for event in passes) == ["cache", "tests"]
    # each keeps the pass in its own file too, for when Redis is away
    time.sleep(0.2)  # the writes reach the files
    for proxy in (first, second):
        own = {name: value for name, value in proxy.env.items() if name != "GREETPROXY_STATE"}
        assert run_once(own, command="cache list").stdout.startswith("127.0.0.5/32\t")


def test_the_concurrency_limit_counts_connections_on_every_instance(fleet):
    first, second, balancer = fleet(client_concurrency="2", greet_pause="5s")
    held = [RawClient(balancer.port, source="127.0.0.6") for _ in range(2)]
    try:
        first.wait_event("connect", client="127.0.0.6")
        second.wait_event("connect", client="127.0.0.6")  # one on each: neither is at its own limit
        with RawClient(balancer.port, source="127.0.0.6") as third:
            answer = third.reply()
            assert answer.code == 421 and "too many connections" in answer.text
        serving((first, second), "reject", client="127.0.0.6")
        refusals = first.find("reject", client="127.0.0.6") + second.find("reject", client="127.0.0.6")
        assert [(event["reason"], event["scope"]) for event in refusals] == [("client_concurrency", "fleet")]
        with RawClient(balancer.port, source="127.0.0.16") as other:  # another client is not counted
            assert other.reply().code == 220
    finally:
        for client in held:
            client.close()
    for proxy in (first, second):
        proxy.wait_event("disconnect", client="127.0.0.6")
    assert banner_after(balancer.port, "127.0.0.6") > 4  # the leases went with the connections


@pytest.mark.parametrize("proxy_option", ["send-proxy", "send-proxy-v2"])
def test_the_client_address_from_the_proxy_header_reaches_logs_and_received(fleet, backend, proxy_option):
    first, second, balancer = fleet(proxy_option)
    body = b"Subject: behind haproxy\r\nFrom: a@sender.example\r\n\r\nhello\r\n"
    with smtplib.SMTP(
        "127.0.0.1", balancer.port, local_hostname="lb.example", timeout=10, source_address=("127.0.0.7", 0)
    ) as client:
        assert client.sendmail("a@sender.example", [f"lena@{DOMAIN}"], body) == {}
    [raw] = backend.wait_for_messages(1, user="lena")
    ours = [header for header in email.message_from_bytes(raw).get_all("Received") if "greetproxy" in header]
    assert len(ours) == 1 and "from lb.example ([127.0.0.7])" in ours[0], ours
    served = serving((first, second), "connect")
    connect = served.wait_event("connect")
    assert (connect["client"], connect["balancer"]) == ("127.0.0.7", "127.0.0.1")
    served.wait_event("disconnect", session=connect["session"])
    session_events = served.session_events(str(connect["session"]))
    assert {event["client"] for event in session_events} == {"127.0.0.7"}
    assert {"pass", "message", "disconnect"} <= {event["event"] for event in session_events}
    assert served.find("pregreet") == []  # the header itself is no early talk


def test_a_proxy_header_from_an_untrusted_address_is_early_talk(fleet):
    first, _, _ = fleet()
    with RawClient(first.port, source="127.0.0.9") as client:
        client.send(b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n")
        answer = client.reply()
        assert answer.code == 554 and "talked before the greeting" in answer.text
    pregreet = first.wait_event("pregreet", client="127.0.0.9")
    assert pregreet["sample"].startswith("PROXY TCP4 203.0.113.9")
    assert all(event.get("client") != "203.0.113.9" for event in first.events)


def test_a_trusted_balancer_without_a_header_is_closed_after_the_timeout(fleet):
    first, _, _ = fleet(proxy_protocol_timeout="0.3s")
    with RawClient(first.port) as silent:  # from 127.0.0.1, the balancer's address
        assert silent.is_closed(timeout=3)
        assert silent.buffer == b""  # nothing is said to something that is not a client
    error = first.wait_event("proxy_protocol_error", client="127.0.0.1")
    assert error["error"] == "no PROXY header within 0.3s"
    with RawClient(first.port) as garbled:
        garbled.send(b"EHLO not-a-balancer.example\r\n")
        assert garbled.is_closed(timeout=3) and garbled.buffer == b""
    assert first.wait_count("proxy_protocol_error", 2)[1]["error"] == "PROXY unrecognized signature"
    assert first.wait_count("disconnect", 2, outcome="proxy_protocol_error")


def test_redis_killed_mid_run_loses_no_mail_and_comes_back(fleet, backend, fresh_redis):
    first, second, balancer = fleet(pass_ttl="1d")
    sent: list[int] = []
    failures: list[BaseException] = []
    halfway = threading.Event()

    def sender(index: int) -> None:
        try:
            for number in range(10):
                with smtplib.SMTP(
                    "127.0.0.1", balancer.port, timeout=15, source_address=(f"127.0.0.{20 + index}", 0)
                ) as client:
                    body = f"Subject: fleet {index}-{number}\r\n\r\nbody\r\n".encode()
                    assert client.sendmail("a@sender.example", [f"fleet@{DOMAIN}"], body) == {}
                sent.append(number)
                if len(sent) == 12:
                    halfway.set()
        except BaseException as error:  # reported below, in the test's own thread
            failures.append(error)
            halfway.set()

    threads = [threading.Thread(target=sender, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    assert halfway.wait(60)
    fresh_redis.kill()
    for thread in threads:
        thread.join(120)
    assert failures == [] and len(sent) == 40
    assert len(backend.wait_for_messages(40, user="fleet", timeout=30)) == 40
    for proxy in (first, second):
        # every instance that tried Redis after the kill noticed it once, and kept serving
        assert len(proxy.find("state_unavailable")) <= 1
    assert first.find("state_unavailable") or second.find("state_unavailable")
    fresh_redis.start()
    for proxy in (first, second):
        if proxy.find("state_unavailable"):
            back = proxy.wait_event("state_available", timeout=40)
            assert back["failures"] >= 1


def test_the_cache_command_works_on_the_fleets_passes(fleet, fresh_redis):
    first, second, balancer = fleet(pass_ttl="1d", greet_pause="1s")
    banner_after(balancer.port, "127.0.0.30")
    serving((first, second), "pass", client="127.0.0.30")
    time.sleep(0.2)  # the pass reaches Redis

    def cache(*words: str) -> subprocess.CompletedProcess[str]:
        return run_once({"GREETPROXY_STATE": fresh_redis.url}, command=f"cache {' '.join(words)}")

    listed = cache("list")
    assert listed.returncode == 0 and listed.stdout.startswith("127.0.0.30/32\t"), listed
    assert cache("forget", "127.0.0.30").returncode == 0
    assert banner_after(balancer.port, "127.0.0.30") >= 1.0  # withdrawn on every instance at once
    assert cache("forget", "192.0.2.1").returncode == 1


def test_check_reports_redis_and_its_round_trip_or_the_problem(backend, fresh_redis):
    result = run_once(proxy_env(backend.port, state=fresh_redis.url), command="check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"ok +shared state: Redis 7\.\d+\.\d+, a round trip in \d+\.\d\d ms", result.stdout)
    down = proxy_env(backend.port, state=f"redis://:secret@127.0.0.1:{free_port()}/0")
    result = run_once(down, command="check")
    assert result.returncode == 1
    assert re.search(r"PROBLEM +shared state: redis://127\.0\.0\.1:\d+/0: .*local state", result.stdout)
    assert "secret" not in result.stdout
    assert "GREETPROXY_STATE=redis://:***@127.0.0.1:" in result.stdout


def test_an_instance_whose_redis_never_answers_serves_on_local_state(start_proxy, backend):
    proxy = start_proxy(state=f"redis://127.0.0.1:{free_port()}/0", pass_ttl="1d", greet_pause="1s")
    assert banner_after(proxy.port, "127.0.0.50") >= 1.0
    assert banner_after(proxy.port, "127.0.0.50") < 0.5  # this host's own pass cache
    with smtplib.SMTP("127.0.0.1", proxy.port, timeout=10, source_address=("127.0.0.50", 0)) as client:
        assert client.sendmail("a@sender.example", [f"solo@{DOMAIN}"], b"Subject: solo\r\n\r\nhi\r\n") == {}
    assert len(backend.wait_for_messages(1, user="solo")) == 1
    assert [event["via"] for event in proxy.find("pass")] == ["tests", "cache", "cache"]
    assert len(proxy.find("state_unavailable")) == 1  # said once, however many connections
    assert proxy.find("state_error")  # and each failure counted (debug)
