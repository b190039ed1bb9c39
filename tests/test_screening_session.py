"""Screening beyond the pause: per-client limits, stress mode, protocol tests in the session, dry run."""

from __future__ import annotations

import time

import pytest

from tests.support.client import RawClient, early_ehlo_then_deliver, holding


def test_per_client_concurrency_limit(start_proxy):
    proxy = start_proxy(client_concurrency="2", greet_pause="5s")
    with holding(proxy.port, 2):
        proxy.wait_count("connect", 2)
        with RawClient(proxy.port) as third:
            answer = third.reply(timeout=2)
            assert answer.code == 421 and answer.text.startswith("4.7.0")
        assert proxy.wait_count("reject", 1, reason="client_concurrency")
    proxy.wait_count("disconnect", 2)
    with RawClient(proxy.port) as later:  # admitted again once the others have gone
        later.send(b"QUIT\r\n")
        assert later.reply().code == 554  # an early talker now, no longer over the limit


def test_per_client_rate_limit(start_proxy):
    proxy = start_proxy(client_rate="3", greet_pause="0")
    codes = []
    for _ in range(5):
        with RawClient(proxy.port) as client:
            codes.append(client.reply().code)
    assert codes == [220, 220, 220, 421, 421]
    assert len(proxy.wait_count("reject", 2, reason="client_rate")) == 2


def test_stress_mode_shortens_the_pause_and_ends(start_proxy):
    proxy = start_proxy(
        max_connections="20", client_concurrency="20", greet_pause="10s", stress_greet_pause="0.2s"
    )
    with holding(proxy.port, 19) as crowd:
        assert proxy.wait_event("stress", state="entering")["waiting"] == 19
        with RawClient(proxy.port) as newcomer:
            assert newcomer.reply(timeout=3).code == 220  # 0.2 s, not 10 s
            assert time.monotonic() - newcomer.connected_at < 2
        for client in crowd[:6]:
            client.close()
        assert proxy.wait_event("stress", state="leaving")["waiting"] < 14


def test_http_request_is_a_non_smtp_command(proxy, backend):
    with RawClient(proxy.port) as client:
        assert client.reply().code == 220
        answer = client.command("GET / HTTP/1.1")
        assert answer.code == 554 and answer.text.startswith("5.5.1")
        assert client.is_closed()
    assert proxy.wait_event("non_smtp_command")["detail"] == "GET / HTTP/1.1"


def test_header_line_is_a_non_smtp_command(proxy):
    with RawClient(proxy.port) as client:
        client.reply()
        client.command("EHLO client.example")
        assert client.command("User-Agent: curl/8.0").code == 554
    assert proxy.wait_event("non_smtp_command")


def test_commands_before_the_ehlo_reply_are_logged_and_relayed_by_default(proxy, backend):
    with RawClient(proxy.port) as client:
        client.reply()
        client.send(b"EHLO hasty.example\r\nMAIL FROM:<a@sender.example>\r\n")
        assert client.reply().code == 250
        assert client.reply().code == 250  # ignore: relayed as usual
    event = proxy.wait_event("pipelining")
    assert event["action"] == "ignore" and "EHLO" in event["detail"]


@pytest.mark.parametrize(("action", "codes"), [("drop", [554]), ("enforce", [250, 550])])
def test_pipelining_actions(start_proxy, backend, action, codes):
    proxy = start_proxy(pipelining_action=action)
    with RawClient(proxy.port) as client:
        client.reply()
        client.send(b"EHLO hasty.example\r\nMAIL FROM:<a@sender.example>\r\n")
        assert [client.reply().code for _ in codes] == codes
    assert proxy.wait_event("pipelining")["action"] == action


def test_text_before_the_354_is_improper_pipelining(start_proxy, backend):
    proxy = start_proxy(pipelining_action="enforce")
    with RawClient(proxy.port) as client:
        client.reply()
        client.command("EHLO client.example")
        client.command("MAIL FROM:<a@sender.example>")
        assert client.command("RCPT TO:<hasty@example.test>").code == 250
        client.send(b"DATA\r\nSubject: too soon\r\n\r\nx\r\n.\r\n")
        assert client.reply().code == 503  # the enforce engine answers DATA; nothing reaches sendmail
    assert "DATA" in proxy.wait_event("pipelining")["detail"]
    time.sleep(0.5)
    assert backend.messages(user="hasty") == []


def test_dry_run_logs_the_verdict_and_lets_the_client_through(start_proxy, backend):
    proxy = start_proxy(dry_run="1")
    early_ehlo_then_deliver(proxy.port, "dry")
    backend.wait_for_messages(1, user="dry")
    assert proxy.wait_event("dry_run")["would"] == "drop"
