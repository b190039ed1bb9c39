"""filter_ehlo: the backend's EHLO reply as the client sees it."""

from __future__ import annotations

import pytest

from greetproxy.smtp.ehlo import extensions, filter_ehlo, greeting_line, keyword
from greetproxy.smtp.replies import Reply

SENDMAIL_EHLO = Reply(
    250,
    (
        b"mx.example.test Hello localhost [127.0.0.2], pleased to meet you",
        b"ENHANCEDSTATUSCODES",
        b"PIPELINING",
        b"8BITMIME",
        b"SIZE 1000000",
        b"DSN",
        b"ETRN",
        b"AUTH DIGEST-MD5 CRAM-MD5",
        b"STARTTLS",
        b"DELIVERBY",
        b"HELP",
        b"CHUNKING",
        b"PIPECONNECT",
        b"XCLIENT ADDR",
        b"XFORWARD NAME",
    ),
)


def test_sendmail_reply_names_the_proxy_and_keeps_only_the_relayed_extensions_in_order() -> None:
    filtered = filter_ehlo(SENDMAIL_EHLO, "proxy.example.test", "192.0.2.7")
    assert filtered == Reply(
        250,
        (
            b"proxy.example.test Hello [192.0.2.7], pleased to meet you",
            b"ENHANCEDSTATUSCODES",
            b"PIPELINING",
            b"8BITMIME",
            b"SIZE 1000000",
            b"DSN",
            b"DELIVERBY",
            b"HELP",
        ),
    )


def test_backend_name_and_client_address_never_reach_the_client() -> None:
    raw = filter_ehlo(SENDMAIL_EHLO, "proxy.example.test", "192.0.2.7").raw
    assert b"mx.example.test" not in raw and b"127.0.0.2" not in raw


def test_keywords_are_matched_case_insensitively_and_parameters_kept() -> None:
    answer = Reply(250, (b"mx", b"size 52428800", b"Pipelining", b"auth=LOGIN PLAIN", b"smtputf8"))
    assert filter_ehlo(answer, "p", "192.0.2.1").lines[1:] == (b"size 52428800", b"Pipelining", b"smtputf8")


def test_single_line_250_gets_just_the_proxy_greeting() -> None:
    assert filter_ehlo(Reply(250, (b"mx.example.test",)), "p.example", "2001:db8::1") == Reply(
        250, (b"p.example Hello [2001:db8::1], pleased to meet you",)
    )


@pytest.mark.parametrize(
    "answer",
    [
        Reply(501, (b"5.0.0 Invalid domain name",)),
        Reply(421, (b"4.3.2 mx.example.test shutting down",)),
        Reply(550, (b"5.7.1 first", b"5.7.1 STARTTLS")),
    ],
    ids=lambda answer: str(answer.code),
)
def test_non_250_reply_is_untouched(answer: Reply) -> None:
    assert filter_ehlo(answer, "proxy.example.test", "192.0.2.7") is answer


def test_greeting_line() -> None:
    assert (
        greeting_line("h.example", "198.51.100.9") == b"h.example Hello [198.51.100.9], pleased to meet you"
    )


def test_keyword_and_extensions() -> None:
    assert keyword(b"size 1000") == "SIZE"
    assert extensions(SENDMAIL_EHLO) >= {"STARTTLS", "SIZE", "XCLIENT", "AUTH"}
    assert "MX.EXAMPLE.TEST" not in extensions(SENDMAIL_EHLO)
