"""LineSplitter: command-line framing of client input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greetproxy.smtp.lines import Ending, Line, LineSplitter

LIMIT = 512


def collect(splitter: LineSplitter) -> list[Line]:
    lines = []
    while (line := splitter.next_line()) is not None:
        lines.append(line)
    return lines


def split(*chunks: bytes, limit: int = LIMIT) -> list[Line]:
    """Feed the chunks one at a time, draining lines after each, as the dialogue does."""
    splitter = LineSplitter(limit)
    lines = []
    for chunk in chunks:
        splitter.feed(chunk)
        lines += collect(splitter)
    return lines


def test_crlf_lines_are_split_without_their_terminator() -> None:
    assert split(b"EHLO a\r\nMAIL FROM:<a@b>\r\n") == [
        Line(b"EHLO a", Ending.CRLF),
        Line(b"MAIL FROM:<a@b>", Ending.CRLF),
    ]


def test_empty_crlf_line() -> None:
    assert split(b"\r\n") == [Line(b"", Ending.CRLF)]


def test_incomplete_line_is_held_back() -> None:
    splitter = LineSplitter(LIMIT)
    splitter.feed(b"NOOP\r")
    assert splitter.next_line() is None
    assert len(splitter) == 5


def test_bare_lf_ends_a_line_and_is_flagged() -> None:
    [line] = split(b"NOOP\n")
    assert line == Line(b"NOOP", Ending.BARE_LF)
    assert line.bare_newline


@pytest.mark.parametrize("data", [b"NO\rOP\r\n", b"NOOP\r\r\n", b"\rNOOP\r\n"])
def test_bare_cr_inside_a_crlf_line_is_flagged(data: bytes) -> None:
    [line] = split(data)
    assert line.ending is Ending.CRLF
    assert line.bare_newline


def test_clean_crlf_line_is_not_flagged() -> None:
    [line] = split(b"NOOP\r\n")
    assert not line.bare_newline


def test_line_fed_byte_by_byte() -> None:
    data = b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\n"
    assert split(*(data[i : i + 1] for i in range(len(data)))) == split(data)


def test_line_of_exactly_the_limit_passes() -> None:
    text = b"x" * (LIMIT - 2)
    assert split(text + b"\r\n") == [Line(text, Ending.CRLF)]


def test_too_long_complete_line_is_reported_with_its_first_limit_bytes() -> None:
    text = b"x" * (LIMIT - 1)  # one octet over the limit once CRLF is counted
    assert split(text + b"\r\nNOOP\r\n") == [
        Line(text + b"\r", Ending.TOO_LONG),
        Line(b"NOOP", Ending.CRLF),
    ]


def test_too_long_line_without_lf_is_reported_once_and_discarded_up_to_the_lf() -> None:
    head = b"MAIL FROM:<" + b"a" * 600
    lines = split(head, b"b" * 5000, b"c" * 5000, b">\r\nNOOP\r\n")
    assert lines == [Line(head[:LIMIT], Ending.TOO_LONG), Line(b"NOOP", Ending.CRLF)]


def test_too_long_line_whose_lf_arrives_in_a_much_later_feed() -> None:
    splitter = LineSplitter(LIMIT)
    splitter.feed(b"y" * (LIMIT + 1))
    assert splitter.next_line() == Line(b"y" * LIMIT, Ending.TOO_LONG)
    for _ in range(100):
        splitter.feed(b"z" * 1000)
        assert splitter.next_line() is None
    splitter.feed(b"zz\nRSET\r\nQU")
    assert collect(splitter) == [Line(b"RSET", Ending.CRLF)]
    assert splitter.take_buffer() == b"QU"


def test_line_after_a_too_long_one_is_intact_when_in_the_same_feed() -> None:
    lines = split(b"x" * 2000 + b"\r\nHELO a\r\n")
    assert [line.ending for line in lines] == [Ending.TOO_LONG, Ending.CRLF]
    assert lines[1].text == b"HELO a"


def test_take_buffer_returns_the_unconsumed_bytes_and_empties_the_splitter() -> None:
    splitter = LineSplitter(LIMIT)
    splitter.feed(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQU")
    assert splitter.next_line() == Line(b"DATA", Ending.CRLF)
    assert splitter.take_buffer() == b"Subject: x\r\n\r\nbody\r\n.\r\nQU"
    assert len(splitter) == 0
    splitter.feed(b"IT\r\n")
    assert collect(splitter) == [Line(b"IT", Ending.CRLF)]


def test_many_pipelined_lines_survive_the_lazy_compaction() -> None:
    commands = [b"RCPT TO:<user%d@example.test>" % n for n in range(10000)]  # well over 64 KiB
    lines = split(b"".join(command + b"\r\n" for command in commands))
    assert [line.text for line in lines] == commands


def test_memory_stays_bounded_for_10_mb_without_lf() -> None:
    splitter = LineSplitter(LIMIT)
    chunk = b"A" * 65536
    reported = []
    for _ in range(10 * 1024 * 1024 // len(chunk)):
        splitter.feed(chunk)
        assert len(splitter._buffer) <= LIMIT + len(chunk)  # the peak: what was kept plus one read
        reported += collect(splitter)
        assert len(splitter) <= LIMIT
    assert reported == [Line(b"A" * LIMIT, Ending.TOO_LONG)]


def reference_lines(data: bytes, limit: int) -> list[Line]:
    """What any chunking must produce: every LF-terminated line, then an over-long unfinished tail."""
    *complete, tail = data.split(b"\n")
    lines = []
    for text in complete:
        if len(text) + 1 > limit:
            lines.append(Line((text + b"\n")[:limit], Ending.TOO_LONG))
        elif text.endswith(b"\r"):
            lines.append(Line(text[:-1], Ending.CRLF))
        else:
            lines.append(Line(text, Ending.BARE_LF))
    if len(tail) > limit:
        lines.append(Line(tail[:limit], Ending.TOO_LONG))
    return lines


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"bc", b"defgh"]), max_size=60).map(b"".join),
    st.lists(st.integers(0, 400), max_size=10),
)
def test_property_any_chunking_gives_the_reference_lines(data: bytes, cuts: list[int]) -> None:
    bounds = [0, *sorted(cut for cut in cuts if cut <= len(data)), len(data)]
    chunks = [data[start:stop] for start, stop in zip(bounds, bounds[1:], strict=False)]
    assert split(*chunks, limit=8) == reference_lines(data, limit=8)
