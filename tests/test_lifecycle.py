"""Capacity, shutdown, start-up checks and clean-up of the daemon as a whole."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import time

import pytest

from greetproxy.server import LISTEN_BACKLOG
from tests.conftest import proxy_env
from tests.support.client import RawClient, holding
from tests.support.proxy import ProxyProcess, free_port, run_once


def test_beyond_max_connections_new_clients_get_421_4_7_0(start_proxy):
    proxy = start_proxy(max_connections="2", greet_pause="5s")
    with holding(proxy.port, 2):
        proxy.wait_count("connect", 2)
        with RawClient(proxy.port) as third:
            answer = third.reply(timeout=2)
            assert answer.code == 421 and answer.text.startswith("4.7.0")
            assert third.is_closed()
        assert proxy.wait_count("reject", 1, reason="max_connections")


def test_sigterm_lets_live_sessions_finish_then_421s_the_rest(start_proxy, backend):
    proxy = start_proxy(shutdown_grace="2s", greet_pause="0.3s")
    busy = RawClient(proxy.port)
    idle = RawClient(proxy.port)
    assert busy.reply().code == 220 and idle.reply().code == 220
    busy.command("EHLO busy.example")
    idle.command("EHLO idle.example")
    busy.command("MAIL FROM:<a@sender.example>")
    waiting = RawClient(proxy.port)  # still in the pause when the signal comes
    proxy.signal(signal.SIGTERM)
    proxy.wait_event("shutdown")
    with pytest.raises(OSError):
        RawClient(proxy.port, timeout=2).reply(timeout=2)
    assert waiting.reply().code == 421
    # the live session carries on inside the grace and delivers
    assert busy.command("RCPT TO:<drain@example.test>").code == 250
    assert busy.command("DATA").code == 354
    assert busy.command(b"Subject: drain\r\n\r\nok\r\n.").code == 250
    assert busy.command("QUIT").code == 221
    # the idle one is told after the grace
    answer = idle.reply(timeout=10)
    assert answer.code == 421 and answer.text.startswith("4.3.2")
    assert proxy.wait(timeout=15) == 0
    backend.wait_for_messages(1, user="drain")
    for client in (busy, idle, waiting):
        client.close()


def test_no_socket_outlives_its_session(proxy, backend):
    def deliver(index: int) -> None:
        with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="leak.example", timeout=10) as client:
            client.sendmail("a@sender.example", [f"leak{index}@example.test"], b"Subject: x\r\n\r\nx\r\n")

    deliver(0)
    time.sleep(0.2)
    baseline = proxy.open_fds()
    for index in range(1, 21):
        deliver(index)
    for _ in range(20):
        with RawClient(proxy.port) as bot:
            bot.send(b"EHLO bot\r\n")
            bot.is_closed()
    with RawClient(proxy.port) as quitter:  # hangs up mid-session without QUIT
        quitter.reply()
        quitter.command("EHLO quitter.example")
    time.sleep(0.5)
    assert proxy.open_fds() <= baseline
    disconnects = proxy.wait_count("disconnect", 42)
    assert len(disconnects) == 42
    assert {event["outcome"] for event in disconnects} == {"quit", "rejected", "client_hangup"}


@pytest.mark.parametrize(
    "variable, value",
    [
        ("GREET_PAUSE", "forever"),
        ("GREET_PAUSE", "301s"),
        ("LISTEN", "localhost:25"),
        ("MAX_CONNECTIONS", "0"),
        ("PREGREET_ACTION", "reject"),
        ("BACKEND", "127.0.0.1"),
        ("LOG_FORMAT", "xml"),
        ("GREET_PAUSSE", "1s"),
    ],
)
def test_bad_config_exits_2_naming_the_variable(variable, value):
    env = proxy_env(free_port())
    env[f"GREETPROXY_{variable}"] = value
    result = run_once(env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"GREETPROXY_{variable}" in lines[0] and value in lines[0]


def test_the_listening_socket_keeps_its_backlog(proxy):
    """asyncio's create_server listens again with a backlog of 100 unless told otherwise; a burst
    of clients would overflow that queue and wait a second each for a SYN retry."""
    listed = subprocess.run(
        ["ss", "-Hltn", f"sport = :{proxy.port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert int(listed[2]) == LISTEN_BACKLOG == 4096  # ss shows a listener's backlog as its Send-Q


def test_listen_failure_is_a_clear_error(proxy, backend):
    env = proxy_env(backend.port, listen=f"127.0.0.1:{proxy.port}")  # already taken
    result = run_once(env)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{proxy.port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_guard_refuses_to_start_when_sendmail_trusts_the_source_address(backend):
    """sendmail always relays for 127.0.0.1, so connecting from there must fail the guard."""
    result = run_once(proxy_env(backend.port, backend_source="127.0.0.1"))
    assert result.returncode == 2
    assert "open relay" in result.stderr and "GREETPROXY_BACKEND_SOURCE" in result.stderr


def test_guard_refuses_debians_stock_access_map(stock_sendmail):
    stock_sendmail.clear()
    result = run_once(proxy_env(stock_sendmail.port))
    assert result.returncode == 2
    assert "Connect:127 RELAY" in result.stderr
    assert stock_sendmail.relayed() == []


def test_guard_can_be_overridden_on_purpose(stock_sendmail):
    env = proxy_env(stock_sendmail.port, allow_open_backend="1")
    proxy = ProxyProcess(env).start()
    try:
        assert proxy.find("relay_check")[0]["status"] == "open"
    finally:
        assert proxy.stop() == 0
