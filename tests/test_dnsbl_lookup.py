"""The DNSBL screen through aiodns against a DNS stub on 127.0.0.1, and its rules with a fake resolver.

Client addresses are from the documentation ranges; they only ever appear inside query names.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
import uvloop
from dnslib import DNSRecord

from greetproxy.screening import Action, Finding
from greetproxy.screening.dnsbl import (
    DnsblScore,
    DnsblScreen,
    DnsError,
    Listing,
    SiteError,
    make_resolver,
    parse_sites,
    query_name,
)
from tests.support.dns import DnsStub

T = TypeVar("T")
TIMEOUT = 0.5
SLACK = 0.3  # what score() may take beyond its timeout on a busy test machine
CLIENT = "192.0.2.10"


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run under uvloop, the loop the daemon runs: aiodns calls back into it from c-ares's thread."""

    async def main() -> T:
        return await scenario()

    return uvloop.run(main())


@pytest.fixture
def stub() -> Iterator[DnsStub]:
    with DnsStub() as server:
        for zone in ("bl.test", "bl2.test", "wl.test"):  # RFC 5782 test entry: 127.0.0.2 is listed
            server.set(f"2.0.0.127.{zone}", ["127.0.0.2"])
        server.set("*.refuse.test", ["127.255.255.254"])  # Spamhaus: query via a public resolver
        server.set("*.hijack.test", ["10.0.0.1"])  # outside 127/8: a resolver rewriting NXDOMAIN
        server.set("*.all.test", ["127.0.0.2"])  # a list that answers everything
        server.never_answer("dead.test")
        yield server


@contextlib.asynccontextmanager
async def screening(
    stub: DnsStub,
    sites: str,
    *,
    threshold: int = 1,
    allowlist_threshold: int | None = None,
    timeout: float = TIMEOUT,
) -> AsyncIterator[DnsblScreen]:
    resolver = make_resolver([("127.0.0.1", stub.port)], timeout)
    try:
        yield DnsblScreen(parse_sites(sites), threshold, allowlist_threshold, timeout, resolver)
    finally:
        await resolver.close()


async def warm_up(screen: DnsblScreen) -> None:
    """Fast answers first, so that c-ares's per-try timeout shrinks to its floor of 250 ms."""
    for number in range(10):
        await screen._resolver.a_records(query_name(f"198.51.100.{number}", "bl.test"))


def listed(stub: DnsStub, ip: str, domain: str, *answers: str) -> None:
    stub.set(query_name(ip, domain), list(answers) or ["127.0.0.2"])


# -- scoring ---------------------------------------------------------------------------------------------


def test_weights_of_matching_sites_are_summed_and_each_domain_is_asked_once(stub: DnsStub) -> None:
    sites = "bl.test=127.0.0.[2..11]*3 bl.test=127.0.0.4*5 bl.test=127.0.0.20*100 bl2.test*2 wl.test*-5"
    listed(stub, CLIENT, "bl.test", "127.0.0.2", "127.0.0.4")
    listed(stub, CLIENT, "bl2.test", "127.0.0.9")

    async def scenario() -> DnsblScore:
        async with screening(stub, sites) as screen:
            return await screen.score(CLIENT)

    result = run(scenario)
    assert result == DnsblScore(
        CLIENT,
        10,
        (
            Listing("bl.test", "127.0.0.2", 3),
            Listing("bl.test", "127.0.0.4", 5),
            Listing("bl2.test", "127.0.0.9", 2),
        ),
        (),
    )
    assert sorted(stub.queries) == sorted(
        query_name(CLIENT, domain) for domain in ("bl.test", "bl2.test", "wl.test")
    )


def test_a_site_adds_its_weight_once_however_many_answers_match(stub: DnsStub) -> None:
    listed(stub, CLIENT, "bl.test", "127.0.0.2", "127.0.0.3", "127.0.0.4")

    async def scenario() -> DnsblScore:
        async with screening(stub, "bl.test*2") as screen:
            return await screen.score(CLIENT)

    assert run(scenario).score == 2


def test_an_answer_outside_the_filter_is_not_a_listing_and_not_an_error(stub: DnsStub) -> None:
    listed(stub, CLIENT, "bl.test", "127.0.0.12")

    async def scenario() -> DnsblScore:
        async with screening(stub, "bl.test=127.0.0.[2..11]*3") as screen:
            return await screen.score(CLIENT)

    assert run(scenario) == DnsblScore(CLIENT, 0, (), ())


def test_threshold_finding_and_reply_name_the_lists(stub: DnsStub) -> None:
    listed(stub, CLIENT, "bl.test")
    listed(stub, CLIENT, "bl2.test")
    clean = "192.0.2.11"

    async def scenario() -> tuple[DnsblScreen, DnsblScore, DnsblScore]:
        async with screening(stub, "bl2.test*2 bl.test*3", threshold=5) as screen:
            return screen, await screen.score(CLIENT), await screen.score(clean)

    screen, blocked, passed = run(scenario)
    assert screen.blocked(blocked) and not screen.blocked(passed)
    assert screen.finding(blocked, Action.DROP) == Finding(
        "dnsbl", Action.DROP, "rank 5: bl2.test 127.0.0.2 (+2), bl.test 127.0.0.2 (+3)"
    )
    assert screen.finding(passed, Action.DROP) is None
    assert screen.reply_text(CLIENT, blocked) == (
        "5.7.1 Service unavailable; client [192.0.2.10] blocked using bl.test"
    )


def test_a_dnswl_listing_lowers_the_score_and_allowlists(stub: DnsStub) -> None:
    listed(stub, CLIENT, "wl.test", "127.0.15.2")
    listed(stub, CLIENT, "bl.test")
    other = "192.0.2.12"
    listed(stub, other, "wl.test", "127.0.15.0")  # outside the filter: no trust at all

    async def scenario() -> tuple[DnsblScreen, DnsblScore, DnsblScore]:
        async with screening(
            stub, "bl.test wl.test=127.0.[0..255].[1..3]*-5", allowlist_threshold=-1
        ) as screen:
            return screen, await screen.score(CLIENT), await screen.score(other)

    screen, trusted, untrusted = run(scenario)
    assert trusted.score == -4
    assert screen.allowlisted(trusted) and not screen.blocked(trusted)
    assert untrusted.score == 0 and not screen.allowlisted(untrusted)


@pytest.mark.parametrize(
    ("domain", "answer", "problem"),
    [
        ("refuse.test", "127.255.255.254", "public or open resolvers"),
        ("hijack.test", "10.0.0.1", "outside 127.0.0.0/8"),
    ],
)
def test_refusals_and_answers_outside_127_8_score_nothing_and_are_reported(
    stub: DnsStub, domain: str, answer: str, problem: str
) -> None:
    listed(stub, CLIENT, "bl.test")

    async def scenario() -> tuple[DnsblScreen, DnsblScore, DnsblScore]:
        async with screening(
            stub, f"bl.test*2 {domain}*5 {domain}=127.[0..255].[0..255].[0..255]*5"
        ) as screen:
            return screen, await screen.score(CLIENT), await screen.score("192.0.2.13")

    screen, first, second = run(scenario)
    assert first.score == 2 and first.listings == (Listing("bl.test", "127.0.0.2", 2),)
    (error,) = first.errors
    assert (error.domain, error.kind, error.answer) == (domain, "invalid_answer", answer)
    assert problem in error.detail
    assert second.score == 0
    assert screen.error_counts[domain]["invalid_answer"] == 2
    assert screen.error_counts["bl.test"] == {}


def test_one_refusal_among_the_answers_voids_the_whole_answer(stub: DnsStub) -> None:
    listed(stub, CLIENT, "bl.test", "127.0.0.2", "127.255.255.255")

    async def scenario() -> DnsblScore:
        async with screening(stub, "bl.test*3") as screen:
            return await screen.score(CLIENT)

    result = run(scenario)
    assert result.score == 0
    assert [(error.kind, error.answer) for error in result.errors] == [("invalid_answer", "127.255.255.255")]


def test_servfail_fails_open_and_is_reported(stub: DnsStub) -> None:
    listed(stub, CLIENT, "bl.test")
    stub.servfail(query_name(CLIENT, "bl2.test"))

    async def scenario() -> tuple[DnsblScreen, DnsblScore]:
        async with screening(stub, "bl.test bl2.test*10") as screen:
            return screen, await screen.score(CLIENT)

    screen, result = run(scenario)
    assert result.score == 1
    assert [(error.domain, error.kind) for error in result.errors] == [("bl2.test", "servfail")]
    assert screen.error_counts["bl2.test"]["servfail"] == 1


def test_nxdomain_and_no_data_are_not_listed_and_no_error(stub: DnsStub) -> None:
    stub.set(query_name(CLIENT, "bl2.test"), [])  # NOERROR without an A record

    async def scenario() -> DnsblScore:
        async with screening(stub, "bl.test bl2.test") as screen:
            return await screen.score(CLIENT)

    assert run(scenario) == DnsblScore(CLIENT, 0, (), ())


# -- time ----------------------------------------------------------------------------------------------


def test_score_returns_within_the_timeout_when_lists_are_slow_or_silent(stub: DnsStub) -> None:
    listed(stub, CLIENT, "bl.test")
    listed(stub, CLIENT, "bl2.test")

    async def scenario() -> tuple[DnsblScore, float]:
        async with screening(stub, "bl.test bl2.test*5 dead.test*5") as screen:
            await warm_up(screen)
            stub.delay("bl2.test", 3.0)
            started = time.monotonic()
            result = await screen.score(CLIENT)
            return result, time.monotonic() - started

    result, elapsed = run(scenario)
    assert TIMEOUT - 0.05 <= elapsed <= TIMEOUT + SLACK
    assert result.score == 1
    assert [(error.domain, error.kind) for error in result.errors] == [
        ("bl2.test", "timeout"),
        ("dead.test", "timeout"),
    ]


def test_a_list_slower_than_c_ares_per_try_timeout_still_counts_within_ours(stub: DnsStub) -> None:
    # After fast answers c-ares gives a try 250 ms; an answer the resolver needs 0.6 s for must still
    # arrive (the regression: timeout=2.0 with one try failed after 251 ms).
    listed(stub, CLIENT, "bl.test")
    stub.ready_after(query_name(CLIENT, "bl.test"), 0.6)

    async def scenario() -> tuple[DnsblScore, float]:
        async with screening(stub, "bl.test", timeout=1.2) as screen:
            await warm_up(screen)
            started = time.monotonic()
            result = await screen.score(CLIENT)
            return result, time.monotonic() - started

    result, elapsed = run(scenario)
    assert (result.score, result.errors) == (1, ())
    assert 0.55 <= elapsed <= 1.2 + SLACK


def test_a_late_joiner_waits_no_longer_than_the_first_callers_timeout(stub: DnsStub) -> None:
    async def scenario() -> float:
        async with screening(stub, "dead.test") as screen:
            first = asyncio.create_task(screen.score(CLIENT))
            await asyncio.sleep(TIMEOUT / 2)
            started = time.monotonic()
            await screen.score(CLIENT)
            await first
            return time.monotonic() - started

    assert run(scenario) <= TIMEOUT / 2 + SLACK


# -- sharing and caching -----------------------------------------------------------------------------------


def test_concurrent_scores_for_one_ip_share_one_query_per_domain(stub: DnsStub) -> None:
    listed(stub, CLIENT, "bl.test")
    stub.delay("bl.test", 0.1)  # keep the lookup open while the 20 callers arrive
    stub.delay("bl2.test", 0.1)

    async def scenario() -> list[DnsblScore]:
        async with screening(stub, "bl.test*2 bl2.test") as screen:
            results = await asyncio.gather(*(screen.score(CLIENT) for _ in range(20)))
            assert screen._pending == {}
            return results

    results = run(scenario)
    assert all(result == results[0] for result in results) and results[0].score == 2
    assert stub.count(query_name(CLIENT, "bl.test")) == 1
    assert stub.count(query_name(CLIENT, "bl2.test")) == 1


def test_an_ipv4_mapped_address_shares_the_lookup_of_the_ipv4_address(stub: DnsStub) -> None:
    listed(stub, CLIENT, "bl.test")
    stub.delay("bl.test", 0.1)

    async def scenario() -> list[DnsblScore]:
        async with screening(stub, "bl.test") as screen:
            return await asyncio.gather(screen.score(CLIENT), screen.score(f"::ffff:{CLIENT}"))

    plain, mapped = run(scenario)
    assert plain == mapped and plain.ip == CLIENT and plain.score == 1
    assert stub.queries == [query_name(CLIENT, "bl.test")]


def test_a_caller_that_gives_up_does_not_cancel_the_shared_lookup(stub: DnsStub) -> None:
    listed(stub, CLIENT, "bl.test")
    stub.delay("bl.test", 0.2)

    async def scenario() -> DnsblScore:
        async with screening(stub, "bl.test") as screen:
            leaving = asyncio.create_task(screen.score(CLIENT))
            staying = asyncio.create_task(screen.score(CLIENT))
            await asyncio.sleep(0.05)
            leaving.cancel()
            return await staying

    assert run(scenario).score == 1
    assert stub.count(query_name(CLIENT, "bl.test")) == 1


def test_nothing_is_cached_every_score_sees_the_current_answer(stub: DnsStub) -> None:
    name = query_name(CLIENT, "bl.test")
    nodata = query_name(CLIENT, "bl2.test")
    stub.set(nodata, [])

    async def scenario() -> list[int]:
        scores = []
        async with screening(stub, "bl.test=127.0.0.[2..11]*3 bl.test=127.0.0.4*5 bl2.test") as screen:
            scores.append((await screen.score(CLIENT)).score)  # NXDOMAIN and NODATA, with TTL 300
            stub.set(name, ["127.0.0.2"])
            stub.set(nodata, ["127.0.0.2"])
            scores.append((await screen.score(CLIENT)).score)
            stub.set(name, ["127.0.0.4"])
            scores.append((await screen.score(CLIENT)).score)
            stub.nxdomain(name)
            stub.nxdomain(nodata)
            scores.append((await screen.score(CLIENT)).score)
        return scores

    assert run(scenario) == [0, 4, 9, 0]
    assert stub.count(name) == 4 and stub.count(nodata) == 4


# -- self test -------------------------------------------------------------------------------------------


def test_self_test_warns_once_per_broken_list_and_not_for_good_ones(stub: DnsStub) -> None:
    sites = "bl.test=127.0.0.[2..11]*2 bl.test*-1 wl.test*-3 broken.test refuse.test hijack.test all.test"
    sites += " dead.test"

    async def scenario() -> tuple[list[str], float]:
        async with screening(stub, sites) as screen:
            started = time.monotonic()
            warnings = await screen.self_test()
            return warnings, time.monotonic() - started

    warnings, elapsed = run(scenario)
    assert warnings == [
        "broken.test: 127.0.0.2 test entry not listed: list broken or blocked for this resolver",
        "refuse.test: 127.0.0.2 test entry answered 127.255.255.254: "
        "the list refuses queries through public or open resolvers",
        "hijack.test: 127.0.0.2 test entry answered 10.0.0.1: "
        "outside 127.0.0.0/8: a resolver that rewrites answers, or a lapsed list domain",
        "all.test: 127.0.0.1 is listed (127.0.0.2), which it must never be: it lists everyone",
        "dead.test: 127.0.0.2 test query failed (timeout): list unreachable",
    ]
    assert elapsed <= TIMEOUT + SLACK


# -- IPv6 --------------------------------------------------------------------------------------------------


def test_an_ipv6_client_is_asked_about_in_nibble_format(stub: DnsStub) -> None:
    client = "2001:db8::25"
    name = "5.2." + "0." * 22 + "8.b.d.0.1.0.0.2.bl.test"
    stub.set(name, ["127.0.0.2"])

    async def scenario() -> DnsblScore:
        async with screening(stub, "bl.test*3") as screen:
            return await screen.score(client)

    result = run(scenario)
    assert (result.ip, result.score) == (client, 3)
    assert stub.queries == [name]


# -- the stub itself ---------------------------------------------------------------------------------------


def test_the_stub_answers_over_tcp_too(stub: DnsStub) -> None:
    answer = DNSRecord.parse(
        DNSRecord.question("2.0.0.127.bl.test").send("127.0.0.1", stub.port, tcp=True, timeout=2)
    )
    assert [str(record.rdata) for record in answer.rr] == ["127.0.0.2"]


# -- the rules, with a fake resolver -----------------------------------------------------------------------


class FakeResolver:
    def __init__(self, answers: dict[str, list[str] | BaseException | None]) -> None:
        self.answers = answers  # None: never answers
        self.asked: list[str] = []

    async def a_records(self, name: str) -> list[str]:
        self.asked.append(name)
        domain = name.split(".", 4)[4]
        answer = self.answers.get(domain, [])
        if answer is None:
            await asyncio.sleep(3600)
        if isinstance(answer, BaseException):
            raise answer
        return list(answer or [])


def fake_screen(answers: dict[str, list[str] | BaseException | None], sites: str, timeout: float = TIMEOUT):
    return DnsblScreen(parse_sites(sites), 1, None, timeout, FakeResolver(answers))


def test_any_resolver_failure_fails_open() -> None:
    screen = fake_screen(
        {
            "a.test": RuntimeError("resolver bug"),
            "b.test": DnsError("error", "connection refused"),
            "c.test": ["127.0.0.2"],
        },
        "a.test*5 b.test*5 c.test",
    )
    result = asyncio.run(screen.score(CLIENT))
    assert result.score == 1
    assert result.errors == (
        SiteError("a.test", "error", "RuntimeError('resolver bug')"),
        SiteError("b.test", "error", "connection refused"),
    )


def test_score_gives_up_on_a_resolver_that_never_returns() -> None:
    screen = fake_screen({"a.test": None, "b.test": ["127.0.0.2"]}, "a.test*5 b.test", timeout=0.2)

    async def scenario() -> tuple[DnsblScore, float, int]:
        started = time.monotonic()
        result = await screen.score(CLIENT)
        elapsed = time.monotonic() - started
        await asyncio.sleep(0)  # let the cancelled lookup finish
        return result, elapsed, len(asyncio.all_tasks())

    result, elapsed, tasks = asyncio.run(scenario())
    assert elapsed <= 0.2 + SLACK
    assert result.score == 1 and [error.kind for error in result.errors] == ["timeout"]
    assert tasks == 1  # only the scenario itself is left


def test_reply_names_the_first_of_equally_weighted_lists_in_config_order() -> None:
    screen = fake_screen(
        {"a.test": ["127.0.0.2"], "b.test": ["127.0.0.2"], "c.test": ["127.0.0.2"]},
        "a.test b.test*2 c.test*2",
    )
    result = asyncio.run(screen.score(CLIENT))
    assert screen.reply_text(CLIENT, result).endswith("blocked using b.test")


def test_reply_for_a_client_on_no_blocklist_is_a_mistake() -> None:
    screen = fake_screen({"w.test": ["127.0.0.2"]}, "w.test*-1")
    with pytest.raises(ValueError, match="not on any blocklist"):
        screen.reply_text(CLIENT, asyncio.run(screen.score(CLIENT)))


@pytest.mark.parametrize(
    ("sites", "threshold", "allowlist_threshold", "timeout", "problem"),
    [
        ("", 1, None, 1.0, "no DNSBL sites"),
        ("a.test", 0, None, 1.0, "at least 1, not 0"),
        ("a.test", 1, 0, 1.0, "must be negative, not 0"),
        ("a.test", 1, None, 0.0, "must be positive, not 0.0"),
    ],
)
def test_settings_that_would_block_or_allow_everyone_are_refused(
    sites: str, threshold: int, allowlist_threshold: int | None, timeout: float, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem):
        DnsblScreen(parse_sites(sites), threshold, allowlist_threshold, timeout, FakeResolver({}))


def test_the_resolver_must_be_made_inside_the_running_loop() -> None:
    with pytest.raises(RuntimeError):
        make_resolver([("127.0.0.1", 53)], 1.0)
