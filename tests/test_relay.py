"""Accepted sessions reach the real sendmail; every answer about the mail is sendmail's own."""

from __future__ import annotations

import asyncio
import email
import re
import smtplib
import subprocess

import aiosmtplib
import pytest

from tests.conftest import PROXY_HOSTNAME
from tests.support.client import RawClient

DOMAIN = "example.test"


def greeted(proxy, helo: str = "client.example") -> RawClient:
    client = RawClient(proxy.port)
    assert client.reply().code == 220
    assert client.command(f"EHLO {helo}").code == 250
    return client


def test_polite_delivery_arrives_intact_with_received_header(proxy, backend):
    body = b"Subject: polite\r\nFrom: a@sender.example\r\n\r\nline one\r\n.dot line\r\nlast\r\n"
    with smtplib.SMTP("127.0.0.1", proxy.port, local_hostname="polite.example", timeout=10) as client:
        refused = client.sendmail("a@sender.example", [f"bob@{DOMAIN}"], body)
    assert refused == {}
    [raw] = backend.wait_for_messages(1, user="bob")
    message = email.message_from_bytes(raw)
    assert message["Subject"] == "polite"
    ours = [header for header in message.get_all("Received") if "greetproxy" in header]
    assert len(ours) == 1
    assert re.search(
        r"from polite\.example \(\[127\.0\.0\.1\]\)\s+by proxy\.example\.test \(greetproxy\) "
        r"with ESMTP id ([0-9a-f]{12});",
        ours[0],
    ), ours[0]
    session_id = re.search(r"id ([0-9a-f]{12});", ours[0]).group(1)
    assert proxy.wait_event("message", session=session_id)["reply"].startswith("250")
    # smtplib stuffed the dot, the proxy passed it on, sendmail removed it again
    assert raw.endswith(b"\r\n\r\nline one\r\n.dot line\r\nlast\r\n")


def test_aiosmtplib_delivery(proxy, backend):
    async def send() -> None:
        async with aiosmtplib.SMTP(
            hostname="127.0.0.1", port=proxy.port, start_tls=False, local_hostname="aio.example"
        ) as client:
            await client.sendmail("a@sender.example", [f"carol@{DOMAIN}"], b"Subject: aio\r\n\r\nhello\r\n")

    asyncio.run(send())
    [raw] = backend.wait_for_messages(1, user="carol")
    assert b"Subject: aio" in raw


def test_swaks_delivery(proxy, backend):
    result = subprocess.run(
        [
            "swaks",
            "--server",
            f"127.0.0.1:{proxy.port}",
            "--from",
            "s@sender.example",
            "--to",
            f"dave@{DOMAIN}",
            "--helo",
            "swaks.example",
            "--header",
            "Subject: swaks",
            "--body",
            "via swaks",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [raw] = backend.wait_for_messages(1, user="dave")
    assert b"Subject: swaks" in raw and b"via swaks" in raw


def test_greeting_and_ehlo_name_the_proxy_and_hide_unrelayable_extensions(proxy):
    with RawClient(proxy.port) as client:
        banner = client.reply()
        assert banner == (220, f"{PROXY_HOSTNAME} ESMTP")
        code, text = client.command("EHLO client.example")
        lines = text.splitlines()
        assert code == 250 and lines[0].startswith(PROXY_HOSTNAME)
        keywords = {line.split()[0].upper() for line in lines[1:]}
        assert {"PIPELINING", "8BITMIME", "SIZE", "ENHANCEDSTATUSCODES", "DSN"} <= keywords
        assert not keywords & {
            "AUTH",
            "STARTTLS",
            "CHUNKING",
            "PIPECONNECT",
            "XCLIENT",
            "XFORWARD",
            "VERB",
            "ETRN",
        }
        assert client.command("STARTTLS").code == 502
        assert client.command("BDAT 10 LAST").code == 502


def direct_reply(backend, *commands: str):
    """What sendmail itself answers a client at the proxy's source address."""
    with RawClient(backend.port, source="127.0.0.2") as client:
        client.reply()
        client.command("EHLO client.example")
        answers = [client.command(command) for command in commands]
        client.command("QUIT")
    return answers[-1]


@pytest.mark.parametrize(
    "recipient, expected_code",
    [(f"unknown@{DOMAIN}", 550), ("someone@elsewhere.invalid", 550)],
    ids=["unknown_user", "relaying_denied"],
)
def test_backend_refusals_are_relayed_verbatim(proxy, backend, recipient, expected_code):
    direct = direct_reply(backend, "MAIL FROM:<a@sender.example>", f"RCPT TO:<{recipient}>")
    with greeted(proxy) as client:
        assert client.command("MAIL FROM:<a@sender.example>").code == 250
        through_proxy = client.command(f"RCPT TO:<{recipient}>")
    assert through_proxy == direct
    assert through_proxy.code == expected_code
    event = proxy.wait_event("reject", command="RCPT")
    assert event["code"] == expected_code and event["address"] == recipient and event["by"] == "backend"
    assert backend.relayed() == []


def test_null_sender_is_delivered(proxy, backend):
    with greeted(proxy) as client:
        assert client.command("MAIL FROM:<>").code == 250
        assert client.command(f"RCPT TO:<bounce@{DOMAIN}>").code == 250
        assert client.command("DATA").code == 354
        assert client.command(b"Subject: bounce\r\n\r\nnull sender\r\n.").code == 250
    [raw] = backend.wait_for_messages(1, user="bounce")
    assert b"null sender" in raw


def test_pipelined_commands_are_answered_in_order(proxy, backend):
    with greeted(proxy) as client:
        client.send(
            b"MAIL FROM:<p@sender.example>\r\nRCPT TO:<one@example.test>\r\n"
            b"RCPT TO:<unknown@example.test>\r\n"
            b"RCPT TO:<two@example.test>\r\nDATA\r\n"
        )
        answers = [client.reply() for _ in range(5)]
        assert [answer.code for answer in answers] == [250, 250, 550, 250, 354]
        assert "one@example.test" in answers[1].text and "two@example.test" in answers[3].text
        client.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nRSET\r\nQUIT\r\n")
        assert [client.reply().code for _ in range(3)] == [250, 250, 221]
    assert len(backend.wait_for_messages(1, user="one")) == 1
    assert len(backend.wait_for_messages(1, user="two")) == 1


def test_eight_bit_text_arrives_byte_for_byte(proxy, backend):
    text = "Grüße aus Köln — 日本語 ✓".encode()
    body = (
        b"Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    )
    body += text + b"\r\n" + bytes(range(0x80, 0x100)) + b"\r\n"
    with greeted(proxy) as client:
        assert client.command("MAIL FROM:<a@sender.example> BODY=8BITMIME").code == 250
        assert client.command(f"RCPT TO:<eight@{DOMAIN}>").code == 250
        assert client.command("DATA").code == 354
        assert client.command(body + b".").code == 250
    [raw] = backend.wait_for_messages(1, user="eight")
    assert raw.replace(b"\r\n", b"\n").endswith(body.replace(b"\r\n", b"\n"))


def test_message_over_backend_size_gets_backends_552(proxy, backend):
    big = b"Subject: big\r\n\r\n" + (b"x" * 998 + b"\r\n") * 1100  # about 1.1 MB, sendmail's limit is 1 MB
    with greeted(proxy) as client:
        assert client.command("MAIL FROM:<a@sender.example>").code == 250
        assert client.command(f"RCPT TO:<big@{DOMAIN}>").code == 250
        assert client.command("DATA").code == 354
        answer = client.command(big + b".", timeout=30)
        assert answer.code == 552, answer
        assert client.command("NOOP").code == 250
    assert backend.messages(user="big") == []


def test_message_text_streams_through_without_growing_memory(proxy, backend):
    """5 MB of text pass through while the proxy's RSS grows by far less than that."""

    def rss_kb() -> int:
        with open(f"/proc/{proxy.pid}/status") as status:
            return int(next(line for line in status if line.startswith("VmRSS")).split()[1])

    chunk = (b"y" * 998 + b"\r\n") * 100
    with greeted(proxy) as client:
        client.command("MAIL FROM:<a@sender.example>")
        client.command(f"RCPT TO:<stream@{DOMAIN}>")
        assert client.command("DATA").code == 354
        client.send(b"Subject: stream\r\n\r\n" + chunk)
        before = rss_kb()
        for _ in range(50):
            client.send(chunk)
        answer = client.command(b".", timeout=60)
        grown = rss_kb() - before
    assert answer.code == 552  # sendmail read all 5 MB, then applied its 1 MB limit
    assert grown < 1500, f"RSS grew by {grown} KB for a 5 MB message"
