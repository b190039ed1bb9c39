"""The relay's dialogue logic on fake transports: no socket, no timer, no backend process.

Each test says what the client sends and what the backend answers, and checks what each side
was written, in order. The same behaviour runs against real sendmail in tests/test_relay.py and
friends; here every step is visible, including the ones a real peer makes hard to time."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from structlog.testing import capture_logs

from greetproxy.enforce import EnforceSession
from tests.support.wire import Wire, unstarted_proxy

EHLO_REPLY = b"250-mx.example.test Hello\r\n250-PIPELINING\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n"
BANNER = b"220 proxy.example.test ESMTP\r\n"


def on_loop(scenario: Callable[[], None]) -> None:
    """Run ``scenario`` inside an event loop (the watchdog's timer needs one; it never fires)."""

    async def main() -> None:
        scenario()

    asyncio.run(main())


def greeted(**variables: str) -> Wire:
    wire = Wire(unstarted_proxy(**variables))
    assert wire.client.take() == BANNER
    wire.say(b"EHLO client.example\r\n")
    assert wire.backend.take() == b"EHLO client.example\r\n"
    wire.reply(EHLO_REPLY)
    wire.client.take()
    return wire


def in_message(wire: Wire) -> None:
    """MAIL, RCPT, DATA, each answered: the relay is past the 354, the client's replies taken."""
    for line, answer in (
        (b"MAIL FROM:<a@example.org>", b"250 2.1.0 ok"),
        (b"RCPT TO:<b@example.test>", b"250 2.1.5 ok"),
        (b"DATA", b"354 go ahead"),
    ):
        wire.say(line + b"\r\n")
        assert wire.backend.take() == line + b"\r\n"
        wire.reply(answer + b"\r\n")
    assert wire.client.take() == b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go ahead\r\n"


def test_the_ehlo_reply_names_the_proxy_and_keeps_only_what_can_be_relayed() -> None:
    def scenario() -> None:
        wire = Wire(unstarted_proxy())
        wire.say(b"EHLO client.example\r\n")
        wire.reply(EHLO_REPLY)
        assert wire.client.take() == BANNER + (
            b"250-proxy.example.test Hello [192.0.2.1], pleased to meet you\r\n"
            b"250-PIPELINING\r\n250 8BITMIME\r\n"
        )

    on_loop(scenario)


def test_pipelined_commands_reach_the_backend_one_at_a_time_in_order() -> None:
    def scenario() -> None:
        wire = greeted()
        wire.say(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.test>\r\nRCPT TO:<c@example.test>\r\n")
        assert wire.backend.take() == b"MAIL FROM:<a@example.org>\r\n"  # the rest waits for its reply
        assert wire.client.take() == b""
        wire.reply(b"250 2.1.0 ok\r\n")
        assert wire.backend.take() == b"RCPT TO:<b@example.test>\r\n"
        wire.reply(b"550 5.1.1 <b@example.test>... User unknown\r\n")
        assert wire.backend.take() == b"RCPT TO:<c@example.test>\r\n"
        wire.reply(b"250 2.1.5 ok\r\n")
        assert wire.client.take() == (
            b"250 2.1.0 ok\r\n550 5.1.1 <b@example.test>... User unknown\r\n250 2.1.5 ok\r\n"
        )

    on_loop(scenario)


def test_a_reply_split_anywhere_reaches_the_client_whole_and_verbatim() -> None:
    def scenario() -> None:
        wire = greeted()
        wire.say(b"HELP\r\n")
        answer = b"214-2.0.0 This is sendmail\r\n214-2.0.0 Topics:\r\n214 2.0.0 End of HELP info\r\n"
        for start in range(0, len(answer), 7):
            assert wire.client.take() == b""
            wire.reply(answer[start : start + 7])
        assert wire.client.take() == answer

    on_loop(scenario)


def test_message_text_goes_out_after_the_354_with_the_received_header_first() -> None:
    def scenario() -> None:
        wire = greeted()
        in_message(wire)
        wire.say(b"Subject: hi\r\n\r\nbody\r\n")
        wire.say(b".\r\nQUIT\r\n")
        sent = wire.backend.take()
        assert sent.startswith(b"Received: from client.example ([192.0.2.1])\r\n")
        assert b"by proxy.example.test (greetproxy) with ESMTP id " + wire.session.id.encode() in sent
        assert sent.endswith(b"\r\nSubject: hi\r\n\r\nbody\r\n.\r\n")  # QUIT waits for the reply
        with capture_logs() as logs:
            wire.reply(b"250 2.0.0 queued\r\n")
        message = next(entry for entry in logs if entry["event"] == "message")
        assert message["sender"] == "a@example.org" and message["recipients"] == 1
        assert (
            message["size"] == len(b"Subject: hi\r\n\r\nbody\r\n") and message["reply"] == "250 2.0.0 queued"
        )
        assert wire.backend.take() == b"QUIT\r\n"
        wire.reply(b"221 2.0.0 bye\r\n")
        assert wire.client.take() == b"250 2.0.0 queued\r\n221 2.0.0 bye\r\n"
        assert wire.client.closed and wire.backend.closed and wire.session.messages == 1

    on_loop(scenario)


def test_the_backend_gone_mid_message_gives_421_never_250() -> None:
    def scenario() -> None:
        wire = greeted()
        in_message(wire)
        wire.say(b"Subject: hi\r\n\r\nbody\r\n.\r\n")
        with capture_logs() as logs:
            wire.link.connection_lost(None)
        assert wire.client.take().startswith(b"421 4.3.2 proxy.example.test service not available")
        assert wire.client.closed
        assert [entry["outcome"] for entry in logs if entry["event"] == "disconnect"] == ["backend_failure"]

    on_loop(scenario)


def test_a_reply_nobody_asked_for_ends_the_session_with_421() -> None:
    def scenario() -> None:
        wire = greeted()
        wire.reply(b"421 4.4.2 mx.example.test timeout waiting for input\r\n")
        assert wire.client.take().startswith(b"421 4.3.2 ")
        assert wire.client.closed and wire.backend.closed

    on_loop(scenario)


def test_a_client_that_reads_no_replies_is_answered_no_further_until_it_does() -> None:
    def scenario() -> None:
        wire = greeted()
        wire.relay.pause_writing()
        assert not wire.client.reading
        wire.say(b"NOOP\r\nNOOP\r\n")  # what had been read already
        assert wire.backend.take() == b""
        wire.relay.resume_writing()
        assert wire.client.reading
        assert wire.backend.take() == b"NOOP\r\n"

    on_loop(scenario)


def test_a_full_backend_socket_pauses_reading_message_text() -> None:
    def scenario() -> None:
        wire = greeted()
        for line, answer in (
            (b"MAIL FROM:<a@example.org>", b"250 ok"),
            (b"RCPT TO:<b@example.test>", b"250 ok"),
        ):
            wire.say(line + b"\r\n")
            wire.reply(answer + b"\r\n")
        wire.say(b"DATA\r\n")
        wire.reply(b"354 go ahead\r\n")
        wire.link.pause_writing()
        assert not wire.client.reading and wire.relay.watchdog.waiting == "backend"
        wire.link.resume_writing()
        assert wire.client.reading and wire.relay.watchdog.waiting == "client"

    on_loop(scenario)


def test_too_many_error_replies_end_the_session() -> None:
    def scenario() -> None:
        wire = greeted(max_errors="2")
        wire.say(b"RCPT TO:<x@example.test>\r\n")
        wire.reply(b"503 5.0.0 Need MAIL before RCPT\r\n")
        wire.say(b"AUTH PLAIN\r\n")  # refused by the proxy: the second error
        assert wire.client.take() == (
            b"503 5.0.0 Need MAIL before RCPT\r\n502 5.5.1 command not implemented\r\n"
            b"421 4.7.0 proxy.example.test too many errors, closing transmission channel\r\n"
        )
        assert wire.client.closed

    on_loop(scenario)


@pytest.mark.parametrize(
    ("waiting", "expected"),
    [
        ("client", b"421 4.4.2 proxy.example.test timeout exceeded, closing transmission channel\r\n"),
        ("backend", b"421 4.3.2 proxy.example.test service not available, closing transmission channel\r\n"),
    ],
)
def test_a_wait_past_the_command_timeout(waiting: str, expected: bytes) -> None:
    def scenario() -> None:
        wire = greeted()
        if waiting == "backend":
            wire.say(b"NOOP\r\n")
        assert wire.relay.watchdog.waiting == waiting
        wire.relay._expired(waiting)  # what the watchdog's timer calls
        assert wire.client.take() == expected
        assert wire.client.closed and wire.backend.closed

    on_loop(scenario)


def test_shutdown_ends_an_idle_session_now_and_a_busy_one_after_its_reply() -> None:
    def scenario() -> None:
        idle, busy = greeted(), greeted()
        busy.say(b"NOOP\r\n")
        for wire in (idle, busy):
            wire.relay.interrupt()
        assert idle.client.take() == b"421 4.3.2 proxy.example.test service shutting down\r\n"
        assert busy.client.take() == b""
        busy.reply(b"250 2.0.0 OK\r\n")
        assert busy.client.take() == b"250 2.0.0 OK\r\n421 4.3.2 proxy.example.test service shutting down\r\n"
        assert idle.client.closed and busy.client.closed

    on_loop(scenario)


def test_a_client_that_shuts_its_side_after_quit_still_gets_the_221() -> None:
    def scenario() -> None:
        wire = greeted()
        wire.say(b"QUIT\r\n")
        assert wire.relay.eof_received() is True  # keep the transport open for the reply
        assert not wire.client.closed
        wire.reply(b"221 2.0.0 bye\r\n")
        assert wire.client.take() == b"221 2.0.0 bye\r\n" and wire.client.closed

    on_loop(scenario)


def test_commands_before_the_ehlo_reply_are_improper_pipelining() -> None:
    def scenario() -> None:
        wire = Wire(unstarted_proxy(pipelining_action="drop"))
        wire.client.take()
        with capture_logs() as logs:
            wire.say(b"EHLO bot.example\r\nMAIL FROM:<spam@example.org>\r\n")
        assert wire.backend.take() == b""
        assert wire.client.take() == b"554 5.5.1 Protocol error\r\n"
        assert [entry["event"] for entry in logs][:2] == ["pipelining", "reject"]

    on_loop(scenario)


def test_enforce_takes_over_mid_session_and_the_backend_is_let_go() -> None:
    def scenario() -> None:
        wire = greeted(non_smtp_action="enforce")
        wire.say(b"GET / HTTP/1.1\r\nMAIL FROM:<a@example.org>\r\n")
        assert isinstance(wire.conversation, EnforceSession)
        assert wire.backend.closed and wire.backend.take() == b""
        assert wire.client.take() == b"503 5.5.1 Protocol error\r\n550 5.5.1 Protocol error\r\n"

    on_loop(scenario)
