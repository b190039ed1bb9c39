"""Scenario 5, a mixed day: 90% bots and 10% real senders arriving at a steady rate for two minutes,
once through greetproxy in front of a plain sendmail and once straight to a sendmail with
FEATURE(greet_pause) (the same pause), with the same clients in the same order.

    python3 -m bench.mixed [--quick]        # the same as python3 -m bench --only mixed

Bots: half talk at once, a quarter part-way through the pause, the rest connect and hang up inside
the pause; each talker replays a whole delivery to the ``bot`` box. Senders: polite (6 in 10),
pipelining (3 in 10) and slow (1 in 10, a few bytes every 50 ms), one message each to the ``legit``
boxes. Bots and senders come from different loopback networks, so the proxy's log tells which
reached the backend. Figures: legitimate messages delivered (must be all, counted in sendmail's
mailboxes), bots that reached sendmail (must be none: bot messages in its mailboxes, and the proxy's
``pass`` events for bot addresses), and sendmail's processes at peak (sampled every 50 ms).
Loopback only; bounded in count and time.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.load import SENDERS, Event, Plan, loopback_sources
from bench.report import Result, figure, table
from bench.services import PeakSampler, Services, log_errors, log_events
from tests.support.sendmail import Sendmail

MIX = {"early": 45.0, "midpause": 22.5, "idle": 22.5, "polite": 6.0, "pipelining": 3.0, "slow": 1.0}
BOT_BLOCK, SENDER_BLOCK = 11, 21

TITLE = "Mixed day"


@dataclass(frozen=True)
class Params:
    seconds: float
    rate: float  # new connections per second
    pause: float = 5.0


QUICK = Params(seconds=20, rate=50, pause=2.0)
FULL = Params(seconds=120, rate=50, pause=5.0)


def estimate(params: Params) -> float:
    return 2 * (params.seconds + params.pause + 6)


def plan(port: int, params: Params) -> Plan:
    return Plan(
        port,
        MIX,
        int(params.seconds * params.rate),
        duration=params.seconds,
        rate=params.rate,
        concurrency=5000,
        sources=loopback_sources(BOT_BLOCK, 250),
        sources_by_kind={kind: loopback_sources(SENDER_BLOCK, 250) for kind in SENDERS},
        pause=params.pause,
        timeout=params.pause + 60,
    )


def mailboxes(sendmail: Sendmail) -> dict[str, int]:
    """Messages delivered, by kind of box: legit (legit0..6) and bot."""
    counts: Counter[str] = Counter()
    maildir = sendmail.workdir / "mail"
    for box in maildir.iterdir() if maildir.is_dir() else []:
        new = box / "new"
        counts["bot" if box.name == "bot" else "legit"] += len(list(new.iterdir())) if new.is_dir() else 0
    return dict(counts)


def day(services: Services, sendmail: Sendmail, port: int, params: Params, label: str) -> dict[str, Any]:
    sendmail.clear()
    with PeakSampler(sendmail.session_count) as sampler:
        outcome: Event = services.load(plan(port, params), label)
    senders = sum(sum(outcome["outcomes"].get(kind, {}).values()) for kind in SENDERS)
    return {
        "outcome": outcome,
        "senders": senders,
        "bots": outcome["clients"] - senders,
        "boxes": mailboxes(sendmail),
        "peak": sampler.peak,
        "samples": sampler.samples,
    }


def proxy_view(log: Path) -> dict[str, Any]:
    """From the proxy's log: passes by network (bots or senders), and early talkers seen."""
    passes: Counter[str] = Counter()
    events: Counter[str] = Counter()
    for event in log_events(log):
        name = str(event.get("event"))
        events[name] += 1
        if name == "pass":
            client = str(event.get("client", ""))
            passes["bot" if client.startswith(f"127.{BOT_BLOCK}.") else "sender"] += 1
    return {"passes": dict(passes), "events": dict(events)}


def run(services: Services, params: Params) -> Result:
    log = services.workdir / "mixed-proxy.log"
    services.progress.step(f"mixed day through greetproxy, {params.seconds:g} s")
    sendmail = services.sendmail()
    with services.proxy(sendmail, params.pause, log_file=log, GREETPROXY_MAX_CONNECTIONS="10000") as proxy:
        through = day(services, sendmail, proxy.port, params, "through greetproxy")
        through["errors"] = proxy.tracebacks()
    through["errors"] += log_errors(log)
    through["proxy"] = proxy_view(log)
    sendmail.clear()
    services.progress.step(f"mixed day straight to sendmail's greet_pause, {params.seconds:g} s")
    with services.greet_pause_sendmail(params.pause) as paused:
        direct = day(services, paused, paused.port, params, "straight to sendmail")
    return result(through, direct, params)


def result(through: dict[str, Any], direct: dict[str, Any], params: Params) -> Result:
    legit = through["boxes"].get("legit", 0)
    bot_mail = through["boxes"].get("bot", 0)
    bot_passes = through["proxy"]["passes"].get("bot", 0)
    figures = [
        figure(
            "legitimate messages delivered through greetproxy",
            f"{legit:,} of {through['senders']:,} senders",
            "all",
            legit == through["senders"],
        ),
        figure(
            "bots that reached sendmail through greetproxy",
            f"{bot_passes} passed, {bot_mail} bot messages delivered (of {through['bots']:,} bots)",
            "none",
            bot_passes == 0 and bot_mail == 0,
        ),
        figure(
            "sendmail processes at peak",
            f"{through['peak']} with greetproxy, {direct['peak']} without (greet_pause in sendmail)",
        ),
        figure(
            "legitimate messages delivered without greetproxy",
            f"{direct['boxes'].get('legit', 0):,} of {direct['senders']:,}; bot messages "
            f"{direct['boxes'].get('bot', 0)}",
        ),
    ]
    rows = []
    for name, view in (("through greetproxy", through), ("straight to sendmail", direct)):
        for kind, counts in view["outcome"]["outcomes"].items():
            rows.append(
                [name, kind, sum(counts.values()), ", ".join(f"{o} {n}" for o, n in sorted(counts.items()))]
            )
    notes = [
        f"{params.seconds:g} s at {params.rate:g} connections/s, pause {params.pause:g} s; mix "
        + ", ".join(f"{kind} {share:g}%" for kind, share in MIX.items()),
        f"sendmail processes sampled {through['samples']} and {direct['samples']} times; without the proxy "
        f"every one of the {direct['bots']:,} bots had a sendmail process of its own",
    ]
    for name, view in (("through greetproxy", through), ("straight to sendmail", direct)):
        generator = view["outcome"]["generator"]
        if generator["saturated"] or view["outcome"]["arrivals_late_p99"] > 0.1:
            notes.append(
                f"{name}: the load generator fell behind (CPU {generator['share']:.0%}, lag p99 "
                f"{generator['lag_p99'] * 1000:.0f} ms, arrivals late p99 "
                f"{view['outcome']['arrivals_late_p99'] * 1000:.0f} ms)"
            )
    if through["errors"]:
        notes.append(f"the proxy logged {len(through['errors'])} errors, e.g. {through['errors'][0][:200]}")
    events = through["proxy"]["events"]
    notes.append(
        "the proxy logged "
        + ", ".join(
            f"{name} {events.get(name, 0):,}"
            for name in ("connect", "pregreet", "pass", "message", "disconnect")
        )
    )
    return {
        "scenario": "mixed",
        "title": TITLE,
        "figures": figures,
        "tables": [table("Outcomes by kind of client", ["run", "kind", "clients", "outcomes"], rows)],
        "notes": notes,
        "data": {
            "through": {key: value for key, value in through.items() if key != "errors"},
            "direct": direct,
        },
    }


def main() -> int:
    from bench.run import main as run_main

    return run_main(["--only", "mixed", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
