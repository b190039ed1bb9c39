"""BodyScanner: message-text framing after 354, strict CRLF.CRLF end, no smuggling."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greetproxy.smtp.body import BARE_NEWLINE, LONG_LINE, TEXT_LINE_LIMIT, BodyScanner

END = b"\r\n.\r\n"
PIPELINED = b"MAIL FROM:<next@example.test>\r\nRCPT TO:<rcpt@example.test>\r\n"
MESSAGE = b"Subject: hi\r\n\r\nline one\r\n..stuffed\r\n\r\nlast\r\n"


@dataclass
class Outcome:
    forwarded: bytes
    done: bool
    rest: bytes
    problem: str | None
    size: int


def scan(chunks: Iterable[bytes]) -> Outcome:
    """Feed chunks as the relay does: stop at the end of data, keep what follows as ``rest``."""
    scanner = BodyScanner()
    forwarded, rest, done = b"", b"", False
    for chunk in chunks:
        if done:
            rest += chunk
            continue
        step = scanner.feed(chunk)
        forwarded += step.forward
        done, rest = step.done, step.rest
    return Outcome(forwarded, done, rest, scanner.problem, scanner.size)


def pieces(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def has_bare_newline(data: bytes) -> bool:
    unpaired = data.replace(b"\r\n", b"")
    return b"\r" in unpaired or b"\n" in unpaired


def assert_one_message_at_most(forwarded: bytes) -> None:
    """What the backend sees: clean CRLF lines and, if anything, one end of data, at the very end."""
    assert not has_bare_newline(forwarded)
    framed = b"\r\n" + forwarded  # the text starts right after the DATA command's CRLF
    assert framed.count(END) <= 1
    if END in framed:
        assert framed.endswith(END)


def assert_clean_lines_before_the_problem(outcome: Outcome, wire: bytes) -> None:
    """A spoiled message: the backend got at most the clean whole lines before the bad one, no end."""
    assert outcome.problem is not None
    assert wire.startswith(outcome.forwarded)
    assert outcome.forwarded == b"" or outcome.forwarded.endswith(b"\r\n")
    assert not has_bare_newline(outcome.forwarded)
    assert not (b"\r\n" + outcome.forwarded).endswith(END)


def test_has_bare_newline_helper() -> None:
    assert not has_bare_newline(b"a\r\nb\r\n")
    assert all(has_bare_newline(data) for data in (b"a\nb", b"a\rb", b"\r\r\n", b"\r\n\n", b"\n\r"))


def test_clean_message_is_forwarded_byte_for_byte_and_pipelined_commands_are_rest() -> None:
    outcome = scan([MESSAGE + b".\r\n" + PIPELINED])
    assert outcome == Outcome(MESSAGE + b".\r\n", True, PIPELINED, None, len(MESSAGE))


def test_text_without_end_is_forwarded_line_by_line_and_the_partial_line_is_held() -> None:
    scanner = BodyScanner()
    step = scanner.feed(b"Subject: hi\r\n\r\npart")
    assert (step.forward, step.done) == (b"Subject: hi\r\n\r\n", False)
    assert scanner.size == len(step.forward)
    step = scanner.feed(b"ial\r\n")
    assert (step.forward, step.done) == (b"partial\r\n", False)


SPOILED = b"A\r\nbare\nlf\r\n.\r\n" + PIPELINED


def splits(wire: bytes) -> list:
    """The wire in two pieces at every possible point, and byte by byte."""
    halves = [pytest.param([wire[:point], wire[point:]], id=f"at{point}") for point in range(len(wire) + 1)]
    return [*halves, pytest.param(pieces(wire, 1), id="bytewise")]


@pytest.mark.parametrize("chunks", splits(MESSAGE + b".\r\n" + PIPELINED))
def test_clean_end_of_data_split_anywhere_gives_the_same_forwarded_bytes(chunks: list[bytes]) -> None:
    assert scan(chunks) == Outcome(MESSAGE + b".\r\n", True, PIPELINED, None, len(MESSAGE))


@pytest.mark.parametrize("chunks", splits(SPOILED))
def test_spoiled_end_of_data_split_anywhere_gives_the_same_end(chunks: list[bytes]) -> None:
    outcome = scan(chunks)
    assert (outcome.done, outcome.rest, outcome.problem) == (True, PIPELINED, BARE_NEWLINE)
    assert_clean_lines_before_the_problem(outcome, SPOILED)
    assert b"bare" not in outcome.forwarded


@pytest.mark.parametrize(
    "chunks", [[b".\r\nQUIT\r\n"], [b".", b"\r", b"\nQUIT\r\n"], [b"", b".\r\n", b"QUIT\r\n"]]
)
def test_empty_message(chunks: list[bytes]) -> None:
    assert scan(chunks) == Outcome(b".\r\n", True, b"QUIT\r\n", None, 0)


@pytest.mark.parametrize("line", [b"..", b"..foo", b".foo", b". ", b"...", b".\x00"])
@pytest.mark.parametrize("where", ["first", "middle"])
def test_lines_starting_with_a_dot_pass_unchanged_and_do_not_end_the_data(line: bytes, where: str) -> None:
    text = line + b"\r\nafter\r\n" if where == "first" else b"before\r\n" + line + b"\r\nafter\r\n"
    outcome = scan([text])
    assert (outcome.forwarded, outcome.done) == (text, False)
    assert scan([text + b".\r\n"]).forwarded == text + b".\r\n"


# The end-of-data variants of the 2023 SMTP smuggling research (SEC Consult), and a NUL decoy.
SMUGGLING_ENDS = [
    b"\n.\n",
    b"\n.\r\n",
    b"\r\n.\n",
    b"\r.\r",
    b"\r\n.\r",
    b"\r.\r\n",
    b"\n.\r",
    b"\r\n\x00.\r\n",
    b"\r\r\n.\r\r\n",
]
SMUGGLED = b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nsmuggled\r\n.\r\n"


@pytest.mark.parametrize("chunk_size", [1 << 20, 1, 2, 3, 7])
@pytest.mark.parametrize("variant", SMUGGLING_ENDS, ids=repr)
def test_smuggling_variant_never_shows_the_backend_two_messages(variant: bytes, chunk_size: int) -> None:
    body = b"Subject: a\r\n\r\nfirst" + variant + SMUGGLED
    outcome = scan(pieces(body + b"QUIT\r\n", chunk_size))
    assert_one_message_at_most(outcome.forwarded)
    assert outcome.done and outcome.rest == b"QUIT\r\n"  # the proxy and the client agree on the end
    if has_bare_newline(variant):
        assert outcome.problem == BARE_NEWLINE
        assert_clean_lines_before_the_problem(outcome, body)
        assert b"evil" not in outcome.forwarded
    else:  # the smuggled commands are text inside the single message
        assert outcome.problem is None
        assert outcome.forwarded == body


def test_nul_before_the_dot_does_not_end_the_data() -> None:
    outcome = scan([b"first\r\n\x00.\r\nstill text\r\n"])
    assert outcome == Outcome(b"first\r\n\x00.\r\nstill text\r\n", False, b"", None, 23)


@pytest.mark.parametrize("bad", [b"a\nb\r\n", b"a\rb\r\n", b"a\r\r\n", b"\n", b"\r\n\r"], ids=repr)
@pytest.mark.parametrize("chunk_size", [1 << 20, 1])
def test_bare_newline_spoils_the_message_and_the_rest_is_discarded_up_to_the_strict_end(
    bad: bytes, chunk_size: int
) -> None:
    wire = b"ok\r\n" + bad + b"more\n.\n\r\n.\r" + b"x" * 5000 + b"\r\n.\r\nQUIT\r\n"
    outcome = scan(pieces(wire, chunk_size))
    assert outcome.problem == BARE_NEWLINE
    assert outcome.done and outcome.rest == b"QUIT\r\n"
    assert_clean_lines_before_the_problem(outcome, wire)
    assert b"more" not in outcome.forwarded


def test_line_of_exactly_the_limit_passes() -> None:
    line = b"x" * (TEXT_LINE_LIMIT - 2) + b"\r\n"
    assert len(line) == 1000
    assert scan([line + line + b".\r\n"]) == Outcome(line + line + b".\r\n", True, b"", None, 2 * len(line))


@pytest.mark.parametrize("chunk_size", [1 << 20, 1, 999, 1000, 1001])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_line_one_octet_over_the_limit_spoils_the_message(chunk_size: int, where: str) -> None:
    long = b"x" * (TEXT_LINE_LIMIT - 1) + b"\r\n"
    text = {"first": long + b"a\r\n", "middle": b"a\r\n" + long + b"b\r\n", "last": b"a\r\n" + long}[where]
    outcome = scan(pieces(text + b".\r\nQUIT\r\n", chunk_size))
    assert outcome.problem == LONG_LINE
    assert outcome.done and outcome.rest == b"QUIT\r\n"
    assert_clean_lines_before_the_problem(outcome, text)
    assert b"x" * 10 not in outcome.forwarded


def test_ten_megabytes_without_lf_spoil_at_once_and_keep_memory_bounded() -> None:
    scanner = BodyScanner()
    steps = [scanner.feed(b"y" * 65536) for _ in range(160)]
    assert scanner.problem == LONG_LINE
    assert all(step.forward == b"" and not step.done for step in steps)
    assert len(scanner._carry) <= 4
    assert scanner.feed(b"\r\n.\r\nQUIT\r\n").rest == b"QUIT\r\n"


def test_size_counts_the_forwarded_text_without_the_end_marker() -> None:
    scanner = BodyScanner()
    sizes = []
    for chunk in (b"Subject: x\r\n", b"\r\nbo", b"dy\r\n..a\r\n", b".\r\n"):
        scanner.feed(chunk)
        sizes.append(scanner.size)
    assert sizes == [12, 14, 25, 25]
    assert scanner.size == len(b"Subject: x\r\n\r\nbody\r\n..a\r\n")


def test_size_of_a_spoiled_message_counts_only_what_was_forwarded() -> None:
    outcome = scan([b"ok\r\n", b"bad\n", b".\r\n", b"\r\n.\r\n"])
    assert outcome.problem == BARE_NEWLINE
    assert outcome.size == len(outcome.forwarded) == 4


# Property tests: bodies built from fragments that make ends, near-ends and long lines likely.
FRAGMENTS = [b"\r", b"\n", b".", b"\r\n", b"\r\n.", b".\r\n", END, b"a", b"\x00", b"x" * 333]
bodies = st.one_of(
    st.binary(max_size=300),
    st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.binary(max_size=5)), max_size=40).map(b"".join),
)


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    data = draw(bodies)
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return data, [data[start:stop] for start, stop in zip(bounds, bounds[1:], strict=False)]


def strict_end(data: bytes) -> int:
    """Where the dot of the first strict end of data sits, or -1 (the text starts a line)."""
    return (b"\r\n" + data).find(END)


def long_line(text: bytes) -> bool:
    return any(len(piece) + 1 > TEXT_LINE_LIMIT for piece in text.split(b"\n"))


@settings(max_examples=400, deadline=None)
@given(chunked())
def test_property_forwarded_text_is_clean_framed_once_and_a_prefix_of_the_input(
    case: tuple[bytes, list[bytes]],
) -> None:
    data, chunks = case
    outcome = scan(chunks)
    assert_one_message_at_most(outcome.forwarded)  # (a) and (b)
    assert data.startswith(outcome.forwarded)
    assert outcome.size == len(outcome.forwarded) - (3 if outcome.done and outcome.problem is None else 0)
    dot = strict_end(data)
    assert outcome.done == (dot >= 0)
    if dot < 0:
        return
    text = data[:dot]
    assert outcome.rest == data[dot + 3 :]
    if has_bare_newline(text) or long_line(text):
        assert_clean_lines_before_the_problem(outcome, data)
        if not long_line(text):
            assert outcome.problem == BARE_NEWLINE
        elif not has_bare_newline(text):
            assert outcome.problem == LONG_LINE
    else:  # (c)
        assert outcome == Outcome(data[: dot + 3], True, data[dot + 3 :], None, len(text))


@settings(max_examples=200, deadline=None)
@given(chunked())
def test_property_chunking_does_not_change_a_finished_outcome(case: tuple[bytes, list[bytes]]) -> None:
    data, chunks = case
    whole, split = scan([data]), scan(chunks)
    assert (split.done, split.rest) == (whole.done, whole.rest)
    if whole.problem is None:
        assert split == whole
    else:
        assert_clean_lines_before_the_problem(split, data)


def test_scanning_cost_is_linear_even_for_lines_just_under_the_limit() -> None:
    """A client must not be able to make each octet cost a scan of the whole line (event-loop DoS)."""
    chunk = (b"x" * (TEXT_LINE_LIMIT - 2) + b"\r\n") * 64  # 64000 octets of the longest lines allowed
    scanner = BodyScanner()
    started = time.process_time()
    for _ in range(160):  # about 10 MB
        assert len(scanner.feed(chunk).forward) == len(chunk)
    assert time.process_time() - started < 2.0
    assert scanner.problem is None
