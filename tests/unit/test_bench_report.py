"""The pure parts of bench/: percentiles, the Markdown tables, the load generator's mix and its
saturation verdict. No sockets, no sendmail, nothing timed."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from bench.load import Plan, kind_sequence, loopback_sources, message, saturation
from bench.report import (
    figure,
    markdown_table,
    percentile,
    render_markdown,
    size_text,
    summary,
    summary_table,
)


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]  # order does not matter
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("q", [-1, 101])
def test_percentile_refuses_a_rank_outside_0_to_100(q: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], q)


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summary() -> None:
    assert summary([]) == {"count": 0}
    stats = summary([float(value) for value in range(1, 101)])
    assert stats["count"] == 100 and stats["min"] == 1 and stats["max"] == 100
    assert stats["p50"] == pytest.approx(50.5)
    assert stats["p99"] == pytest.approx(99.01)


def test_markdown_table_formats_numbers_and_escapes_bars() -> None:
    text = markdown_table(["N", "what", "ratio"], [[20000, "a|b", 0.95123], [5, "x\ny", 1234.5]])
    assert text.splitlines() == [
        "| N | what | ratio |",
        "|---|---|---|",
        "| 20,000 | a\\|b | 0.951 |",
        "| 5 | x y | 1,234 |",
    ]


def test_markdown_table_needs_a_cell_per_column() -> None:
    with pytest.raises(ValueError):
        markdown_table(["a", "b"], [[1]])


def test_summary_table_numbers_scenarios_and_marks_targets() -> None:
    results = [
        {
            "scenario": "held",
            "title": "Held connections",
            "figures": [figure("memory", "2.1 KB", "<= 4 KB", True)],
        },
        {
            "scenario": "flood",
            "number": 2,
            "title": "Bot flood",
            "figures": [figure("cpu", "150 us", "<= 30 us", False), figure("rate", "5,000/s")],
        },
    ]
    lines = summary_table(results).splitlines()
    assert lines[2] == "| 1. Held connections | memory | 2.1 KB | <= 4 KB | met |"
    assert lines[3] == "| 2. Bot flood | cpu | 150 us | <= 30 us | **missed** |"
    assert lines[4] == "| 2. Bot flood | rate | 5,000/s | – | – |"


def test_render_markdown_has_the_machine_the_summary_and_the_details() -> None:
    result = {
        "scenario": "banner",
        "number": 3,
        "title": "Banner accuracy",
        "figures": [figure("p99", "3.1 ms", "<= 50 ms", True)],
        "tables": [{"title": "Deviation", "columns": ["", "ms"], "rows": [["p99", "3.1"]]}],
        "notes": ["pause 5 s"],
    }
    machine = {"cpus": 2, "cpu_model": "Test CPU", "memory_gb": 24, "kernel": "6.1", "sendmail": "8.17.1.9"}
    text = render_markdown([result], machine, {"mode": "quick", "date": "2024-01-01 00:00", "seconds": 90})
    assert "2 CPUs (Test CPU), 24 GB RAM" in text and "sendmail 8.17.1.9" in text
    assert "| 3. Banner accuracy | p99 | 3.1 ms | <= 50 ms | met |" in text
    assert "## 3. Banner accuracy" in text and "| p99 | 3.1 |" in text and "- pause 5 s" in text


def test_size_text() -> None:
    assert size_text(512) == "512 B"
    assert size_text(3584) == "3.5 KB"
    assert size_text(600 * 1024 * 1024) == "600.0 MB"


def test_saturation_by_cpu_share_or_loop_lag() -> None:
    idle = saturation(cpu=1.0, wall=10.0, lags=[0.001] * 100)
    assert idle["share"] == pytest.approx(0.1) and not idle["saturated"]
    assert saturation(cpu=9.5, wall=10.0, lags=[0.001] * 100)["saturated"]  # 95% of a core
    assert saturation(cpu=1.0, wall=10.0, lags=[0.001] * 90 + [0.2] * 10)["saturated"]  # lag p99 200 ms
    assert not saturation(cpu=0.0, wall=0.0, lags=[])["saturated"]


def test_kind_sequence_keeps_the_proportions_at_every_point() -> None:
    mix = {"early": 45.0, "midpause": 22.5, "idle": 22.5, "polite": 6.0, "pipelining": 3.0, "slow": 1.0}
    kinds = list(itertools.islice(kind_sequence(mix), 1000))
    assert Counter(kinds) == {
        "early": 450,
        "midpause": 225,
        "idle": 225,
        "polite": 60,
        "pipelining": 30,
        "slow": 10,
    }
    seen: Counter[str] = Counter()
    for number, kind in enumerate(kinds, 1):
        seen[kind] += 1
        for name, share in mix.items():  # never more than one client ahead of or behind its share
            assert abs(seen[name] - share / 100 * number) < 1


def test_plan_refuses_unknown_kinds_and_round_trips_as_json() -> None:
    with pytest.raises(ValueError):
        Plan(25, {"spammer": 1}, count=1, duration=1)
    with pytest.raises(ValueError):
        Plan(25, {"early": 1}, count=0, duration=1)
    plan = Plan(25, {"early": 3, "polite": 1}, count=10, duration=2, sources=loopback_sources(10, 3))
    assert Plan.from_json(plan.to_json()) == plan


def test_loopback_sources_avoid_network_and_broadcast_octets() -> None:
    sources = loopback_sources(30, 501)
    assert sources[0] == "127.30.0.1" and sources[249] == "127.30.0.250" and sources[250] == "127.30.1.1"
    assert len(set(sources)) == 501
    with pytest.raises(ValueError):
        loopback_sources(0, 1)


def test_message_sizes_and_end() -> None:
    small, big = message(1, 0), message(2, 100 * 1024)
    assert small.endswith(b"\r\n.\r\n") and 100 < len(small) < 200
    assert big.endswith(b"\r\n.\r\n") and abs(len(big) - 100 * 1024) < 200
    assert b"\r\n." not in big[:-3]  # no line starts with a dot: nothing to stuff
