"""Client command lines: verb, argument, length limit and the address in MAIL/RCPT."""

from __future__ import annotations

import pytest

from greetproxy.smtp.commands import (
    RELAYED_VERBS,
    address_of,
    argument_of,
    line_limit,
    verb_of,
)


@pytest.mark.parametrize(
    ("line", "verb", "argument"),
    [
        (b"EHLO client.example", "EHLO", b"client.example"),
        (b"mail FROM:<a@b> SIZE=10", "MAIL", b"FROM:<a@b> SIZE=10"),
        (b"DATA", "DATA", b""),
        (b"HELO   spaced  ", "HELO", b"spaced"),
        (b"", "", b""),
        (b"\xffEHLO x", "\ufffdEHLO", b"x"),
    ],
)
def test_verb_and_argument(line: bytes, verb: str, argument: bytes) -> None:
    assert (verb_of(line), argument_of(line)) == (verb, argument)


@pytest.mark.parametrize(("verb", "limit"), [("MAIL", 1012), ("RCPT", 1012), ("EHLO", 512), ("", 512)])
def test_line_limit_leaves_room_for_mail_and_rcpt_parameters(verb: str, limit: int) -> None:
    assert line_limit(verb) == limit


@pytest.mark.parametrize(
    ("argument", "address"),
    [
        (b"FROM:<alice@example.test> SIZE=1000 BODY=8BITMIME", "alice@example.test"),
        (b"TO:<bob@example.test>", "bob@example.test"),
        (b"FROM:<>", ""),
        (b"FROM: <spaced@example.test>", "spaced@example.test"),
        (b"FROM:bare@example.test SIZE=1", "bare@example.test"),
        (b"TO:<caf\xc3\xa9@example.test>", "caf\u00e9@example.test"),
    ],
)
def test_address_of(argument: bytes, address: str) -> None:
    assert address_of(argument) == address


@pytest.mark.parametrize("verb", ["AUTH", "STARTTLS", "BDAT", "XCLIENT", "XFORWARD", "VERB", "ETRN", "TURN"])
def test_extension_verbs_are_not_relayed(verb: str) -> None:
    assert verb not in RELAYED_VERBS


def test_the_basic_verbs_are_relayed() -> None:
    assert {"HELO", "EHLO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT"} <= RELAYED_VERBS
