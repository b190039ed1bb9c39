"""The bench's output: results.json, results.md (the tables) and PNG plots, in one folder.

Every scenario hands over a dict: ``scenario`` (its name), ``title``, ``figures`` (the rows of the
summary table: what was measured, the value as text, the target and whether it was met),
``tables`` (its detail tables), ``notes`` and ``data`` (the raw figures, for the plots and the
JSON). The functions up to ``render_markdown`` are pure, for the unit tests.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Result = dict[str, Any]

KB = 1024


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), interpolated linearly between the two nearest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Count, min, median, p90, p99 and max of ``values``."""
    if not values:
        return {"count": 0}
    return {
        "count": len(values),
        "min": min(values),
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values),
    }


def figure(name: str, value: str, target: str = "", met: bool | None = None) -> dict[str, Any]:
    """One row of the summary table; ``met`` None: no target, or not measurable in this run."""
    return {"figure": name, "value": value, "target": target, "met": met}


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> dict[str, Any]:
    return {"title": title, "columns": list(columns), "rows": [list(row) for row in rows]}


def size_text(size: float) -> str:
    """Bytes in B, KB or MB (of 1024)."""
    if abs(size) < KB:
        return f"{size:.0f} B"
    if abs(size) < KB * KB:
        return f"{size / KB:.1f} KB"
    return f"{size / KB / KB:.1f} MB"


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "–"}[met]


def _cell(value: object) -> str:
    if isinstance(value, float):
        text = f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    elif isinstance(value, int) and not isinstance(value, bool):
        text = f"{value:,}"
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; ``|`` in a cell is escaped, numbers are formatted."""
    if any(len(row) != len(columns) for row in rows):
        raise ValueError("every row needs one cell per column")
    lines = ["| " + " | ".join(_cell(column) for column in columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def machine_line(machine: Mapping[str, object]) -> str:
    return (
        f"{machine.get('cpus')} CPUs ({machine.get('cpu_model')}), {machine.get('memory_gb')} GB RAM, "
        f"{machine.get('os')}, kernel {machine.get('kernel')}, Python {machine.get('python')}, "
        f"uvloop {machine.get('uvloop')}, aiosmtpd {machine.get('aiosmtpd')}, "
        f"sendmail {machine.get('sendmail')}, open-file limit {machine.get('open_file_limit')}"
    )


def heading(result: Result, position: int) -> str:
    """ "3. Banner accuracy": the scenario's own number (the same with --only), else its position."""
    return f"{result.get('number', position)}. {result['title']}"


def summary_table(results: Sequence[Result]) -> str:
    rows = [
        [heading(result, position), row["figure"], row["value"], row["target"] or "–", verdict(row["met"])]
        for position, result in enumerate(results, 1)
        for row in result["figures"]
    ]
    return markdown_table(["Scenario", "Figure", "Measured", "Target", ""], rows)


def render_markdown(
    results: Sequence[Result], machine: Mapping[str, object], header: Mapping[str, object]
) -> str:
    """results.md: the run, the machine, the summary table, then each scenario's details."""
    parts = [
        f"# greetproxy bench: {header.get('mode')} mode, {header.get('date')}\n",
        f"Machine: {machine_line(machine)}.\n",
        f"Run: {header.get('seconds', 0):.0f} s wall; command `{header.get('command')}`.\n",
        summary_table(results),
    ]
    for position, result in enumerate(results, 1):
        parts.append(f"## {heading(result, position)}\n")
        for detail in result.get("tables", []):
            parts.append(f"{detail['title']}:\n\n" + markdown_table(detail["columns"], detail["rows"]))
        notes = list(result.get("notes", []))
        if "seconds" in result:
            load = result.get("load") or ["?", "?"]
            notes.append(
                f"took {result['seconds']:.0f} s; the machine's load average (1 min) was {load[0]} at "
                f"its start and {load[1]} at its end"
            )
        parts += [f"- {note}" for note in notes]
        if notes:
            parts.append("")
    return "\n".join(parts).rstrip("\n") + "\n"


# -- files ----------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_held(data: Mapping[str, Any], path: Path) -> None:
    """Memory per held connection against N, greetproxy against sendmail (log scale)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label, color in (
        ("uss_per", "greetproxy USS", "tab:blue"),
        ("rss_per", "greetproxy RSS", "tab:cyan"),
    ):
        points = [(row["held"], row[key]) for row in data.get("proxy", []) if row.get("held")]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=label, color=color)
    for key, label, color in (
        ("pss_per", "sendmail PSS", "tab:red"),
        ("uss_per", "sendmail USS", "tab:orange"),
    ):
        points = [(row["processes"], row[key]) for row in data.get("sendmail", []) if row.get("processes")]
        if points:
            ax.plot(*zip(*points, strict=True), marker="s", label=label, color=color)
    ax.axhline(4 * KB, color="gray", linestyle="--", linewidth=1, label="target 4 KB")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("connections held in the greet pause (N)")
    ax.set_ylabel("process memory per held connection (bytes)")
    ax.set_title("Memory per waiting connection")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_banner(deviations_ms: Sequence[float], target_ms: float, path: Path) -> None:
    """Histogram of (banner time - configured pause), with the median and p99 marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if deviations_ms:
        ax.hist(deviations_ms, bins=60, color="tab:blue", alpha=0.8)
        for q, style in ((50, "-"), (99, "--")):
            value = percentile(deviations_ms, q)
            ax.axvline(value, color="black", linestyle=style, linewidth=1, label=f"p{q} {value:.1f} ms")
    ax.axvline(target_ms, color="tab:red", linestyle=":", label=f"target p99 {target_ms:g} ms")
    ax.set_xlabel("banner time - configured pause (ms)")
    ax.set_ylabel("clients")
    ax.set_title("Banner delay beyond the pause")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_throughput(cases: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Messages per second, direct against through the proxy, for each backend and size."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labels = [f"{case['backend']}\n{case['size']}" for case in cases]
    positions = range(len(cases))
    width = 0.38
    direct = [case["direct"] for case in cases]
    proxied = [case["proxy"] for case in cases]
    ax.bar([x - width / 2 for x in positions], direct, width, label="direct", color="tab:gray")
    bars = ax.bar(
        [x + width / 2 for x in positions], proxied, width, label="through greetproxy", color="tab:blue"
    )
    for bar, case in zip(bars, cases, strict=True):
        ax.annotate(
            f"{case['ratio']:.2f}x",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=9,
        )
    ax.set_xticks(list(positions), labels)
    ax.set_yscale("log")
    ax.set_ylabel("messages per second (median of rounds)")
    ax.set_title("Relay throughput, 20 concurrent senders")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    results: Sequence[Result], machine: Mapping[str, object], header: Mapping[str, object], out: Path
) -> list[Path]:
    """results.json, results.md and the plots whose scenarios ran; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "results.json", out / "results.md"]
    document = {"header": dict(header), "machine": dict(machine), "results": list(results)}
    written[0].write_text(json.dumps(document, indent=2, default=str) + "\n")
    written[1].write_text(render_markdown(results, machine, header))
    by_name = {result["scenario"]: result for result in results}
    if "held" in by_name:
        plot_held(by_name["held"]["data"], out / "held-memory.png")
        written.append(out / "held-memory.png")
    if "banner" in by_name and by_name["banner"]["data"].get("deviation_ms"):
        banner = by_name["banner"]["data"]
        plot_banner(banner["deviation_ms"], banner["target_ms"], out / "banner-delay.png")
        written.append(out / "banner-delay.png")
    if "throughput" in by_name and by_name["throughput"]["data"].get("cases"):
        plot_throughput(by_name["throughput"]["data"]["cases"], out / "throughput.png")
        written.append(out / "throughput.png")
    return written
