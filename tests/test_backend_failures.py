"""Temporary trouble at the backend answers 4xx, never 5xx, and never a 250 it did not give."""

from __future__ import annotations

import smtplib
import time

from tests.support.client import RawClient


def deliver(port: int, user: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.example", timeout=15) as client:
        client.sendmail("a@sender.example", [f"{user}@example.test"], b"Subject: retry\r\n\r\nok\r\n")


def expect_421(port: int) -> None:
    with RawClient(port) as client:
        answer = client.reply()
        assert answer.code == 421 and answer.text.startswith("4.3.2"), answer
        assert client.is_closed()


def test_backend_down_gives_421_and_the_proxy_recovers(start_proxy, backend):
    proxy = start_proxy(backend_connect_timeout="1s")  # refused connects are retried this long
    backend.stop()
    try:
        started = time.monotonic()
        expect_421(proxy.port)
        assert time.monotonic() - started >= 1.0
        event = proxy.wait_event("backend_unavailable")
        assert "Connection refused" in event["reason"]
    finally:
        backend.start()
    deliver(proxy.port, "recovered")
    backend.wait_for_messages(1, user="recovered")


def test_proxy_started_while_backend_down_serves_once_the_relay_check_passes(start_proxy, backend):
    backend.stop()
    try:
        proxy = start_proxy()
        assert proxy.wait_event("relay_check")["status"] == "unknown"
        expect_421(proxy.port)
    finally:
        backend.start()
    proxy.wait_event("relay_check", status="closed", timeout=15)
    deliver(proxy.port, "late")
    backend.wait_for_messages(1, user="late")


def test_backend_dying_mid_data_gives_no_250(proxy, backend):
    with RawClient(proxy.port) as client:
        client.reply()
        client.command("EHLO client.example")
        client.command("MAIL FROM:<a@sender.example>")
        assert client.command("RCPT TO:<middata@example.test>").code == 250
        assert client.command("DATA").code == 354
        client.send(b"Subject: mid-data\r\n\r\nfirst half\r\n")
        time.sleep(0.2)
        assert backend.kill_sessions() >= 1
        client.send(b"second half\r\n.\r\n")
        answer = client.reply()
        assert 400 <= answer.code < 500, answer
        assert client.is_closed()
    time.sleep(0.5)
    assert backend.messages(user="middata") == []
    assert proxy.wait_event("backend_unavailable")["sender"] == "a@sender.example"
