"""The private-sendmail harness itself: start, delivery, refusals, relaying, sessions, stop."""

from __future__ import annotations

import smtplib
import socket
import time
from pathlib import Path

import pytest

from tests.support import sendmail as harness
from tests.support.sendmail import Sendmail, free_port

PROXY_ADDRESS = "127.0.0.2"  # what the proxy connects from: sendmail must not trust it


@pytest.fixture
def mta(backend: Sendmail) -> Sendmail:
    """The run's shared instance, with no mail and no session left from an earlier test."""
    # A session lives on for a moment after its client's QUIT.
    deadline = time.monotonic() + 5
    while backend.session_count() and time.monotonic() < deadline:
        time.sleep(0.02)
    return backend


def connect(server: Sendmail, source: str = PROXY_ADDRESS) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", server.port, source_address=(source, 0), timeout=10)
    client.ehlo("client.test")
    return client


def daemon_pid(server: Sendmail) -> int:
    return int((server.workdir / "sendmail.pid").read_text().split()[0])


def test_greets_with_its_name_and_offers_8bitmime_and_size(mta: Sendmail) -> None:
    client = smtplib.SMTP(source_address=(PROXY_ADDRESS, 0), timeout=10)
    code, banner = client.connect("127.0.0.1", mta.port)
    assert code == 220
    assert banner.startswith(b"mx.example.test ESMTP Sendmail 8.17.1.9/")
    code, hello = client.ehlo("client.test")
    features = client.esmtp_features
    client.quit()
    assert code == 250
    assert hello.startswith(b"mx.example.test Hello [127.0.0.2]")
    assert {"enhancedstatuscodes", "pipelining", "8bitmime", "size", "dsn"} <= features.keys()
    assert features["size"] == "1000000"
    assert "smtputf8" not in features  # Debian's build lacks USE_EAI


def test_delivers_8bit_and_quoted_printable_bodies_byte_for_byte(mta: Sendmail) -> None:
    eight_bit = b"Subject: 8bit\r\n\r\ncaf\xc3\xa9 \xff\x80\r\n.leading dot\r\nFrom the start\r\n\r\nend\r\n"
    quoted = (
        b"Subject: qp\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n"
    )
    client = connect(mta)
    client.sendmail("sender@client.test", ["alice@example.test"], eight_bit, mail_options=["BODY=8BITMIME"])
    client.sendmail("sender@client.test", ["Bob@mx.example.test"], quoted)
    client.quit()

    [alice] = mta.wait_for_messages(1, user="alice")
    [bob] = mta.wait_for_messages(1, user="Bob")
    assert alice.endswith(eight_bit)
    assert bob.endswith(quoted)
    assert b"\r\nReceived: from client.test ([127.0.0.2])\r\n\tby mx.example.test" in alice
    assert mta.messages() == [alice, bob]
    assert mta.relayed() == []


def test_unknown_user_is_refused_at_rcpt(mta: Sendmail) -> None:
    client = connect(mta)
    client.mail("sender@client.test")
    code, reply = client.rcpt("unknown@example.test")
    client.quit()
    assert (code, reply) == (550, b"5.1.1 <unknown@example.test>... User unknown")


def test_relaying_is_refused_to_the_proxy_address(mta: Sendmail) -> None:
    client = connect(mta)
    client.mail("sender@client.test")
    code, reply = client.rcpt("x@elsewhere.invalid")
    client.quit()
    assert (code, reply) == (
        550,
        b"5.7.1 <x@elsewhere.invalid>... Relaying denied. IP name lookup failed [127.0.0.2]",
    )
    assert mta.relayed() == []


def test_127_0_0_1_may_always_relay_and_the_catch_all_counts_it(mta: Sendmail) -> None:
    client = connect(mta, source="127.0.0.1")
    client.mail("sender@client.test")
    assert client.rcpt("probe@relay-test.invalid") == (
        250,
        b"2.1.5 <probe@relay-test.invalid>... Recipient ok",
    )
    client.data(b"Subject: probe\r\n\r\nrelayed\r\n")
    client.quit()
    [message] = mta.relayed()
    assert message.endswith(b"\r\n\r\nrelayed\r\n")
    assert mta.messages() == []


def test_oversized_messages_are_refused(mta: Sendmail) -> None:
    client = connect(mta)
    code, reply = client.mail("sender@client.test", ["SIZE=2000000"])
    assert (code, reply) == (552, b"5.2.3 Message size exceeds fixed maximum message size (1000000)")
    client.rset()
    client.mail("sender@client.test")
    client.rcpt("alice@example.test")
    code, reply = client.data(b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1100)
    client.quit()
    assert (code, reply) == (552, b"5.2.3 Message exceeds maximum fixed size (1000000)")
    assert mta.messages() == []


def test_nul_bytes_are_refused(mta: Sendmail) -> None:
    client = connect(mta)
    client.mail("sender@client.test")
    client.rcpt("alice@example.test")
    code, reply = client.data(b"Subject: nul\r\n\r\na\x00b\r\n")
    client.quit()
    assert (code, reply) == (554, b"5.6.1 NUL byte not allowed")


def test_sessions_are_counted_and_killed_while_the_daemon_stays(mta: Sendmail) -> None:
    clients = [connect(mta) for _ in range(2)]
    assert mta.session_count() == 2
    assert mta.kill_sessions() == 2
    assert mta.session_count() == 0
    for client in clients:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()
        client.close()
    assert mta.is_running()
    connect(mta).quit()


def test_wait_for_messages_says_how_many_arrived(mta: Sendmail) -> None:
    with pytest.raises(AssertionError, match=r"expected 1 message\(s\) for nobody@example.test .* 0 arrived"):
        mta.wait_for_messages(1, timeout=0.2, user="nobody")


def test_debian_stock_access_lets_the_proxy_address_relay(mta: Sendmail, stock_sendmail: Sendmail) -> None:
    stock_sendmail.clear()
    client = connect(stock_sendmail)
    client.mail("sender@client.test")
    assert client.rcpt("x@elsewhere.invalid") == (250, b"2.1.5 <x@elsewhere.invalid>... Recipient ok")
    client.data(b"Subject: relay\r\n\r\nout\r\n")
    client.quit()
    assert len(stock_sendmail.relayed()) == 1
    assert mta.relayed() == []


def test_stop_ends_daemon_and_sessions_and_a_restart_works(tmp_path: Path) -> None:
    server = Sendmail(tmp_path, free_port())
    server.start()
    try:
        pid = daemon_pid(server)
        client = connect(server)  # left open: stop() must end this session too
        assert "starting daemon" in server.log()
    finally:
        server.stop()
    assert not server.is_running()
    assert not harness._group_alive(pid)  # nothing left of its process group
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
    server.stop()  # idempotent

    server.start()
    try:
        connect(server).quit()
    finally:
        server.stop()


def test_extra_mc_may_add_features(tmp_path: Path) -> None:
    server = Sendmail(tmp_path, free_port(), extra_mc="FEATURE(`greet_pause', `300')dnl")
    with server, socket.create_connection(("127.0.0.1", server.port), timeout=5) as early:
        early.sendall(b"EHLO early.test\r\n")  # before the greeting
        assert early.recv(1024).startswith(b"554 mx.example.test ESMTP not accepting messages")


def test_start_failure_includes_sendmails_complaint(tmp_path: Path) -> None:
    # Also proves that SMTPUTF8 cannot be switched on in this build.
    broken = Sendmail(tmp_path, free_port(), extra_mc="LOCAL_CONFIG\nO SmtpUTF8=True\n")
    with pytest.raises(RuntimeError, match="SmtpUTF8 set but no USE_EAI support"):
        broken.start()
    assert not broken.is_running()


def test_start_names_what_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "CF_DIR", tmp_path / "no-such-cf")
    assert not harness.sendmail_available()
    with pytest.raises(RuntimeError, match="missing: .*no-such-cf/m4/cf.m4"):
        Sendmail(tmp_path, free_port()).start()
