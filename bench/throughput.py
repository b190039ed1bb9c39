"""Scenario 4, relay throughput: 20 concurrent senders, each one session delivering M messages one
command at a time, small (about 150 bytes) and 100 KB, straight to the backend and through
greetproxy (no pause), against a real sendmail and against the fast aiosmtpd sink.

    python3 -m bench.throughput [--quick]   # the same as python3 -m bench --only throughput

Only the messages are timed, once every sender has greeted, and only while all of them are at work
(up to the first sender's last message: the tail, with fewer senders, says more about chance than
about the path). Each case (backend, size) runs on its own: a warm-up run, then its rounds back to
back. Three paths take turns round by round (which goes first rotates): direct, through greetproxy
(logging at info, to a file), and through bench.floor's byte relay, which checks nothing (the floor:
what one more hop costs here). The figure is the median over rounds of each round's relayed rate /
direct rate: absolute rates drift on a shared machine, and a round's runs are close in time. All
paths connect to the backend from 127.0.0.2, the proxy's backend source address, so sendmail
treats them alike. CPU time per message is read from /proc over the timed window. Loopback only;
bounded in rounds, messages and time.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from typing import Any

from bench.core import delivered_all
from bench.load import senders_plan
from bench.report import Result, figure, table
from bench.services import Services, log_errors

SENDERS = 20
BIG = 100 * 1024
TARGETS = {"sendmail": 0.95, "sink": 0.90}
PATHS = ("direct", "proxy", "floor")  # floor: bench.floor's byte relay, which checks nothing

TITLE = "Relay throughput"


@dataclass(frozen=True)
class Params:
    rounds: int
    messages: dict[tuple[str, str], int]  # per sender and run, by (backend, size)


# Runs of several seconds each: on the 2-core machine of bench/README.md, direct runs to sendmail of
# 20 messages a sender varied by 13% (standard deviation), of 100 messages by 3%; what is left, the
# machine's drift over minutes, the alternation cancels. Quick mode only shows that it all runs.
QUICK = Params(
    2, {("sendmail", "small"): 10, ("sendmail", "100 KB"): 5, ("sink", "small"): 100, ("sink", "100 KB"): 10}
)
FULL = Params(
    5,
    {("sendmail", "small"): 100, ("sendmail", "100 KB"): 50, ("sink", "small"): 1000, ("sink", "100 KB"): 80},
)


def estimate(params: Params) -> float:
    seconds = sum(messages * SENDERS / RATES[case] + 1.5 for case, messages in params.messages.items())
    return 10 + (params.rounds * len(PATHS) + 0.2) * seconds


RATES = {  # messages per second on the 2-core machine of bench/README.md, for the progress bar only
    ("sendmail", "small"): 230,
    ("sendmail", "100 KB"): 190,
    ("sink", "small"): 3500,
    ("sink", "100 KB"): 370,
}


def timed_run(
    services: Services, port: int, watch: int | None, messages: int, size: int, label: str
) -> dict[str, Any]:
    """One run of the senders; ``watch``: the process whose CPU time per message is wanted."""
    plan = senders_plan(port, SENDERS, messages, size, [watch] if watch else [])
    result = services.load(plan, label)
    delivered_all(result)
    count = result["delivered"]["legit"]
    return {
        "rate": result["steady"]["rate"],  # while all the senders were at work: no tail
        "messages": count,
        "cpu_per_message": result["watch"].get(str(watch), 0.0) / max(count, 1),  # 0 without watch
        "generator": result["generator"],
    }


def run(services: Services, params: Params) -> Result:
    sendmail, sink = services.sendmail(), services.sink()
    backends = {"sendmail": sendmail, "sink": sink}
    runs: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    logs = services.workdir / "throughput-sendmail.log", services.workdir / "throughput-sink.log"
    with (
        # at the default log level, info: a message event per message, to a file as deployed
        services.proxy(sendmail, 0, log_file=logs[0]) as to_sendmail,
        services.proxy(sink, 0, log_file=logs[1]) as to_sink,
        services.floor("relay", sendmail) as floor_sendmail,
        services.floor("relay", sink) as floor_sink,
    ):
        relays = {
            "sendmail": {"proxy": to_sendmail, "floor": floor_sendmail},
            "sink": {"proxy": to_sink, "floor": floor_sink},
        }
        # A case's rounds run back to back, after a run that warms the backend up: a case run in
        # between (the sink at 4,000 messages a second) or a cold first run moved sendmail's own rate
        # by 10-20% from one round to the next, more than what is measured.
        for (backend, size), messages in params.messages.items():
            size_bytes = BIG if size != "small" else 0
            paths = [("direct", backends[backend].port, None)]
            paths += [(path, relay.port, relay.pid) for path, relay in relays[backend].items()]
            services.progress.step(f"throughput: {backend}, {size}, warming up")
            timed_run(services, paths[0][1], None, max(messages // 5, 2), size_bytes, "warm-up")
            for number in range(params.rounds):
                services.progress.step(f"throughput: {backend}, {size}, round {number + 1}/{params.rounds}")
                for path, port, watch in paths[number % 3 :] + paths[: number % 3]:  # each goes first in turn
                    label = f"{backend} {size} {path}"
                    outcome = timed_run(services, port, watch, messages, size_bytes, label)
                    runs.setdefault((backend, size, path), []).append(outcome)
                    if backend == "sendmail":
                        sendmail.clear()
        tracebacks = to_sendmail.tracebacks() + to_sink.tracebacks()
    tracebacks += log_errors(logs[0]) + log_errors(logs[1])
    return result(runs, params, tracebacks)


def result(
    runs: dict[tuple[str, str, str], list[dict[str, Any]]], params: Params, tracebacks: list[str]
) -> Result:
    figures, rows, cases, notes = [], [], [], []
    saturated = []
    for backend, size in params.messages:
        rates = {path: [run["rate"] for run in runs[(backend, size, path)]] for path in PATHS}
        cpu = {
            path: statistics.median(run["cpu_per_message"] for run in runs[(backend, size, path)]) * 1e6
            for path in ("proxy", "floor")
        }
        # Each round's relayed rate against that round's direct one: the runs of a round are close
        # in time, so the machine's drift over the run cancels out; the median is the headline.
        per_round = {
            path: [relayed / direct for relayed, direct in zip(rates[path], rates["direct"], strict=True)]
            for path in ("proxy", "floor")
        }
        ratio = statistics.median(per_round["proxy"])
        floor = statistics.median(per_round["floor"])
        of_medians = statistics.median(rates["proxy"]) / statistics.median(rates["direct"])
        target = TARGETS[backend]
        figures.append(
            figure(
                f"through the proxy / direct, {backend}, {size}",
                f"{ratio:.3f}x, median of rounds ({statistics.median(rates['proxy']):,.0f} vs "
                f"{statistics.median(rates['direct']):,.0f} msg/s; proxy {cpu['proxy']:.0f} us CPU/message; "
                f"a byte relay that checks nothing: {floor:.3f}x, {cpu['floor']:.0f} us)",
                f">= {target:.2f}x",
                ratio >= target,
            )
        )
        cases.append(
            {
                "backend": backend,
                "size": size,
                "direct": statistics.median(rates["direct"]),
                "proxy": statistics.median(rates["proxy"]),
                "floor": statistics.median(rates["floor"]),
                "ratio": ratio,
                "ratio_of_medians": of_medians,
                "per_round": per_round["proxy"],
                "floor_ratio": floor,
                "floor_per_round": per_round["floor"],
                "proxy_us_per_message": cpu["proxy"],
                "floor_us_per_message": cpu["floor"],
            }
        )
        generator = max(one["generator"]["share"] for path in PATHS for one in runs[backend, size, path])
        rows.append(
            [
                backend,
                size,
                f"{statistics.median(rates['direct']):,.0f}",
                f"{statistics.median(rates['proxy']):,.0f}",
                f"{ratio:.3f}",
                f"{min(per_round['proxy']):.2f}–{max(per_round['proxy']):.2f}",
                f"{of_medians:.3f}",
                f"{cpu['proxy']:.0f}",
                f"{floor:.3f}",
                f"{cpu['floor']:.0f}",
                f"{generator:.0%}",
            ]
        )
        for path in PATHS:
            if any(run["generator"]["saturated"] for run in runs[(backend, size, path)]):
                saturated.append(f"{backend} {size} {path}")
    notes.append(
        f"{params.rounds} rounds; {SENDERS} senders x messages per run: "
        + ", ".join(f"{backend} {size} {n}" for (backend, size), n in params.messages.items())
        + "; no pipelining; the backend, the proxy and the generator share the machine's cores. "
        "The proxy logs at info (a message event per message) to a file. The floor is bench.floor's "
        "byte relay: no framing, no checks, no log; what one more hop costs on this machine"
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
        "ratio (median of rounds)",
        "per-round ratios",
        "ratio of medians",
        "proxy us/msg",
        "floor ratio",
        "floor us/msg",
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
