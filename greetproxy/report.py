"""``greetproxy report``: the morning summary of a JSON log, as pflogsumm is for postscreen's.

Connections by outcome, the clients that talked early or were listed most, messages and rejects
by reply code, and the outcomes hour by hour; ``--png`` draws those hours (needs matplotlib:
``pip install 'greetproxy[report]'``). Lines that are not greetproxy's JSON events are counted and
skipped, so a journal with other lines mixed in can be read as it is.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .outcomes import PASS_VIA, connection_outcome


@dataclass
class Summary:
    outcomes: Counter[str] = field(default_factory=Counter)
    hourly: defaultdict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    early_talkers: Counter[str] = field(default_factory=Counter)
    listed: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)  # by the backend's reply code
    hourly_messages: Counter[str] = field(default_factory=Counter)
    rejects: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # code, by, command
    first: str = ""
    last: str = ""
    events: int = 0
    skipped: int = 0

    def feed(self, event: dict[str, Any]) -> None:
        self.events += 1
        stamp = str(event.get("timestamp", ""))
        if stamp:
            self.first = min(self.first or stamp, stamp)
            self.last = max(self.last, stamp)
        hour = f"{stamp[:10]} {stamp[11:13]}:00" if len(stamp) >= 13 else "?"
        outcome = connection_outcome(event)
        if outcome is not None:
            self.outcomes[outcome] += 1
            self.hourly[hour][outcome] += 1
        name = event.get("event")
        client = str(event.get("client", "?"))
        if name == "pregreet":
            self.early_talkers[client] += 1
        elif name == "dnsbl" and event.get("listed"):
            self.listed[client] += 1
        elif name == "message":
            self.messages[str(event.get("reply", "?"))[:3]] += 1
            self.hourly_messages[hour] += 1
        elif name == "reject" and event.get("command") != "CONNECT":
            key = (str(event.get("code", "?")), str(event.get("by", "proxy")), str(event.get("command", "?")))
            self.rejects[key] += 1


def summarize(lines: Iterable[bytes | str]) -> Summary:
    summary = Summary()
    for line in lines:
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            event = None
        if isinstance(event, dict) and "event" in event:
            summary.feed(event)
        elif str(line).strip():
            summary.skipped += 1
    return summary


def render(summary: Summary, top: int = 10) -> str:
    out: list[str] = []
    total = sum(summary.outcomes.values())
    passed = sum(summary.outcomes[name] for name in PASS_VIA.values())
    out.append(f"greetproxy report: {summary.first or '?'} to {summary.last or '?'}")
    out.append(f"{summary.events} events read, {summary.skipped} other lines skipped")
    out.append("")
    out.append(f"connections: {total}, passed {passed} ({_share(passed, total)})")
    for outcome, count in summary.outcomes.most_common():
        out.append(f"  {outcome:20} {count:8}  {_share(count, total):>6}")
    out.append("")
    out += _top("early talkers", summary.early_talkers, top)
    out += _top("DNSBL-listed clients", summary.listed, top)
    out.append(f"messages: {sum(summary.messages.values())}")
    for code, count in sorted(summary.messages.items()):
        out.append(f"  {code:20} {count:8}")
    out.append("")
    out.append(f"rejects in the session: {sum(summary.rejects.values())}")
    for (code, by, command), count in sorted(summary.rejects.items(), key=lambda item: (-item[1], item[0])):
        out.append(f"  {code} {command:8} by {by:8} {count:8}")
    out.append("")
    out.append("hour by hour:")
    columns = ["pass", "pass_cached", "pregreet", "dnsbl"]
    out.append(
        f"  {'hour':16} {'total':>7} " + " ".join(f"{name:>11}" for name in columns) + f" {'messages':>9}"
    )
    for hour in sorted(summary.hourly):
        counts = summary.hourly[hour]
        cells = " ".join(f"{counts[name]:11}" for name in columns)
        out.append(f"  {hour:16} {sum(counts.values()):7} {cells} {summary.hourly_messages[hour]:9}")
    return "\n".join(out) + "\n"


def plot(summary: Summary, path: str) -> None:
    """Stacked bars of the outcomes per hour."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as pyplot
    except ImportError:
        raise RuntimeError("--png needs matplotlib: pip install 'greetproxy[report]'") from None
    hours = sorted(summary.hourly)
    outcomes = [name for name, _ in summary.outcomes.most_common()]
    figure, axes = pyplot.subplots(figsize=(max(6, len(hours) * 0.6), 4))
    bottom = [0] * len(hours)
    for outcome in outcomes:
        heights = [summary.hourly[hour][outcome] for hour in hours]
        axes.bar(range(len(hours)), heights, bottom=bottom, label=outcome)
        bottom = [low + height for low, height in zip(bottom, heights, strict=True)]
    axes.set_xticks(range(len(hours)), [hour[11:16] for hour in hours], rotation=45)
    axes.set_ylabel("connections")
    axes.set_title(f"greetproxy outcomes by hour (UTC), {hours[0][:10] if hours else ''}")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _top(title: str, counts: Counter[str], top: int) -> list[str]:
    lines = [f"top {title} ({len(counts)} addresses):"]
    lines += [f"  {client:39} {count:8}" for client, count in counts.most_common(top)]
    return [*lines, ""]
