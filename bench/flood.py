"""Scenario 2, bot flood: early talkers (the whole dialogue sent the moment the connection is up)
arriving as fast as the load generator can make them, 100 connects in flight, against greetproxy,
which drops each with 554 5.5.1.

    python3 -m bench.flood [--quick]        # the same as python3 -m bench --only flood

Figures: connections dropped per second, and the proxy's CPU time (user + system, /proc) per dropped
connection, over the generator's active window. Three servers take turns, round by round: a proxy
logging at `warning` (nothing per dropped client), one at `info`, the default, whose JSON lines (four
per client: connect, pregreet, reject, disconnect) go to a file, and the floor, bench.floor's bare
uvloop server that answers 554 and closes (what the machine's TCP work costs whatever the server
does). The generator's own CPU share says whether it, rather than the server, set the pace.
Loopback only; bounded in rounds and seconds.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from typing import Any

from bench.load import Plan, loopback_sources
from bench.report import Result, figure, table
from bench.services import Services, log_errors

TARGET_US = 30.0
FLOOR = "floor"  # bench.floor's drop server: accept, read, 554, close, nothing else

TITLE = "Bot flood"


@dataclass(frozen=True)
class Params:
    rounds: int
    seconds: float  # of arrivals, per round and proxy


QUICK = Params(rounds=1, seconds=5)
FULL = Params(rounds=3, seconds=10)


def estimate(params: Params) -> float:
    return params.rounds * 3 * (params.seconds + 2) + 5


def one_round(services: Services, port: int, pid: int, seconds: float, label: str) -> dict[str, Any]:
    plan = Plan(
        port,
        {"early": 1},
        count=10_000_000,  # the duration ends it
        duration=seconds,
        in_flight=100,
        concurrency=100,  # open at once: each lives from connect to 554, so the accept queue holds <= 100
        sources=loopback_sources(10, 250),
        timeout=10,
        watch=[pid],
    )
    result = services.load(plan, label)
    outcomes = result["outcomes"]["early"]
    dropped = outcomes.get("reply_554", 0)
    cpu = result["watch"].get(str(pid), 0.0)
    return {
        "dropped": dropped,
        "other": {name: n for name, n in outcomes.items() if name != "reply_554"},
        "wall": result["wall"],
        "per_second": dropped / result["wall"],
        "proxy_cpu": cpu,
        "proxy_share": cpu / result["wall"],
        "us_per_drop": cpu / max(dropped, 1) * 1e6,
        "generator": result["generator"],
        "slow_connects": result["slow_connects"],
        "listen_overflows": result["listen_overflows"],
    }


def run(services: Services, params: Params) -> Result:
    sendmail = services.sendmail()  # never reached: every client talks first
    rounds: dict[str, list[dict[str, Any]]] = {"warning": [], "info": [], FLOOR: []}
    log_file = services.workdir / "flood-info.log"
    errors: list[str] = []
    with (
        services.proxy(sendmail, 5.0, GREETPROXY_LOG_LEVEL="warning") as quiet,
        services.proxy(sendmail, 5.0, log_file=log_file) as logged,
        services.floor("drop") as floor,
    ):
        for number in range(params.rounds):
            for name, server in (("warning", quiet), ("info", logged), (FLOOR, floor)):
                label = f"log level {name}" if name != FLOOR else "the floor (bench.floor drop)"
                services.progress.step(f"flood: round {number + 1}/{params.rounds}, {label}")
                rounds[name].append(one_round(services, server.port, server.pid, params.seconds, label))
                errors += log_errors(log_file)
                log_file.write_bytes(b"")  # the daemon appends; keep the disk use of one round
        tracebacks = quiet.tracebacks() + logged.tracebacks() + errors
    return result(rounds, tracebacks, params)


def result(rounds: dict[str, list[dict[str, Any]]], tracebacks: list[str], params: Params) -> Result:
    figures, notes, rows = [], [], []
    floor = statistics.median(run["us_per_drop"] for run in rounds[FLOOR])
    for level, runs in rounds.items():
        per_drop = statistics.median(run["us_per_drop"] for run in runs)
        rate = statistics.median(run["per_second"] for run in runs)
        share = statistics.median(run["proxy_share"] for run in runs)
        generator = max(run["generator"]["share"] for run in runs)
        saturated = any(run["generator"]["saturated"] for run in runs)
        who = f"log level {level}" if level != FLOOR else "the floor (a bare uvloop server answering 554)"
        if level == FLOOR:
            figures.append(figure(f"CPU per dropped connection, {who}", f"{per_drop:.1f} us"))
        else:
            figures.append(
                figure(
                    f"proxy CPU per dropped connection, {who}",
                    f"{per_drop:.1f} us ({per_drop / floor:.2f}x the floor of {floor:.1f} us)",
                    "<= 30 us",
                    per_drop <= TARGET_US,
                )
            )
        figures.append(
            figure(
                f"dropped per second, {who}",
                f"{rate:,.0f}/s; server at {share:.0%} of a core, generator at {generator:.0%}"
                + (" (generator saturated: the rate is its limit)" if saturated else ""),
            )
        )
        for number, run in enumerate(runs, 1):
            rows.append(
                [
                    level,
                    number,
                    run["dropped"],
                    f"{run['per_second']:,.0f}",
                    f"{run['us_per_drop']:.1f}",
                    f"{run['proxy_share']:.0%}",
                    f"{run['generator']['share']:.0%}",
                    f"{run['generator']['lag_p99'] * 1000:.0f} ms",
                    "yes" if run["generator"]["saturated"] else "no",
                    f"{run['slow_connects']} / {run['listen_overflows']}",
                    ", ".join(f"{name} {n}" for name, n in run["other"].items()) or "none",
                ]
            )
    notes.append(
        f"{params.rounds} round(s) of {params.seconds:g} s per server, alternating; medians over rounds. "
        "The per-client limits are raised (the bots come from 250 loopback addresses): the figure is "
        "the cost of the pregreet drop. The floor is what accepting, reading, answering and closing "
        "cost on this machine (mostly the kernel's TCP work), whatever the server does besides"
    )
    if tracebacks:
        notes.append(f"the proxies logged {len(tracebacks)} errors or tracebacks, e.g. {tracebacks[0][:200]}")
    columns = [
        "server",
        "round",
        "dropped",
        "per s",
        "proxy us/drop",
        "proxy CPU",
        "generator CPU",
        "generator lag p99",
        "saturated",
        "connects >= 1 s / accept-queue overflows",
        "other outcomes",
    ]
    return {
        "scenario": "flood",
        "title": TITLE,
        "figures": figures,
        "tables": [table("Rounds", columns, rows)],
        "notes": notes,
        "data": {"rounds": rounds, "tracebacks": len(tracebacks)},
    }


def main() -> int:
    from bench.run import main as run_main

    return run_main(["--only", "flood", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
