"""Figures for the core relay, measured in one run against a real sendmail on loopback.

    python3 -m bench.core [--connections 100] [--senders 20] [--messages 25] [--rounds 3]

1. Time to banner against the configured pause, over N connections (median and worst deviation).
2. Messages per second for S concurrent senders, direct to sendmail and through the proxy, in
   alternating rounds; the ratio of the medians is the figure (absolute rates drift on shared
   machines). Both paths connect from 127.0.0.2, the proxy's backend source address.
Every loop is bounded in count and time; only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, Protocol

from bench.load import Event, Plan, run_plan, senders_plan
from bench.system import cpu_seconds
from tests.support.load import read_reply
from tests.support.proxy import ProxyProcess, free_port
from tests.support.sendmail import Sendmail


async def command(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, line: bytes) -> int:
    writer.write(line + b"\r\n")
    return await read_reply(reader)


def delivered_all(result: Event) -> None:
    """Raise unless every client of a load-generator run delivered what it was to."""
    outcomes = {outcome for counts in result["outcomes"].values() for outcome in counts}
    if outcomes != {"delivered"} or result["unfinished"]:
        raise RuntimeError(f"not every sender delivered: {result['outcomes']}")


async def banner_figures(port: int, pause: float, connections: int) -> list[float]:
    """Seconds from connect to banner beyond ``pause``, ten clients at a time (as a real MX sees
    them); each greets and quits without a message."""
    plan = Plan(
        port, {"polite": 1}, connections, duration=600, concurrency=10, messages=0, timeout=pause + 30
    )
    result = await run_plan(plan)
    delivered_all(result)
    return [delay - pause for delay in result["banner"]]


async def throughput(port: int, senders: int, messages: int, size: int = 0) -> float:
    """Messages per second for ``senders`` concurrent sessions delivering ``messages`` messages of
    ``size`` bytes each (see senders_plan)."""
    plan = senders_plan(port, senders, messages, size)
    result = await run_plan(plan)
    delivered_all(result)
    return float(result["steady"]["rate"])  # while every sender was at work


def bench_parser(doc: str | None) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def with_sendmail(measure: Callable[[Sendmail, Path], Coroutine[Any, Any, int]]) -> int:
    """Run ``measure`` against a private sendmail on a loopback port, in a folder removed after."""
    with tempfile.TemporaryDirectory() as workdir:
        sendmail = Sendmail(Path(workdir) / "sendmail", free_port())
        sendmail.start()
        try:
            return asyncio.run(measure(sendmail, Path(workdir)))
        finally:
            sendmail.stop()


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--pause", type=float, default=1.0)
    parser.add_argument("--senders", type=int, default=20)
    parser.add_argument("--messages", type=int, default=25, help="per sender and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    return with_sendmail(lambda sendmail, _: run(args, sendmail))


class Backend(Protocol):
    port: int  # on 127.0.0.1: a Sendmail, or a bench.sink ServerProcess


def proxy_for(backend: Backend, pause: float, prefix: Sequence[str] = (), **extra: str) -> ProxyProcess:
    """No jitter: the banner figure is the timer's accuracy (the jitter adds 0 to 10% on purpose).
    ``prefix``: a command to run the daemon under; ``extra``: more variables, by their full names."""
    return ProxyProcess(
        {
            "GREETPROXY_LISTEN": f"127.0.0.1:{free_port()}",
            "GREETPROXY_BACKEND": f"127.0.0.1:{backend.port}",
            "GREETPROXY_GREET_PAUSE": f"{pause}s",
            "GREETPROXY_GREET_PAUSE_JITTER": "0",
            "GREETPROXY_HOSTNAME": "proxy.bench.test",
            "GREETPROXY_LOG_LEVEL": "warning",
            # every bench client is 127.0.0.1: measure the pause each time, and no per-client rate limit
            "GREETPROXY_PASS_TTL": "0",
            "GREETPROXY_CLIENT_RATE": "100000",
            **extra,
        },
        prefix,
    ).start(wait_for=None)


async def wait_listening(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError("the proxy did not start")


async def run(args: argparse.Namespace, sendmail: Sendmail) -> int:
    paused = proxy_for(sendmail, args.pause)
    await wait_listening(paused.port)
    delays = await banner_figures(paused.port, args.pause, args.connections)
    paused.stop()
    deviations_ms = sorted(delay * 1000 for delay in delays)
    print(f"time to banner, {len(delays)} connections, pause {args.pause:g}s:")
    print(
        f"  median deviation {statistics.median(deviations_ms):.1f} ms, "
        f"worst {deviations_ms[-1]:.1f} ms, best {deviations_ms[0]:.1f} ms"
    )

    relay = proxy_for(sendmail, 0)
    await wait_listening(relay.port)
    direct_rates, proxied_rates = [], []
    proxy_cpu = 0.0
    for round_number in range(args.rounds):
        direct_rates.append(await throughput(sendmail.port, args.senders, args.messages))
        cpu_before = cpu_seconds(relay.pid)
        proxied_rates.append(await throughput(relay.port, args.senders, args.messages))
        proxy_cpu += cpu_seconds(relay.pid) - cpu_before
        print(
            f"  round {round_number + 1}: direct {direct_rates[-1]:.0f} msg/s, "
            f"through the proxy {proxied_rates[-1]:.0f} msg/s",
            file=sys.stderr,
        )
        sendmail.clear()
    relay.stop()
    direct, proxied = statistics.median(direct_rates), statistics.median(proxied_rates)
    print(f"throughput, {args.senders} concurrent senders x {args.messages} messages x {args.rounds} rounds:")
    ratios = [proxied / direct for proxied, direct in zip(proxied_rates, direct_rates, strict=True)]
    print(
        f"  direct to sendmail {direct:.0f} msg/s, through greetproxy {proxied:.0f} msg/s, "
        f"ratio of medians {proxied / direct:.3f} "
        f"(median of per-round ratios {statistics.median(ratios):.3f})"
    )
    messages = args.rounds * args.senders * args.messages
    print(f"  proxy CPU per relayed message {proxy_cpu / messages * 1e6:.0f} us (user + system)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
