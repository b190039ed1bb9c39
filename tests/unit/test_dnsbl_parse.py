"""DNSBL sites: postscreen's `domain[=filter][*weight]` syntax, filter matching, query names, answers."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from greetproxy.screening.dnsbl import (
    Site,
    answer_problem,
    c_ares_tries,
    parse_sites,
    query_name,
    reversed_name,
)

EXAMPLE = "zen.spamhaus.org=127.0.0.[2..11]*3, bl.spamcop.net*2, list.dnswl.org=127.0.[0..255].[1..3]*-5"


def test_the_postscreen_example_parses_to_three_sites() -> None:
    zen, spamcop, dnswl = parse_sites(EXAMPLE)
    assert zen == Site("zen.spamhaus.org", (((127, 127),), ((0, 0),), ((0, 0),), ((2, 11),)), 3)
    assert spamcop == Site("bl.spamcop.net", None, 2)
    assert dnswl == Site("list.dnswl.org", (((127, 127),), ((0, 0),), ((0, 255),), ((1, 3),)), -5)


def test_items_may_be_separated_by_commas_white_space_or_both() -> None:
    text = " a.example,b.example\tc.example ,\n d.example,,e.example "
    assert [site.domain for site in parse_sites(text)] == [f"{name}.example" for name in "abcde"]


def test_empty_text_is_no_sites() -> None:
    assert parse_sites("") == ()
    assert parse_sites(" , ") == ()


def test_weight_defaults_to_one_and_may_carry_a_sign() -> None:
    sites = parse_sites("a.example b.example*+4 c.example*-2 d.example*0")
    assert [site.weight for site in sites] == [1, 4, -2, 0]


def test_domain_is_lower_cased_and_loses_a_final_dot() -> None:
    assert parse_sites("ZEN.Spamhaus.ORG.*2") == (Site("zen.spamhaus.org", None, 2),)


def test_the_same_domain_may_appear_with_several_filters() -> None:
    sites = parse_sites("list.dnswl.org=127.0.[0..255].0*-2 list.dnswl.org=127.0.[0..255].[2;3]*-6")
    assert [site.domain for site in sites] == ["list.dnswl.org"] * 2
    assert sites[1].filter is not None and sites[1].filter[3] == ((2, 2), (3, 3))


def test_a_bracket_list_mixes_numbers_and_ranges() -> None:
    (site,) = parse_sites("bl.example=127.0.0.[2;4..6;10]")
    assert [n for n in range(256) if site.matches(f"127.0.0.{n}")] == [2, 4, 5, 6, 10]


def test_filter_matching() -> None:
    zen, spamcop, dnswl = parse_sites(EXAMPLE)
    assert zen.matches("127.0.0.2") and zen.matches("127.0.0.11")
    assert not zen.matches("127.0.0.1") and not zen.matches("127.0.0.12") and not zen.matches("127.0.1.2")
    assert dnswl.matches("127.0.15.1") and dnswl.matches("127.0.0.3")
    assert not dnswl.matches("127.0.15.0") and not dnswl.matches("127.1.15.1")


def test_without_a_filter_every_ipv4_address_matches_but_nothing_else() -> None:
    site = Site("bl.example")
    assert site.matches("127.0.0.2") and site.matches("127.0.0.200")
    assert not site.matches("not an address") and not site.matches("::1") and not site.matches("")


@pytest.mark.parametrize(
    ("item", "problem"),
    [
        ("=127.0.0.2", "no domain before '=' or '*'"),
        ("*3", "no domain before '=' or '*'"),
        ("bl..example", "'bl..example' is not a domain name (label '')"),
        ("-bl.example", "is not a domain name (label '-bl')"),
        ("bl.exa$mple", "is not a domain name (label 'exa$mple')"),
        ("x" * 60 + "." + "y" * 60 + "." + "z" * 60 + ".example", "too long for IPv6 queries"),
        ("bl.example=127.0.0", "the filter '127.0.0' must have 4 octets like 127.0.0.[2..11], not 3"),
        ("bl.example=127.0.0.2.1", "must have 4 octets"),
        ("bl.example=", "must have 4 octets"),
        ("bl.example=127.0.0.256", "'256' in the filter is not a number from 0 to 255"),
        ("bl.example=127.0.0.x", "'x' in the filter is not a number"),
        ("bl.example=127.0.0.-1", "'-1' in the filter is not a number"),
        ("bl.example=127.0.0.[2", "'[2' in the filter is not a number"),
        ("bl.example=127.0.0.[2..]", "'' in the filter is not a number"),
        ("bl.example=127.0.0.[2...5]", "'.5' in the filter is not a number"),
        ("bl.example=127.0.0.[]", "the filter octet '[]' has an empty element"),
        ("bl.example=127.0.0.[2;;3]", "the filter octet '[2;;3]' has an empty element"),
        ("bl.example=127.0.0.[9..2]", "the range '9..2' in '[9..2]' runs backwards"),
        ("bl.example=127.0.0.2=3", "'2=3' in the filter is not a number"),
        ("bl.example=10.0.0.[1..3]", "can never match: answers outside 127.0.0.0/8 are errors"),
        ("bl.example=127.255.255.[0..255]", "can never match: lists answer 127.255.255.x for errors"),
        ("bl.example*", "the weight after '*' must be an integer such as 3 or -5, not ''"),
        ("bl.example*x", "must be an integer such as 3 or -5, not 'x'"),
        ("bl.example*1.5", "not '1.5'"),
        ("bl.example*2*3", "not '2*3'"),
        ("bl.example*٣", "not '٣'"),  # int() would take an Arabic-Indic digit
    ],
)
def test_a_bad_item_is_named_with_what_is_wrong(item: str, problem: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_sites(f"good.example, {item}, other.example*2")
    message = str(raised.value)
    assert message.startswith(f"item {item!r}: ")
    assert problem in message


def test_a_filter_that_reaches_into_127_8_is_accepted_even_if_it_also_covers_other_addresses() -> None:
    (site,) = parse_sites("bl.example=[10;127].0.0.[0..255]")
    assert site.matches("127.0.0.2") and site.matches("10.0.0.2")  # answer_problem rejects the latter


# -- filter matching against a plain reference ---------------------------------------------------------

_ranges = st.lists(
    st.tuples(st.integers(0, 255), st.integers(0, 255)).map(sorted).map(tuple), min_size=1, max_size=4
)


def _octet_text(ranges: list[tuple[int, int]]) -> str:
    if len(ranges) == 1 and ranges[0][0] == ranges[0][1]:
        return str(ranges[0][0])
    return "[" + ";".join(str(low) if low == high else f"{low}..{high}" for low, high in ranges) + "]"


@given(
    octets=st.tuples(_ranges, _ranges, _ranges),
    answer=st.tuples(st.just(127), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
)
def test_filter_matching_agrees_with_a_reference(
    octets: tuple[list[tuple[int, int]], ...], answer: tuple[int, int, int, int]
) -> None:
    all_octets = ([(127, 127)], *octets)
    assume(not all(low == high == 255 for ranges in all_octets[1:3] for low, high in ranges))
    (site,) = parse_sites("bl.example=" + ".".join(_octet_text(ranges) for ranges in all_octets))
    expected = all(
        any(low <= value <= high for low, high in ranges)
        for value, ranges in zip(answer, all_octets, strict=True)
    )
    assert site.matches(".".join(map(str, answer))) is expected


@given(st.integers(0, 2**32 - 1))
def test_a_filterless_site_matches_every_address(number: int) -> None:
    assert Site("bl.example").matches(str(ipaddress.IPv4Address(number)))


# -- query names -------------------------------------------------------------------------------------------


def test_ipv4_query_name_is_the_reversed_octets() -> None:
    assert query_name("192.0.2.1", "bl.example") == "1.2.0.192.bl.example"
    assert reversed_name("127.0.0.2") == "2.0.0.127"


def test_ipv6_query_name_is_32_reversed_nibbles() -> None:
    name = query_name("2001:db8::1", "bl.example")
    assert name == "1." + "0." * 23 + "8.b.d.0.1.0.0.2.bl.example"
    assert len(name.removesuffix(".bl.example").split(".")) == 32


def test_ipv6_query_name_ignores_how_the_address_is_written() -> None:
    assert reversed_name("2001:DB8:0:0::1") == reversed_name("2001:db8::1")


def test_an_ipv4_mapped_ipv6_address_is_asked_about_as_ipv4() -> None:
    assert query_name("::ffff:192.0.2.1", "bl.example") == "1.2.0.192.bl.example"


@given(st.integers(0, 2**128 - 1))
def test_ipv6_nibbles_read_backwards_give_the_address(number: int) -> None:
    address = ipaddress.IPv6Address(number)
    assume(address.ipv4_mapped is None)
    nibbles = reversed_name(str(address)).split(".")
    assert int("".join(reversed(nibbles)), 16) == number


def test_an_invalid_address_is_refused() -> None:
    with pytest.raises(ValueError):
        reversed_name("not-an-ip")


# -- answers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", ["127.0.0.2", "127.0.0.11", "127.0.10.1", "127.1.2.3", "127.255.254.1"])
def test_answers_in_127_8_can_be_listings(answer: str) -> None:
    assert answer_problem(answer) is None


@pytest.mark.parametrize(
    ("answer", "problem"),
    [
        ("127.255.255.254", "public or open resolvers"),
        ("127.255.255.255", "too many queries"),
        ("127.255.255.252", "mistyped"),
        ("127.255.255.1", "127.255.255.0/24"),
        ("10.0.0.1", "outside 127.0.0.0/8"),
        ("128.0.0.1", "outside 127.0.0.0/8"),
        ("::1", "not an IPv4 address"),
    ],
)
def test_refusals_and_answers_outside_127_8_are_problems(answer: str, problem: str) -> None:
    found = answer_problem(answer)
    assert found is not None and problem in found


# -- how many tries c-ares gets ------------------------------------------------------------------------------


def _shortest_total(timeout: float, tries: int) -> float:
    """The least time c-ares may spend on `tries` tries when the server stays silent (ares_metrics.c and
    ares_calc_query_timeout: a floor of 250 ms, doubled each round, jittered down to half, capped)."""
    base = min(timeout, 0.25)
    return base + sum(max(base, min(base * 2**round_, timeout) / 2) for round_ in range(1, tries))


@pytest.mark.parametrize(("timeout", "tries"), [(0.1, 1), (0.25, 1), (0.5, 2), (1.0, 3), (10.0, 7)])
def test_c_ares_gets_enough_tries_to_fill_the_timeout(timeout: float, tries: int) -> None:
    assert c_ares_tries(timeout) == tries


@given(st.floats(0.01, 3600.0))
def test_c_ares_never_gives_up_before_the_timeout(timeout: float) -> None:
    tries = c_ares_tries(timeout)
    assert _shortest_total(timeout, tries) >= timeout
    assert tries == 1 or _shortest_total(timeout, tries - 1) < timeout  # and no try more than that


def test_sites_from_a_file_with_comments(tmp_path):
    from greetproxy.screening.dnsbl import load_sites

    path = tmp_path / "sites"
    path.write_text(
        "# lists\nzen.spamhaus.org=127.0.0.[2..11]*3  # heavy\n\nlist.dnswl.org*-5, bl.spamcop.net\n"
    )
    assert [(site.domain, site.weight) for site in load_sites(str(path))] == [
        ("zen.spamhaus.org", 3),
        ("list.dnswl.org", -5),
        ("bl.spamcop.net", 1),
    ]


def test_a_sites_file_that_is_missing_or_empty_is_a_config_error(tmp_path):
    from greetproxy.config import ConfigError, load

    with pytest.raises(
        ConfigError, match=r"^GREETPROXY_DNSBL_SITES='/nowhere/sites': .*cannot read /nowhere/sites"
    ):
        load({"GREETPROXY_DNSBL_SITES": "/nowhere/sites"})
    empty = tmp_path / "empty"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="names no list"):
        load({"GREETPROXY_DNSBL_SITES": str(empty)})
