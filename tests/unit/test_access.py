"""The access list: file format, error messages, longest-prefix lookup, the loopback default."""

from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from greetproxy.screening.access import AccessAction, AccessEntry, AccessFileError, AccessList

EXPECTED = "expected permit, reject, screen or pause=<duration>"

PERMIT, REJECT, PAUSE = AccessAction.PERMIT, AccessAction.REJECT, AccessAction.PAUSE

SAMPLE = """\
# The networks we know.
192.0.2.0/24        permit
192.0.2.128/25      reject        # a bad neighbour inside it
192.0.2.200         pause=2.5s
198.51.100.0/24     pause=0       # no pause, but every test

2001:db8::/32       pause=500ms
2001:db8:1::/48     reject
2001:db8:1::25      permit
"""


def where(access: AccessList, ip: str) -> tuple[str, AccessAction, float | None] | None:
    entry = access.lookup(ip)
    return None if entry is None else (str(entry.network), entry.action, entry.pause)


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("192.0.2.1", ("192.0.2.0/24", PERMIT, None)),
        ("192.0.2.127", ("192.0.2.0/24", PERMIT, None)),
        ("192.0.2.128", ("192.0.2.128/25", REJECT, None)),
        ("192.0.2.200", ("192.0.2.200/32", PAUSE, 2.5)),
        ("192.0.2.201", ("192.0.2.128/25", REJECT, None)),
        ("198.51.100.9", ("198.51.100.0/24", PAUSE, 0.0)),
        ("192.0.3.1", None),
        ("2001:db8:ffff::1", ("2001:db8::/32", PAUSE, 0.5)),
        ("2001:db8:1:2::3", ("2001:db8:1::/48", REJECT, None)),
        ("2001:db8:1::25", ("2001:db8:1::25/128", PERMIT, None)),
        ("2001:DB8:1:0:0:0:0:25", ("2001:db8:1::25/128", PERMIT, None)),
        ("2001:db9::1", None),
        ("::ffff:192.0.2.200", ("192.0.2.200/32", PAUSE, 2.5)),
        ("::ffff:192.0.3.1", None),
    ],
)
def test_the_most_specific_network_wins(ip: str, expected: tuple[str, AccessAction, float | None]) -> None:
    assert where(AccessList.parse(SAMPLE), ip) == expected


def test_entries_keep_file_order_and_name_their_line() -> None:
    access = AccessList.parse(SAMPLE, "/etc/greetproxy/access")
    assert [entry.source for entry in access.entries] == [
        f"/etc/greetproxy/access:{line}" for line in (2, 3, 4, 5, 7, 8, 9)
    ]
    assert access.entries[2] == AccessEntry(
        ipaddress.ip_network("192.0.2.200/32"), PAUSE, 2.5, "/etc/greetproxy/access:4"
    )


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [("500ms", 0.5), ("2.5s", 2.5), ("3", 3.0), ("1m", 60.0), ("300s", 300.0), ("5m", 300.0), ("0", 0.0)],
)
def test_pause_durations(duration: str, seconds: float) -> None:
    assert AccessList.parse(f"192.0.2.0/24 pause={duration}").entries[0].pause == seconds


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"])
def test_loopback_is_permitted_by_default(ip: str) -> None:
    for access in (AccessList(), AccessList.parse("0.0.0.0/0 reject\n::/0 reject\n")):
        entry = access.lookup(ip)
        assert entry is not None
        assert (entry.action, entry.source) == (PERMIT, "default")


def test_an_entry_for_a_loopback_network_overrides_the_default() -> None:
    access = AccessList.parse("127.0.0.0/8 pause=1s\n127.0.0.2 reject\n::1 reject\n")
    assert where(access, "127.0.0.1") == ("127.0.0.0/8", PAUSE, 1.0)
    assert where(access, "127.0.0.2") == ("127.0.0.2/32", REJECT, None)
    assert where(access, "::1") == ("::1/128", REJECT, None)
    assert len(access.entries) == 3  # the defaults are not entries of the file
    narrower = AccessList.parse("127.0.0.0/24 reject\n")
    assert where(narrower, "127.0.0.9") == ("127.0.0.0/24", REJECT, None)
    assert where(narrower, "127.0.1.9") == ("127.0.0.0/8", PERMIT, None)


def test_empty_list_and_unknown_clients() -> None:
    access = AccessList.parse("\n# nothing yet\n   \n")
    assert access.entries == ()
    assert access.lookup("192.0.2.1") is None
    assert access.lookup("2001:db8::1") is None


def test_an_ipv6_zone_does_not_hide_the_address() -> None:
    assert where(AccessList.parse("fe80::/10 reject"), "fe80::1%eth0") == ("fe80::/10", REJECT, None)


def test_lookup_of_something_that_is_no_address_raises() -> None:
    with pytest.raises(ValueError):
        AccessList().lookup("unknown")


def test_a_list_cannot_be_changed() -> None:
    access = AccessList.parse(SAMPLE)
    with pytest.raises(dataclasses.FrozenInstanceError):
        access.entries = ()  # type: ignore[misc]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("192.0.2.0/24 allow", f"unknown action 'allow' ({EXPECTED})"),
        ("192.0.2.0/24 pause", f"unknown action 'pause' ({EXPECTED})"),
        ("192.0.2.0/24 Permit", f"unknown action 'Permit' ({EXPECTED})"),
        ("192.0.2.0/24", f"no action after 192.0.2.0/24 ({EXPECTED})"),
        ("192.0.2.1/24 permit", "192.0.2.1/24 has host bits set; did you mean 192.0.2.0/24?"),
        ("2001:db8::1/32 reject", "2001:db8::1/32 has host bits set; did you mean 2001:db8::/32?"),
        ("192.0.2.300 permit", "'192.0.2.300' is not an IP address or network such as 192.0.2.0/24"),
        ("192.0.2.0/33 permit", "'192.0.2.0/33' is not an IP address or network such as 192.0.2.0/24"),
        ("mail.example permit", "'mail.example' is not an IP address or network such as 192.0.2.0/24"),
        (
            "192.0.2.0/24 permit always",
            "unexpected 'always' after the action (one network and one action a line)",
        ),
        ("192.0.2.0/24 pause=", "pause=: expected a duration such as 500ms, 2.5s or 3 (seconds)"),
        ("192.0.2.0/24 pause=3x", "pause=3x: expected a duration such as 500ms, 2.5s or 3 (seconds)"),
        ("192.0.2.0/24 pause=301s", "pause=301s: expected at most 300s, as for GREETPROXY_GREET_PAUSE"),
        ("192.0.2.0/24 pause=1h", "pause=1h: expected at most 300s, as for GREETPROXY_GREET_PAUSE"),
        (
            "::ffff:192.0.2.0/120 permit",
            "::ffff:192.0.2.0/120 is IPv4-mapped and its clients are looked up as IPv4; write 192.0.2.0/24",
        ),
        ("192.0.2.0/24 reject  # again", "192.0.2.0/24 is listed already, at /etc/greetproxy/access:2"),
    ],
)
def test_a_bad_line_names_file_line_and_problem(line: str, problem: str) -> None:
    text = f"# header\n192.0.2.0/24 permit\n\n{line}\n198.51.100.0/24 permit\n"
    with pytest.raises(AccessFileError) as raised:
        AccessList.parse(text, "/etc/greetproxy/access")
    assert str(raised.value) == f"/etc/greetproxy/access:4: {problem}"


def test_load_reads_a_file_and_reports_its_path(tmp_path: Path) -> None:
    path = tmp_path / "access"
    path.write_bytes(
        b"# caf\xe9 (Latin-1) in a comment is harmless\n192.0.2.0/24 permit\n203.0.113.0/24 deny\n"
    )
    with pytest.raises(AccessFileError, match=rf"^{path}:3: unknown action 'deny' "):
        AccessList.load(path)
    path.write_text("192.0.2.0/24 permit\n")
    assert where(AccessList.load(path), "192.0.2.9") == ("192.0.2.0/24", PERMIT, None)
    assert AccessList.load(str(path)) == AccessList.load(path)


def test_a_missing_file_is_an_access_file_error(tmp_path: Path) -> None:
    with pytest.raises(AccessFileError, match=rf"^{tmp_path}/nowhere: No such file or directory$"):
        AccessList.load(tmp_path / "nowhere")


# -- against a brute-force reference ------------------------------------------------------------------

# Networks and probes drawn near a few anchors (loopback among them), so that they nest and overlap.
ANCHORS4 = [0x7F000001, 0xC0000201, 0x0A000000]
ANCHORS6 = [1, 0x20010DB8 << 96, 0xFE80 << 112]


def near(anchors: list[int], bits: int) -> st.SearchStrategy[int]:
    return st.builds(
        lambda anchor, noise: anchor ^ noise, st.sampled_from(anchors), st.integers(0, 2**bits - 1)
    )


networks4 = st.builds(
    lambda value, length: ipaddress.IPv4Network((value, length), strict=False),
    near(ANCHORS4, 12),
    st.integers(0, 32),
)
networks6 = st.builds(
    lambda value, length: ipaddress.IPv6Network((value, length), strict=False),
    near(ANCHORS6, 20),
    st.integers(0, 128),
)
probes = st.one_of(
    near(ANCHORS4, 14).map(lambda value: str(ipaddress.IPv4Address(value))),
    near(ANCHORS4, 14).map(lambda value: f"::ffff:{ipaddress.IPv4Address(value)}"),
    near(ANCHORS6, 22).map(lambda value: str(ipaddress.IPv6Address(value))),
)


def most_specific(entries: list[AccessEntry], ip: str) -> AccessEntry | None:
    address = ipaddress.ip_address(ip)
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    networks = {entry.network for entry in entries}
    defaults = [
        AccessEntry(ipaddress.ip_network(loopback), PERMIT, None, "default")
        for loopback in ("127.0.0.0/8", "::1/128")
        if ipaddress.ip_network(loopback) not in networks
    ]
    matching = [
        e for e in entries + defaults if e.network.version == address.version and address in e.network
    ]
    return max(matching, key=lambda entry: entry.network.prefixlen, default=None)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(networks4, networks6), max_size=40, unique=True),
    st.lists(probes, min_size=1, max_size=20),
)
def test_lookup_matches_the_most_specific_matching_network(networks: list, ips: list[str]) -> None:
    text = "".join(f"{network} pause={number}ms\n" for number, network in enumerate(networks))
    access = AccessList.parse(text, "generated")
    for ip in ips:
        assert access.lookup(ip) == most_specific(list(access.entries), ip), ip
