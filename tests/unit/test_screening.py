"""The pre-greet test (sample, count, escape) and decide(), which combines findings."""

from __future__ import annotations

import pytest

from greetproxy.logs import escape
from greetproxy.screening import Action, Finding, Verdict, decide
from greetproxy.screening.pregreet import SAMPLE_LIMIT, Pregreet


def test_sample_is_capped_at_100_bytes_over_several_adds_and_count_is_the_total() -> None:
    early = Pregreet(after=0.25)
    chunks = [b"EHLO spam.example\r\n", b"x" * 60, b"y" * 60, b"z" * 10]
    for chunk in chunks:
        early.add(chunk)
    assert SAMPLE_LIMIT == 100
    assert early.sample == b"".join(chunks)[:100]
    assert early.count == sum(map(len, chunks)) == 149


def test_sample_keeps_everything_under_the_cap() -> None:
    early = Pregreet(after=0.0)
    early.add(b"QUIT\r\n")
    early.add(b"")
    assert (early.sample, early.count) == (b"QUIT\r\n", 6)


def test_one_large_add_is_capped_too() -> None:
    early = Pregreet(after=0.0)
    early.add(b"a" * 10_000)
    assert (len(early.sample), early.count) == (SAMPLE_LIMIT, 10_000)


def test_finding_reports_count_and_delay() -> None:
    early = Pregreet(after=1.23456)
    early.add(b"HELO x\r\n")
    assert early.finding(Action.DROP) == Finding("pregreet", Action.DROP, "8 bytes after 1.235s")


@pytest.mark.parametrize(
    ("data", "escaped"),
    [
        (b"EHLO a\r\n", "EHLO a\\r\\n"),
        (b"\t", "\\t"),
        (b"\x00", "\\0"),
        (b"\\", "\\\\"),
        (b"\x01\x1f\x7f\x80\xff", "\\x01\\x1f\\x7f\\x80\\xff"),
        (b"caf\xc3\xa9", "caf\\xc3\\xa9"),
        (b" ~", " ~"),
        (b"", ""),
    ],
    ids=repr,
)
def test_escape(data: bytes, escaped: str) -> None:
    assert escape(data) == escaped


def test_escape_output_is_printable_ascii_and_unambiguous() -> None:
    every_byte = bytes(range(256))
    text = escape(every_byte)
    assert text.isascii() and text.isprintable()
    assert escape(b"\\x41") != escape(b"A")  # a literal backslash cannot pose as an escape


@pytest.mark.parametrize("name", ["drop", "ENFORCE", "Ignore"])
def test_action_named(name: str) -> None:
    assert Action.named(name) is Action[name.upper()]


def finding(test: str, action: Action) -> Finding:
    return Finding(test, action, "detail")


def test_decide_with_no_findings_passes() -> None:
    verdict = decide([])
    assert verdict == Verdict(None, ())
    assert verdict.passed and verdict.reason == ""


@pytest.mark.parametrize(
    ("actions", "strongest"),
    [
        ([Action.IGNORE], Action.IGNORE),
        ([Action.IGNORE, Action.ENFORCE], Action.ENFORCE),
        ([Action.ENFORCE, Action.DROP, Action.IGNORE], Action.DROP),
        ([Action.DROP, Action.ENFORCE], Action.DROP),
    ],
)
def test_decide_picks_the_strongest_action(actions: list[Action], strongest: Action) -> None:
    findings = [finding(f"test{index}", action) for index, action in enumerate(actions)]
    verdict = decide(iter(findings))
    assert verdict.action is strongest
    assert verdict.findings == tuple(findings)


@pytest.mark.parametrize(
    ("action", "passed"), [(Action.IGNORE, True), (Action.ENFORCE, False), (Action.DROP, False)]
)
def test_only_ignore_findings_let_a_client_pass(action: Action, passed: bool) -> None:
    assert decide([finding("pregreet", action)]).passed is passed


def test_reason_names_the_tests_that_asked_for_the_chosen_action() -> None:
    verdict = decide(
        [finding("pregreet", Action.DROP), finding("dnsbl", Action.ENFORCE), finding("rbl", Action.DROP)]
    )
    assert verdict.reason == "pregreet, rbl"
