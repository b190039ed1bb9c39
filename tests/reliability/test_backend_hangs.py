"""A backend that hangs: sendmail stopped (SIGSTOP) before its greeting, at MAIL, or before its
end-of-data reply. The client always gets a 4xx in bounded time, never a 5xx, never a hang."""

from __future__ import annotations

import signal
import time

import pytest

from tests.conftest import proxies_for, started_sendmail
from tests.support.client import RawClient

TIMEOUTS = dict(backend_connect_timeout="1s", command_timeout="1s")


@pytest.fixture(scope="module")
def stoppable(tmp_path_factory, sendmail):
    yield from started_sendmail(tmp_path_factory, "stoppable-sendmail")


@pytest.fixture
def hang_proxy(stoppable):
    stoppable.clear()
    starter = proxies_for(stoppable)
    yield next(starter)(**TIMEOUTS)
    next(starter, None)


def test_a_backend_that_accepts_but_never_greets_gives_421(hang_proxy, stoppable):
    stoppable.signal_daemon(signal.SIGSTOP)
    try:
        with RawClient(hang_proxy.port) as client:
            reply = client.reply(timeout=10)
            waited = time.monotonic() - client.connected_at
        assert reply.code == 421 and reply.text.startswith("4.3.2")
        assert waited < 5  # the connect timeout, not forever
        assert "no greeting" in hang_proxy.wait_event("backend_unavailable")["reason"]
    finally:
        stoppable.signal_daemon(signal.SIGCONT)
    with RawClient(hang_proxy.port) as client:  # and it serves again
        assert client.reply().code == 220


@pytest.mark.parametrize("where", ["MAIL", "end of data"])
def test_a_backend_that_stops_answering_mid_session_gives_421_not_250(hang_proxy, stoppable, where):
    with RawClient(hang_proxy.port) as client:
        assert client.reply().code == 220
        assert client.command("EHLO hang.example").code == 250
        if where == "end of data":
            assert client.command("MAIL FROM:<h@sender.example>").code == 250
            assert client.command("RCPT TO:<hana@example.test>").code == 250
            assert client.command("DATA").code == 354
            client.send(b"Subject: hang\r\n\r\nbody\r\n")
        assert stoppable.signal_sessions(signal.SIGSTOP) == 1
        try:
            started = time.monotonic()
            line = "MAIL FROM:<h@sender.example>" if where == "MAIL" else "."
            reply = client.command(line, timeout=10)
            waited = time.monotonic() - started
        finally:
            stoppable.signal_sessions(signal.SIGKILL)  # it must not wake and deliver later
        assert reply.code == 421 and reply.text.startswith("4.3.2"), reply
        assert waited < 5
        assert client.is_closed()
    event = hang_proxy.wait_event("backend_unavailable")
    assert "no reply from the backend within 1s" in event["reason"]
    assert stoppable.messages("hana") == []
