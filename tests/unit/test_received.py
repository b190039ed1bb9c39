"""The Received: header written at the top of every relayed message."""

from __future__ import annotations

import email.utils
from datetime import UTC, datetime, timedelta, timezone

import pytest

from greetproxy.smtp.received import MAX_HELO, address_literal, clean_helo, received_header

WHEN = datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=1)))


def test_header_format() -> None:
    header = received_header(
        "client.example", "192.0.2.1", "proxy.example.test", "ESMTP", "abc123", when=WHEN
    )
    assert header == (
        b"Received: from client.example ([192.0.2.1])\r\n"
        b"\tby proxy.example.test (greetproxy) with ESMTP id abc123;\r\n"
        b"\tTue, 02 Jan 2024 03:04:05 +0100\r\n"
    )


def test_header_lines_are_crlf_and_folded() -> None:
    header = received_header("a", "192.0.2.1", "p", "SMTP", "id", when=WHEN)
    lines = header.split(b"\r\n")
    assert lines[-1] == b"" and all(line.startswith(b"\t") for line in lines[1:-1])
    assert b"\n" not in header.replace(b"\r\n", b"")


def test_date_defaults_to_now_with_a_zone() -> None:
    header = received_header("a", "192.0.2.1", "p", "SMTP", "id")
    date = email.utils.parsedate_to_datetime(header.split(b";\r\n\t")[1].strip().decode())
    assert date.tzinfo is not None
    assert abs(date - datetime.now(UTC)) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("ip", "literal"),
    [
        ("192.0.2.1", "[192.0.2.1]"),
        ("2001:db8::1", "[IPv6:2001:db8::1]"),
        ("::1", "[IPv6:::1]"),
        ("::ffff:192.0.2.1", "[IPv6:::ffff:192.0.2.1]"),
    ],
)
def test_address_literal(ip: str, literal: str) -> None:
    assert address_literal(ip) == literal


def test_ipv6_client_in_the_header() -> None:
    header = received_header("v6.example", "2001:db8::25", "p", "ESMTP", "id", when=WHEN)
    assert header.startswith(b"Received: from v6.example ([IPv6:2001:db8::25])\r\n")


@pytest.mark.parametrize(
    ("helo", "cleaned"),
    [
        ("mail.example.test", "mail.example.test"),
        ("[192.0.2.1]", "[192.0.2.1]"),
        ("two words", "two?words"),
        ("fake (by trusted.example)", "fake??by?trusted.example?"),
        ("back\\slash", "back?slash"),
        ("caf\u00e9.example", "caf?.example"),
        ("\u00e9\u00e9", "??"),
        ("tab\tand\x7f", "tab?and?"),
        ("line\r\nbreak", "line??break"),
        ("", "unknown"),
        ("   ", "unknown"),
        ("x; Mon, 1 Jan 2001", "x??Mon??1?Jan?2001"),
        ('<a@b>,"q"', "?a?b???q?"),
    ],
)
def test_helo_sanitising(helo: str, cleaned: str) -> None:
    assert clean_helo(helo) == cleaned


def test_helo_is_capped() -> None:
    assert clean_helo("a" * 1000) == "a" * MAX_HELO


def test_hostile_helo_cannot_break_or_forge_the_header() -> None:
    header = received_header("x\r\n\tby forged (y) ", "192.0.2.1", "p", "SMTP", "id", when=WHEN)
    assert header.count(b"\r\n") == 3
    assert header.startswith(b"Received: from x???by?forged??y? ([192.0.2.1])\r\n")
