"""ReplyParser, Reply and reply(): the backend's replies and the proxy's own."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greetproxy.smtp.replies import MAX_REPLY_LINE, MAX_REPLY_LINES, Reply, ReplyError, ReplyParser, reply

EHLO_REPLY = b"250-mx.example.test Hello [192.0.2.1]\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


def parse(*chunks: bytes) -> list[Reply]:
    parser = ReplyParser()
    replies = []
    for chunk in chunks:
        parser.feed(chunk)
        while (answer := parser.next_reply()) is not None:
            replies.append(answer)
    return replies


def test_single_line_reply() -> None:
    assert parse(b"220 mx.example.test ESMTP Sendmail\r\n") == [
        Reply(220, (b"mx.example.test ESMTP Sendmail",))
    ]


def test_multi_line_reply() -> None:
    assert parse(EHLO_REPLY) == [
        Reply(250, (b"mx.example.test Hello [192.0.2.1]", b"PIPELINING", b"8BITMIME"))
    ]


def test_nothing_until_the_final_line() -> None:
    parser = ReplyParser()
    parser.feed(b"250-first\r\n250-second\r\n250 la")
    assert parser.next_reply() is None
    parser.feed(b"st\r\n")
    assert parser.next_reply() == Reply(250, (b"first", b"second", b"last"))
    assert parser.next_reply() is None


@pytest.mark.parametrize("size", [1, 2, 5, 13])
def test_reply_split_across_feeds(size: int) -> None:
    chunks = [EHLO_REPLY[i : i + size] for i in range(0, len(EHLO_REPLY), size)]
    assert parse(*chunks) == parse(EHLO_REPLY)


def test_pipelined_replies_come_out_one_by_one() -> None:
    assert parse(b"250 2.1.0 ok\r\n550 5.1.1 no\r\n354 go\r\n") == [
        Reply(250, (b"2.1.0 ok",)),
        Reply(550, (b"5.1.1 no",)),
        Reply(354, (b"go",)),
    ]


@pytest.mark.parametrize("line", [b"250\r\n", b"250\n"])
def test_bare_code_line_is_a_final_line_with_empty_text(line: bytes) -> None:
    assert parse(line) == [Reply(250, (b"",))]


def test_bare_lf_line_endings_are_accepted() -> None:
    assert parse(b"250-a\n250 b\n") == [Reply(250, (b"a", b"b"))]


@pytest.mark.parametrize(
    "line",
    [
        b"hello\r\n",
        b"25 short\r\n",
        b"2500 long\r\n",
        b"250x\r\n",
        b"150 early\r\n",
        b"650 late\r\n",
        b"\r\n",
    ],
    ids=repr,
)
def test_malformed_line_raises(line: bytes) -> None:
    with pytest.raises(ReplyError, match="not an SMTP reply line"):
        parse(line)


def test_code_change_inside_a_multi_line_reply_raises() -> None:
    with pytest.raises(ReplyError, match="code changed"):
        parse(b"250-first\r\n251 second\r\n")


def test_overlong_line_without_newline_raises() -> None:
    with pytest.raises(ReplyError, match="too long"):
        parse(b"250 " + b"x" * MAX_REPLY_LINE)


def test_overlong_complete_line_raises() -> None:
    with pytest.raises(ReplyError):
        parse(b"250 " + b"x" * MAX_REPLY_LINE + b"\r\n")


def test_too_many_lines_raise() -> None:
    with pytest.raises(ReplyError, match="too many lines"):
        parse(b"250-x\r\n" * (MAX_REPLY_LINES + 1) + b"250 x\r\n")


@pytest.mark.parametrize(
    "wire", [EHLO_REPLY, b"221 2.0.0 closing connection\r\n", b"250-\r\n250 \r\n"], ids=repr
)
def test_raw_round_trips(wire: bytes) -> None:
    [answer] = parse(wire)
    assert answer.raw == wire


def test_raw_of_a_bare_code_line_gains_a_space() -> None:
    [answer] = parse(b"250\r\n")
    assert answer.raw == b"250 \r\n"


def test_text_str_and_is_error() -> None:
    answer = Reply(451, (b"4.3.0 first", b"4.3.0 caf\xc3\xa9 \xff"))
    assert answer.text == "4.3.0 first / 4.3.0 caf\u00e9 \ufffd"
    assert str(answer) == "451 4.3.0 first / 4.3.0 caf\u00e9 \ufffd"
    assert answer.is_error
    assert not Reply(354, (b"go",)).is_error


def test_reply_formats_one_line_of_the_proxys_own() -> None:
    assert reply(554, "5.7.1 go away") == b"554 5.7.1 go away\r\n"


def test_control_characters_in_reply_text_are_replaced():
    """sendmail strips the 8th bit of what it echoes: a client's 0x8d comes back as a bare CR."""
    parser = ReplyParser()
    parser.feed(b"553 5.0.0 fuzz\xc9\xc6\rmh\x06\x1b[31m\tend\r\n")
    reply = parser.next_reply()
    assert reply.raw == b"553 5.0.0 fuzz\xc9\xc6?mh??[31m\tend\r\n"


REPLY_RAW = re.compile(
    rb"^(?:[2-5]\d\d-[\x09\x20-\x7e\x80-\xff]*\r\n)*[2-5]\d\d [\x09\x20-\x7e\x80-\xff]*\r\n$"
)


@given(st.binary(max_size=600), st.lists(st.integers(min_value=1, max_value=50), max_size=20))
def test_any_backend_bytes_give_well_formed_replies_or_a_reply_error(data, cuts):
    """Whatever the backend sends, in whatever pieces: each reply handed on is well-formed SMTP."""
    parser = ReplyParser()
    position = 0
    pieces = []
    for cut in cuts:
        pieces.append(data[position : position + cut])
        position += cut
    pieces.append(data[position:])
    try:
        for piece in pieces:
            parser.feed(piece)
            while (answer := parser.next_reply()) is not None:
                assert REPLY_RAW.match(answer.raw), answer.raw
    except ReplyError:
        pass


@given(
    st.integers(min_value=200, max_value=599),
    st.lists(st.binary(max_size=60).map(lambda text: text.replace(b"\n", b"")), min_size=1, max_size=5),
    st.integers(min_value=1, max_value=40),
)
def test_a_reply_reads_the_same_in_any_chunking(code, texts, size):
    wire = b"".join(
        b"%d%s%s\r\n" % (code, b" " if index == len(texts) - 1 else b"-", text)
        for index, text in enumerate(texts)
    )
    whole, chunked = ReplyParser(), ReplyParser()
    whole.feed(wire)
    expected = whole.next_reply()
    for start in range(0, len(wire), size):
        chunked.feed(wire[start : start + size])
    assert chunked.next_reply() == expected
