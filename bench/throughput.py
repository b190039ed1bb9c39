"""Scenario 4, relay throughput: 20 concurrent senders, each one session delivering M messages one
command at a time, small (about 150 bytes) and 100 KB, straight to the backend and through
greetproxy (no pause), against a real sendmail and against the fast aiosmtpd sink.

    python3 -m bench.throughput [--quick]   # the same as python3 -m bench --only throughput

Only the messages are timed, once every sender has greeted. Direct and proxied runs alternate,
round by round (which goes first alternates too), and the figure is the ratio of the medians:
absolute rates drift on a shared machine. Both paths connect from 127.0.0.2, the proxy's backend
source address, so sendmail treats them alike. The proxy's CPU time per message is read from /proc
over the timed window. Loopback only; bounded in rounds, messages and time.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from typing import Any

from bench.core import delivered_all
from bench.load import Plan
from bench.report import Result, figure, table
from bench.services import Services

SENDERS = 20
BIG = 100 * 1024
TARGETS = {"sendmail": 0.95, "sink": 0.90}
PATHS = ("direct", "proxy")

TITLE = "Relay throughput"


@dataclass(frozen=True)
class Params:
    rounds: int
    messages: dict[tuple[str, str], int]  # per sender and run, by (backend, size)


QUICK = Params(
    2, {("sendmail", "small"): 10, ("sendmail", "100 KB"): 5, ("sink", "small"): 50, ("sink", "100 KB"): 10}
)
FULL = Params(
    5, {("sendmail", "small"): 25, ("sendmail", "100 KB"): 10, ("sink", "small"): 150, ("sink", "100 KB"): 40}
)


def estimate(params: Params) -> float:
    return 10 + params.rounds * 8 * 3


def timed_run(
    services: Services, port: int, watch: int | None, messages: int, size: int, label: str
) -> dict[str, Any]:
    """One run of the senders; ``watch``: the process whose CPU time per message is wanted."""
    plan = Plan(
        port,
        {"polite": 1},
        SENDERS,
        duration=30,
        concurrency=SENDERS,
        sources=["127.0.0.2"],
        messages=messages,
        size=size,
        barrier=True,
        timeout=300,
        watch=[watch] if watch else [],
    )
    result = services.load(plan, label)
    delivered_all(result)
    count = result["delivered"]["legit"]
    return {
        "rate": count / result["wall"],
        "messages": count,
        "cpu_per_message": result["watch"].get(str(watch), 0.0) / max(count, 1),  # 0 without watch
        "generator": result["generator"],
    }


def run(services: Services, params: Params) -> Result:
    sendmail, sink = services.sendmail(), services.sink()
    backends = {"sendmail": sendmail, "sink": sink}
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    with (
        services.proxy(sendmail, 0) as to_sendmail,
        services.proxy(sink, 0) as to_sink,
    ):
        proxies = {"sendmail": to_sendmail, "sink": to_sink}
        for number in range(params.rounds):
            for (backend, size), messages in params.messages.items():
                services.progress.step(f"throughput: round {number + 1}/{params.rounds}, {backend}, {size}")
                paths = [("direct", backends[backend].port), ("proxy", proxies[backend].port)]
                if number % 2:
                    paths.reverse()
                for path, port in paths:
                    watch = proxies[backend].pid if path == "proxy" else None
                    label = f"{backend} {size} {path}"
                    outcome = timed_run(services, port, watch, messages, BIG if size != "small" else 0, label)
                    runs.setdefault((backend, size, path), []).append(outcome)
                    if backend == "sendmail":
                        sendmail.clear()
        tracebacks = to_sendmail.tracebacks() + to_sink.tracebacks()
    return result(runs, params, tracebacks)


def result(
    runs: dict[tuple[str, str, str], list[dict[str, Any]]], params: Params, tracebacks: list[str]
) -> Result:
    figures, rows, cases, notes = [], [], [], []
    saturated = []
    for backend, size in params.messages:
        direct = [run["rate"] for run in runs[(backend, size, "direct")]]
        proxied = [run["rate"] for run in runs[(backend, size, "proxy")]]
        ratio = statistics.median(proxied) / statistics.median(direct)
        per_round = [p / d for p, d in zip(proxied, direct, strict=True)]
        cpu = statistics.median(run["cpu_per_message"] for run in runs[(backend, size, "proxy")]) * 1e6
        target = TARGETS[backend]
        figures.append(
            figure(
                f"through the proxy / direct, {backend}, {size}",
                f"{ratio:.3f}x ({statistics.median(proxied):,.0f} vs {statistics.median(direct):,.0f} msg/s; "
                f"proxy {cpu:.0f} us CPU/message)",
                f">= {target:.2f}x",
                ratio >= target,
            )
        )
        cases.append(
            {
                "backend": backend,
                "size": size,
                "direct": statistics.median(direct),
                "proxy": statistics.median(proxied),
                "ratio": ratio,
                "per_round": per_round,
                "proxy_us_per_message": cpu,
            }
        )
        generator = max(one["generator"]["share"] for path in PATHS for one in runs[backend, size, path])
        rows.append(
            [
                backend,
                size,
                f"{statistics.median(direct):,.0f}",
                f"{statistics.median(proxied):,.0f}",
                f"{ratio:.3f}",
                f"{min(per_round):.2f}–{max(per_round):.2f}",
                f"{cpu:.0f}",
                f"{generator:.0%}",
            ]
        )
        for path in PATHS:
            if any(run["generator"]["saturated"] for run in runs[(backend, size, path)]):
                saturated.append(f"{backend} {size} {path}")
    notes.append(
        f"{params.rounds} rounds; {SENDERS} senders x messages per run: "
        + ", ".join(f"{backend} {size} {n}" for (backend, size), n in params.messages.items())
        + "; no pipelining; the backend, the proxy and the generator share the machine's cores"
    )
    if saturated:
        notes.append("the load generator was saturated in: " + ", ".join(saturated))
    if tracebacks:
        notes.append(f"the proxies logged {len(tracebacks)} errors or tracebacks, e.g. {tracebacks[0][:200]}")
    columns = [
        "backend",
        "message",
        "direct msg/s",
        "proxy msg/s",
        "ratio",
        "per-round ratios",
        "proxy us/msg",
        "generator CPU",
    ]
    return {
        "scenario": "throughput",
        "title": TITLE,
        "figures": figures,
        "tables": [table("Medians of rounds", columns, rows)],
        "notes": notes,
        "data": {"cases": cases, "runs": {" ".join(key): value for key, value in runs.items()}},
    }


def main() -> int:
    from bench.run import main as run_main

    return run_main(["--only", "throughput", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
