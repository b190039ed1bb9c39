"""deploy/sendmail: the guide's .mc snippet and access entries, built with m4 against Debian's cf
files into a sendmail that runs with greet_pause on, with greetproxy in front of it."""

from __future__ import annotations

import re
import smtplib
import time
from collections.abc import Iterator

import pytest

from tests.conftest import proxies_for
from tests.support.client import RawClient
from tests.support.proxy import ROOT, ProxyProcess, free_port
from tests.support.sendmail import DEBIAN_STOCK_ACCESS, Sendmail

GUIDE = ROOT / "deploy" / "sendmail"
SENDMAIL_GREET_PAUSE = 2.0  # seconds, sendmail's own FEATURE(greet_pause) for everyone not exempt


def guide_access() -> tuple[str, ...]:
    """Debian's stock map with its 127/8 lines replaced by the guide's entries."""
    lines = (GUIDE / "access.greetproxy").read_text().splitlines()
    guide = tuple(line for line in lines if line.strip() and not line.startswith("#"))
    return tuple(line for line in DEBIAN_STOCK_ACCESS if not re.match(r"\w+:127\t", line)) + guide


@pytest.fixture(scope="module")
def guide_sendmail(tmp_path_factory: pytest.TempPathFactory, sendmail: Sendmail) -> Iterator[Sendmail]:
    port = free_port()
    snippet = (
        f"FEATURE(`greet_pause', `{int(SENDMAIL_GREET_PAUSE * 1000)}')dnl\n"
        f"define(`greetproxy_port', `{port}')dnl\n"
        f"include(`{GUIDE / 'greetproxy.m4'}')dnl\n"
    )
    server = Sendmail(
        tmp_path_factory.mktemp("guide-sendmail"),
        port,
        access=guide_access(),
        extra_mc=snippet,
        mta_daemon=False,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def guide_proxy(guide_sendmail: Sendmail) -> Iterator[ProxyProcess]:
    guide_sendmail.clear()
    starter = proxies_for(guide_sendmail)
    yield next(starter)()
    next(starter, None)


def test_snippet_puts_the_mta_daemon_on_the_loopback_port_with_a_deep_backlog(guide_sendmail):
    cf = (guide_sendmail.workdir / "sendmail.cf").read_text()
    [line] = [line for line in cf.splitlines() if line.startswith("O DaemonPortOptions=")]
    assert line == (
        f"O DaemonPortOptions=Family=inet, Name=MTA-greetproxy, Port={guide_sendmail.port}, "
        "Addr=127.0.0.1, Listen=1024"
    )


def test_guide_setup_passes_the_guard_and_delivers_without_sendmails_pause(guide_proxy, guide_sendmail):
    assert guide_proxy.wait_event("relay_check")["status"] == "closed"
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", guide_proxy.port, local_hostname="guide.example", timeout=20) as client:
        banner_after = time.monotonic() - started
        client.sendmail(
            "a@sender.example", ["gus@example.test"], b"Subject: guide\r\n\r\nthrough the guide\r\n"
        )
    [raw] = guide_sendmail.wait_for_messages(1, user="gus")
    assert b"(greetproxy)" in raw and b"through the guide" in raw
    # GreetPause:127.0.0.2 0 exempts the proxy; a client of sendmail's own still waits its pause
    assert banner_after < SENDMAIL_GREET_PAUSE
    with RawClient(guide_sendmail.port, source="127.0.0.3") as direct:
        assert direct.reply(timeout=10).code == 220
        assert time.monotonic() - direct.connected_at >= SENDMAIL_GREET_PAUSE - 0.1


def test_guide_setup_refuses_relaying_through_the_proxy(guide_proxy, guide_sendmail):
    with smtplib.SMTP("127.0.0.1", guide_proxy.port, local_hostname="guide.example", timeout=20) as client:
        client.ehlo()
        client.mail("a@sender.example")
        code, text = client.rcpt("x@elsewhere.invalid")
    assert code == 550 and b"Relaying denied" in text
    assert guide_sendmail.relayed() == []


@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.0.2", "127.0.0.5", "::1"])
@pytest.mark.parametrize("which", ["guide", "test-map"])
def test_relaying_is_refused_through_the_proxy_for_every_client_address(
    which, source, guide_sendmail, backend
):
    """127.0.0.1, which sendmail always trusts, and 127.0.0.2, the proxy's own source address,
    included: sendmail sees the proxy's untrusted address whoever the client is."""
    server = guide_sendmail if which == "guide" else backend
    server.clear()
    v4, v6 = free_port(), free_port("::1")
    starter = proxies_for(server)
    proxy = next(starter)(listen=f"127.0.0.1:{v4},[::1]:{v6}")
    host, port = ("::1", v6) if ":" in source else ("127.0.0.1", v4)
    with smtplib.SMTP(
        host, port, local_hostname="relay.example", source_address=(source, 0), timeout=20
    ) as client:
        client.ehlo()
        client.mail("a@sender.example")
        code, text = client.rcpt("x@elsewhere.invalid")
    assert code == 550 and b"Relaying denied" in text, (code, text)
    assert proxy.wait_event("reject", command="RCPT")["by"] == "backend"
    assert server.relayed() == []
    next(starter, None)
