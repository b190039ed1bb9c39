"""Scenario 1, held connections: what a waiting connection costs. N idle clients wait in a 30 s greet
pause, held by greetproxy (one process) and by sendmail's own FEATURE(greet_pause) (a process each).

    python3 -m bench.held [--quick]        # the same as python3 -m bench --only held

For the proxy: the growth of RSS, PSS and USS (private memory, /proc/PID/smaps_rollup) per held
connection, from a fresh proxy before the clients to one second after the last of them connected,
and its open descriptors. For sendmail: its processes and the sum of their PSS and USS, per held
connection; it is taken up to the same N while memory and process ids last (below a quarter of the
machine's memory, or of pid_max, left free it stops adding clients), and stops at the first N it
fails to hold, saying how. The kernel's memory for the sockets is in neither figure. Loopback only;
every loop is bounded in count and time.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.load import Event, Plan, loopback_sources
from bench.report import KB, Result, figure, size_text, table
from bench.services import Services
from bench.system import listen_backlog, meminfo_kb, memory_kb, open_fds, pid_max
from tests.support.sendmail import Sendmail, wait_until

TARGET_BYTES = 4 * KB
TARGET_HELD = 20_000
SOURCES_PER_SHARD = 100
SENDMAIL_CONNECT_FOR = 120.0  # seconds at most for sendmail to take its clients

TITLE = "Held connections"


@dataclass(frozen=True)
class Params:
    counts: tuple[int, ...]  # held by the proxy, a fresh one for each
    sendmail_counts: tuple[int, ...]  # held by one greet_pause sendmail, in turn
    pause: float = 30.0


QUICK = Params((1000, 5000), (1000,))
FULL = Params((1000, 5000, 10_000, 20_000), (1000, 5000, 10_000, 20_000))


def estimate(params: Params) -> float:
    """Seconds the scenario takes, roughly (for the progress bar)."""
    return sum(8 + count / 2500 for count in params.counts) + sum(
        10 + count / 700 for count in params.sendmail_counts
    )


def hold_plans(
    services: Services,
    port: int,
    count: int,
    block: int,
    pause: float,
    connect_for: float | None = None,
    timeout: float = 270,
    **limits: Any,
) -> list[Plan]:
    """``count`` idle clients in as many generator processes as the open-file limit needs, each from
    its own loopback addresses. Connecting stops after ``connect_for`` seconds, by default 8 s before
    the first client's pause would end (greetproxy then passes it on to the backend); ``timeout``:
    seconds each client stays at most."""
    shards = services.shards(count)
    return [
        Plan(
            port,
            {"idle": 1},
            count // shards + (1 if index < count % shards else 0),
            duration=connect_for or pause - 8,
            concurrency=count,
            sources=loopback_sources(block + index, SOURCES_PER_SHARD),
            pause=pause,
            hold=True,
            timeout=timeout,
            **limits,
        )
        for index in range(shards)
    ]


def merged(held: list[Event]) -> dict[str, Any]:
    """The held events of all shards as one."""
    ended: Counter[str] = Counter()
    for event in held:
        ended.update(event["ended"])
    return {
        "held": sum(event["held"] for event in held),
        "tried": sum(event["tried"] for event in held),
        "spoke": sum(event["spoke"] for event in held),
        "ended": dict(ended),
        "stopped": sorted({event["stopped"] for event in held}),
        "connect_seconds": max(event["seconds"] for event in held),
        "shards": len(held),
        "generator_share": max(event["generator"]["share"] for event in held),
        "generator_saturated": any(event["generator"]["saturated"] for event in held),
        "slow_connects": sum(event["slow_connects"] for event in held),
        "listen_overflows": max(event["listen_overflows"] for event in held),
    }


def per_connection(before: dict[str, int], after: dict[str, int], count: int) -> dict[str, float]:
    return {f"{key}_per": (after[key] - before[key]) * KB / max(count, 1) for key in ("rss", "pss", "uss")}


def proxy_row(services: Services, count: int, pause: float) -> dict[str, Any]:
    services.progress.update(0, f"greetproxy {count:,}")
    with services.proxy(
        services.sendmail(),
        pause,
        GREETPROXY_MAX_CONNECTIONS=str(count + 10),
        GREETPROXY_STRESS_GREET_PAUSE=f"{pause:g}s",  # the pause itself, not stress mode's
    ) as proxy:
        # a few clients first, so that what the first connections of any run allocate once
        # (pools, caches) is in the baseline rather than spread over N
        with services.holding(hold_plans(services, proxy.port, 200, 30, pause), "warm-up", timeout=60):
            pass
        time.sleep(1)
        before, fds_before = memory_kb(proxy.pid), open_fds(proxy.pid)
        backlog = listen_backlog(proxy.port)
        plans = hold_plans(services, proxy.port, count, 30, pause)
        with services.holding(plans, f"greetproxy {count:,}", timeout=pause + 60) as held:
            time.sleep(1)
            after, fds = memory_kb(proxy.pid), open_fds(proxy.pid)
            row = merged(held)
        refusals = sum(event.get("refused", 0) for event in proxy.find("file_limit"))
        row.update(per_connection(before, after, row["held"]))
        row.update(
            n=count,
            rss_kb=(before["rss"], after["rss"]),
            fds=fds,
            fds_before=fds_before,
            file_limit_refused=refusals,
            backlog=backlog,
            budget=next((event.get("budget") for event in proxy.find("file_limit")), None),
        )
    return row


def sendmail_usage(pids: list[int], limit: float = 60) -> tuple[dict[str, int], int]:
    """Summed memory of ``pids`` (those still there), and how many were read within ``limit`` s."""
    total = {"rss": 0, "pss": 0, "uss": 0}
    read = 0
    deadline = time.monotonic() + limit
    for pid in pids:
        if time.monotonic() > deadline:
            break
        try:
            usage = memory_kb(pid)
        except OSError:  # exited meanwhile
            continue
        read += 1
        for key in total:
            total[key] += usage[key]
    return total, read


def catch_up(sendmail: Sendmail, connected: int, limit: float = 60, still: float = 10) -> float:
    """Wait until sendmail has a process for each connected client: connections it has not yet
    accepted wait in its listen queue. Gives up after ``limit`` s, or ``still`` s without a new
    process; returns the seconds waited."""
    began = time.monotonic()
    last, last_change = -1, began
    while (now := time.monotonic()) - began < limit and now - last_change < still:
        processes = sendmail.session_count()
        if processes >= connected:
            break
        if processes != last:
            last, last_change = processes, now
        time.sleep(1)
    time.sleep(2)  # the last forks settle
    return round(time.monotonic() - began, 1)


def sendmail_row(services: Services, sendmail: Sendmail, count: int, pause: float) -> dict[str, Any]:
    services.progress.update(0, f"sendmail {count:,}")
    guard = {
        "guard_mem_kb": meminfo_kb("MemTotal") // 4,
        "guard_tasks": pid_max() * 3 // 4,
    }
    # A sendmail child that greeted its client after the pause still holds its process: let
    # connecting go on past the pause (the figure is the processes), within SENDMAIL_CONNECT_FOR.
    plans = hold_plans(services, sendmail.port, count, 40, pause, SENDMAIL_CONNECT_FOR, timeout=400, **guard)
    logged = len(sendmail.log())
    with services.holding(plans, f"sendmail {count:,}", timeout=SENDMAIL_CONNECT_FOR + 60) as held:
        connected = sum(event["held"] + event["spoke"] for event in held)
        caught_up = catch_up(sendmail, connected)
        pids = sendmail.session_pids()
        total, read = sendmail_usage(pids)
        row = merged(held)
    processes = len(pids)
    row.update(
        n=count,
        processes=processes,
        connected=connected,
        catch_up_seconds=caught_up,
        read=read,
        pss_total_kb=total["pss"],
        **{f"{key}_per": total[key] * KB / max(read, 1) for key in ("rss", "pss", "uss")},
    )
    troubles = [
        line
        for line in sendmail.log()[logged:].splitlines()
        if any(
            word in line.lower()
            for word in ("fork", "cannot", "error", "too many", "refus", "rejecting", "load average")
        )
    ]
    row["log_troubles"] = len(troubles)
    row["log_sample"] = troubles[:3]
    if not wait_until(lambda: sendmail.session_count() == 0, 120, interval=0.2):
        row["left_over"] = sendmail.session_count()
    return row


def failure(row: dict[str, Any]) -> str:
    """How sendmail failed to hold ``row['n']`` clients, or "" if it held them all."""
    if row["processes"] >= row["n"]:
        return ""
    reasons = [
        f"{row['processes']:,} processes for {row['n']:,} clients ({row['connected']:,} connected; "
        f"connecting took {row['connect_seconds']:.0f} s, {row['slow_connects']:,} connects needed a "
        f"SYN retry, the listen queues overflowed {row['listen_overflows']:,} times, then "
        f"{row['catch_up_seconds']:.0f} s waited for sendmail to accept the rest)"
    ]
    guards = [reason for reason in row["stopped"] if reason not in ("count", "duration")]
    if guards:
        reasons.append("the bench stopped adding clients: " + "; ".join(guards))
    elif "duration" in row["stopped"]:
        reasons.append(f"connecting took the whole {row['connect_seconds']:.0f} s allowed")
    if row["ended"]:
        reasons.append("clients ended: " + ", ".join(f"{name} {n:,}" for name, n in row["ended"].items()))
    if row["log_troubles"]:
        reasons.append(f"sendmail logged {row['log_troubles']} problems, e.g. {row['log_sample'][0]!r}")
    return "; ".join(reasons)


def run(services: Services, params: Params) -> Result:
    proxy_rows = []
    for count in params.counts:
        services.progress.step(f"held: greetproxy, {count:,} clients")
        proxy_rows.append(proxy_row(services, count, params.pause))
    sendmail_rows: list[dict[str, Any]] = []
    failed = ""
    if params.sendmail_counts:
        with services.greet_pause_sendmail(params.pause) as sendmail:
            for count in params.sendmail_counts:
                services.progress.step(f"held: sendmail greet_pause, {count:,} clients")
                sendmail_rows.append(sendmail_row(services, sendmail, count, params.pause))
                failed = failure(sendmail_rows[-1])
                if failed:
                    break
    return result(proxy_rows, sendmail_rows, failed, services.file_limit, params)


def result(
    proxy_rows: list[dict[str, Any]],
    sendmail_rows: list[dict[str, Any]],
    failed: str,
    file_limit: tuple[int, int],
    params: Params,
) -> Result:
    figures, notes = [], []
    largest = max(proxy_rows, key=lambda row: row["n"])
    figures.append(
        figure(
            "greetproxy memory per held connection (USS growth)",
            f"{size_text(largest['uss_per'])} at {largest['held']:,} held "
            f"(RSS {size_text(largest['rss_per'])}, PSS {size_text(largest['pss_per'])}); "
            f"worst over N {size_text(max(row['uss_per'] for row in proxy_rows))}",
            "<= 4 KB",
            all(row["uss_per"] <= TARGET_BYTES for row in proxy_rows),
        )
    )
    most = max(row["held"] for row in proxy_rows)
    figures.append(
        figure(
            "connections held by one greetproxy worker",
            f"{most:,} of {largest['n']:,} tried",
            f">= {TARGET_HELD:,}",
            most >= TARGET_HELD if largest["n"] >= TARGET_HELD else None,
        )
    )
    if largest["held"] < largest["n"]:
        notes.append(
            f"greetproxy held {largest['held']:,} of {largest['n']:,}: the hard open-file limit here is "
            f"{file_limit[1]:,} and this process could not raise it (no CAP_SYS_RESOURCE), so one process "
            f"has at most {file_limit[1]:,} descriptors; the proxy keeps 32 for itself and refused "
            f"{largest['file_limit_refused']:,} clients with 421 4.7.0 (file_limit, budget "
            f"{largest['budget']}). Clients ended: {largest['ended'] or 'none'}."
        )
    overflowed = [row for row in proxy_rows if row["listen_overflows"]]
    if overflowed:
        notes.append(
            f"greetproxy listens with a backlog of {proxy_rows[0]['backlog']}: while the clients connected, "
            "100 at a time, the accept queue overflowed ("
            + ", ".join(f"{row['listen_overflows']:,} at {row['n']:,}" for row in overflowed)
            + " ; machine-wide count) and as many connects waited 1 s for a SYN retry"
        )
    if any(row["spoke"] for row in proxy_rows):
        notes.append(
            "some clients had their banner before the memory was read: "
            + str([r["spoke"] for r in proxy_rows])
        )
    if sendmail_rows:
        biggest = max(sendmail_rows, key=lambda row: row["processes"])
        figures.append(
            figure(
                "sendmail greet_pause memory per held connection (PSS)",
                f"{size_text(biggest['pss_per'])} (USS {size_text(biggest['uss_per'])}) per process, "
                f"{biggest['processes']:,} processes, {biggest['pss_total_kb'] / KB / KB:.1f} GB in all",
            )
        )
        ratio = biggest["pss_per"] / max(largest["pss_per"], 1)
        figures.append(figure("sendmail PSS / greetproxy PSS per held connection", f"{ratio:,.0f}x"))
        last = sendmail_rows[-1]
        figures.append(
            figure(
                "sendmail greet_pause held",
                failed or f"all {last['n']:,} (tried up to {last['n']:,})",
            )
        )
        if failed:
            notes.append(f"sendmail at {last['n']:,}: {failed}.")
        greeted = [f"{row['spoke']:,} of {row['n']:,}" for row in sendmail_rows if row["spoke"]]
        if greeted:
            notes.append(
                "sendmail greeted some clients before their memory was read (their pause ended while "
                f"the last were connecting): {', '.join(greeted)}; their processes are counted"
            )
        unread = [row for row in sendmail_rows if row["read"] < row["processes"]]
        for row in unread:
            notes.append(
                f"sendmail at {row['n']:,}: memory read for {row['read']:,} of {row['processes']:,} "
                "processes (time limit)"
            )
    if any(row["generator_saturated"] for row in proxy_rows + sendmail_rows):
        notes.append(
            "the load generator was saturated while connecting (CPU or loop lag): it set the connect rate, "
            "which does not change the memory figures"
        )
    notes.append(
        f"pause {params.pause:g} s; memory read 1 s (sendmail: 2 s) after the last client connected; "
        "per connection = growth / held (greetproxy) or sum over processes / processes (sendmail)"
    )
    by_n = {row["n"]: row for row in sendmail_rows}
    rows = []
    for n in sorted({row["n"] for row in proxy_rows} | set(by_n)):
        proxy = next((row for row in proxy_rows if row["n"] == n), None)
        cells: list[object] = [n]
        if proxy:
            cells += [
                proxy["held"],
                size_text(proxy["rss_per"]),
                size_text(proxy["pss_per"]),
                size_text(proxy["uss_per"]),
                proxy["fds"],
                f"{proxy['connect_seconds']:.1f}",
            ]
        else:
            cells += ["–"] * 6
        sendmail = by_n.get(n)
        if sendmail:
            cells += [
                sendmail["processes"],
                size_text(sendmail["pss_per"]),
                size_text(sendmail["uss_per"]),
                f"{sendmail['pss_total_kb'] / KB:,.0f} MB",
            ]
        else:
            cells += ["not run"] * 4
        rows.append(cells)
    columns = [
        "N",
        "greetproxy held",
        "RSS/conn",
        "PSS/conn",
        "USS/conn",
        "fds",
        "connect s",
        "sendmail processes",
        "PSS/conn",
        "USS/conn",
        "sendmail PSS total",
    ]
    return {
        "scenario": "held",
        "title": TITLE,
        "figures": figures,
        "tables": [table(f"Held in a {params.pause:g} s greet pause", columns, rows)],
        "notes": notes,
        "data": {"proxy": proxy_rows, "sendmail": sendmail_rows, "pause": params.pause},
    }


def main() -> int:
    from bench.run import main as run_main

    return run_main(["--only", "held", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
