"""Clients that talk before the banner are early talkers; sendmail never sees them."""

from __future__ import annotations

import smtplib
import time

import pytest

from tests.conftest import PROXY_HOSTNAME
from tests.support.client import RawClient, early_ehlo_then_deliver


def assert_backend_untouched(proxy, backend, session: str) -> None:
    kinds = [event["event"] for event in proxy.session_events(session)]
    assert "pass" not in kinds and "message" not in kinds, kinds
    assert backend.messages() == []


def test_immediate_talker_is_dropped_with_554(proxy, backend):
    with RawClient(proxy.port) as bot:
        bot.send(b"EHLO bot.example\r\nMAIL FROM:<spam@bot.example>\r\n")
        answer = bot.reply()
        assert answer.code == 554 and answer.text.startswith("5.5.1")
        assert bot.is_closed()
    event = proxy.wait_event("pregreet")
    assert (
        event["bytes"] == len(b"EHLO bot.example\r\nMAIL FROM:<spam@bot.example>\r\n") or event["bytes"] >= 18
    )
    assert event["sample"].startswith("EHLO bot.example\\r\\n")
    assert event["action"] == "drop" and event["client"] == "127.0.0.1" and isinstance(event["port"], int)
    assert event["after"] < 0.3
    assert_backend_untouched(proxy, backend, event["session"])
    assert proxy.wait_event("disconnect", session=event["session"])["outcome"] == "rejected"


def test_mid_pause_talker_is_dropped(start_proxy, backend):
    proxy = start_proxy(greet_pause="1s")
    with RawClient(proxy.port) as bot:
        time.sleep(0.5)
        bot.send(b"HELO bot.example\r\n")
        assert bot.reply().code == 554
    event = proxy.wait_event("pregreet")
    assert 0.4 <= event["after"] < 1.0
    assert_backend_untouched(proxy, backend, event["session"])


def test_talker_after_the_teaser_line_is_dropped(start_proxy, backend):
    proxy = start_proxy(greet_banner="greetproxy test teaser", greet_pause="1s")
    with RawClient(proxy.port) as bot:
        bot.sock.settimeout(5)
        teaser = bot.sock.recv(1024)
        assert teaser == f"220-{PROXY_HOSTNAME} greetproxy test teaser\r\n".encode()
        bot.send(b"EHLO impatient.example\r\n")  # a bot answers the first line it sees
        assert bot.reply().code == 554
    event = proxy.wait_event("pregreet")
    assert_backend_untouched(proxy, backend, event["session"])


def test_teaser_then_final_banner_for_a_patient_client(start_proxy, backend):
    proxy = start_proxy(greet_banner="hold on")
    with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="patient.example", timeout=10) as client:
        client.sendmail("a@sender.example", ["patient@example.test"], b"Subject: teaser\r\n\r\nok\r\n")
    backend.wait_for_messages(1, user="patient")


def test_banner_is_held_for_the_pause(start_proxy):
    proxy = start_proxy(greet_pause="0.5s")
    with RawClient(proxy.port) as client:
        assert client.reply().code == 220
        waited = time.monotonic() - client.connected_at
    assert 0.5 <= waited < 1.5


def test_enforce_greets_refuses_mail_and_logs_the_attempt(start_proxy, backend):
    proxy = start_proxy(pregreet_action="enforce")
    with RawClient(proxy.port) as bot:
        bot.send(b"EHLO bot.example\r\n")
        assert bot.reply().code == 220
        assert bot.reply().code == 250  # its early EHLO, answered by the proxy itself
        for command in ("NOOP", "RSET"):
            assert bot.command(command).code == 250
        mail = bot.command("MAIL FROM:<spam@bot.example>")
        assert mail.code == 550 and mail.text.startswith("5.5.1")
        assert bot.command("RCPT TO:<victim@example.test>").code == 550
        assert bot.command("DATA").code == 503
        assert bot.command("QUIT").code == 221
    event = proxy.wait_event("pregreet")
    assert event["action"] == "enforce"
    session = event["session"]
    rejects = proxy.wait_count("reject", 3, session=session, enforced=True)  # MAIL, RCPT, DATA
    assert {(reject["command"], reject["address"]) for reject in rejects if "address" in reject} == {
        ("MAIL", "spam@bot.example"),
        ("RCPT", "victim@example.test"),
    }
    assert all(reject["helo"] == "bot.example" for reject in rejects if "address" in reject)
    assert_backend_untouched(proxy, backend, session)


def test_ignore_only_logs_and_the_early_commands_are_relayed(start_proxy, backend):
    proxy = start_proxy(pregreet_action="ignore")
    early_ehlo_then_deliver(proxy.port, "early")
    backend.wait_for_messages(1, user="early")
    assert proxy.wait_event("pregreet")["action"] == "ignore"
    assert proxy.wait_event("pass")["ignored"] == ["pregreet"]


@pytest.mark.parametrize("action", ["drop", "enforce"])
def test_early_bytes_never_reach_the_backend(start_proxy, backend, action):
    proxy = start_proxy(pregreet_action=action)
    with RawClient(proxy.port) as bot:
        bot.send(
            b"EHLO bot.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<never@example.test>\r\n"
            b"DATA\r\nSubject: replay\r\n\r\nspam\r\n.\r\nQUIT\r\n"
        )
        bot.is_closed(timeout=3)
    time.sleep(0.5)
    assert backend.messages() == []
    assert proxy.find("pass") == []
