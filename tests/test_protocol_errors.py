"""Malformed client input gets an SMTP reply and a log line, and the proxy stays up."""

from __future__ import annotations

import select
import time

from tests.support.client import RawClient


def greeted(proxy) -> RawClient:
    client = RawClient(proxy.port)
    assert client.reply().code == 220
    assert client.command("EHLO client.example").code == 250
    return client


def test_over_long_command_line_gets_500_5_5_2(proxy):
    with greeted(proxy) as client:
        answer = client.command(b"NOOP " + b"a" * 600)
        assert answer.code == 500 and answer.text.startswith("5.5.2")
        assert client.command(b"MAIL FROM:<x@sender.example> " + b"X" * 1100).code == 500
        assert client.command("NOOP").code == 250  # the session goes on
    assert proxy.wait_count("reject", 2, reason="line_too_long")


def test_mail_parameters_may_use_the_extended_length(proxy):
    with greeted(proxy) as client:
        padded = b"MAIL FROM:<" + b"p" * 600 + b"@sender.example>"
        assert client.command(padded).code != 500


def test_over_long_text_line_refuses_the_message(proxy, backend):
    with greeted(proxy) as client:
        client.command("MAIL FROM:<a@sender.example>")
        client.command("RCPT TO:<long@example.test>")
        assert client.command("DATA").code == 354
        answer = client.command(b"Subject: long\r\n\r\n" + b"z" * 1200 + b"\r\n.")
        assert answer.code == 500 and answer.text.startswith("5.5.2"), answer
        # the session and a fresh backend connection carry on
        client.command("MAIL FROM:<a@sender.example>")
        client.command("RCPT TO:<short@example.test>")
        assert client.command("DATA").code == 354
        assert client.command(b"Subject: short\r\n\r\nok\r\n.").code == 250
    backend.wait_for_messages(1, user="short")
    assert backend.messages(user="long") == []


def test_bare_lf_in_a_command_gets_a_5xx(proxy):
    with greeted(proxy) as client:
        client.send(b"NOOP\n")
        answer = client.reply()
        assert answer.code == 500 and "bare" in answer.text
        client.send(b"NOOP\rRSET\r\n")
        assert client.reply().code == 500
        assert client.command("NOOP").code == 250
    assert len(proxy.wait_count("reject", 2, reason="bare_newline")) == 2


def test_unknown_command_is_refused_by_the_proxy(proxy):
    with greeted(proxy) as client:
        assert client.command("XCLIENT ADDR=192.0.2.1").code == 502
        assert client.command("AUTH PLAIN AGFhAGI=").code == 502


def test_too_many_errors_end_the_session(start_proxy):
    proxy = start_proxy(max_errors="3")
    with greeted(proxy) as client:
        for _ in range(2):
            assert client.command("BOGUS").code == 502
        client.send(b"BOGUS\r\n")
        assert client.reply().code == 502
        final = client.reply()
        assert final.code == 421 and final.text.startswith("4.7.0")
        assert client.is_closed()
    assert proxy.wait_event("disconnect", outcome="too_many_errors")


def test_idle_client_gets_421_4_4_2(start_proxy):
    proxy = start_proxy(command_timeout="1s")
    with greeted(proxy) as client:
        answer = client.reply(timeout=5)
        assert answer.code == 421 and answer.text.startswith("4.4.2")
        assert client.is_closed()
    assert proxy.wait_event("disconnect", outcome="timeout")


def test_a_client_dribbling_a_command_byte_by_byte_is_cut_off_at_the_command_timeout(start_proxy):
    """Slowloris: every byte comes well within the timeout, the whole line never does."""
    proxy = start_proxy(command_timeout="1s")
    with greeted(proxy) as client:
        started = time.monotonic()
        for byte in b"MAIL FROM:<slow@sender.example>\r\n":  # 33 bytes, 0.25 s apart: over 8 s
            if _readable(client):  # the proxy has answered: stop
                break
            client.send(bytes([byte]))
            time.sleep(0.25)
        answer = client.reply(timeout=5)
        assert answer.code == 421 and answer.text.startswith("4.4.2")
        assert time.monotonic() - started < 3
    assert proxy.wait_event("disconnect", outcome="timeout")


def _readable(client) -> bool:
    return bool(select.select([client.sock], [], [], 0)[0])


def test_commands_after_quit_are_not_executed(proxy):
    with greeted(proxy) as client:
        client.send(b"QUIT\r\nMAIL FROM:<a@sender.example>\r\n")
        assert client.reply().code == 221
        assert client.is_closed()
