"""Soak: mixed traffic for a while against a real sendmail; the proxy's RSS and open descriptors
must stay flat. Prints the slope of each (least squares over the run after a warm-up minute).

    python3 -m bench.soak [--minutes 10] [--rate 20]

Traffic, per second at --rate sessions: 60% polite senders (one message), 20% early talkers,
10% clients that hang up in the pause, 5% that stay idle past the command timeout after the banner,
5% that send a bad command and quit. Bounded in time and count; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections import Counter

from bench.core import bench_parser, proxy_for, wait_listening, with_sendmail
from tests.support.load import polite_client, read_reply
from tests.support.sendmail import Sendmail

SAMPLE_EVERY = 5.0  # seconds
WARM_UP = 60.0


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope, per minute."""
    if len(points) < 2:
        return 0.0
    return statistics.linear_regression([t for t, _ in points], [v for _, v in points]).slope * 60


async def misbehave(port: int, kind: str) -> None:
    try:
        async with asyncio.timeout(30):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                if kind == "early":
                    writer.write(b"EHLO bot.example\r\n")
                    await reader.read(1024)
                elif kind == "hangup":
                    await asyncio.sleep(0.1)
                elif kind == "idle":
                    await read_reply(reader)
                    await reader.read(1024)  # the proxy's 421 at the command timeout
                else:
                    await read_reply(reader)
                    writer.write(b"GARBAGE\r\nQUIT\r\n")
                    await reader.read(4096)
            finally:
                writer.close()
    except (OSError, TimeoutError):
        pass


async def soak(args: argparse.Namespace, sendmail: Sendmail) -> int:
    proxy = proxy_for(
        sendmail,
        0.5,
        GREETPROXY_COMMAND_TIMEOUT="3s",
        GREETPROXY_CLIENT_CONCURRENCY="1000",
    )
    await wait_listening(proxy.port)
    rng = random.Random(1)
    kinds = ["polite"] * 12 + ["early"] * 4 + ["hangup"] * 2 + ["idle", "bad"]
    counts: Counter[str] = Counter()
    samples: list[tuple[float, int, int]] = []
    running: set[asyncio.Task[object]] = set()
    began = time.monotonic()
    next_sample = began
    number = 0
    try:
        while (now := time.monotonic()) - began < args.minutes * 60:
            if now >= next_sample:
                rss, fds = proxy.rss_kb(), proxy.open_fds()
                samples.append((now - began, rss, fds))
                next_sample += SAMPLE_EVERY
                if sendmail.messages():
                    sendmail.clear()
            kind = rng.choice(kinds)
            counts[kind] += 1
            number += 1
            job = polite_client(proxy.port, number, 30) if kind == "polite" else misbehave(proxy.port, kind)
            task = asyncio.ensure_future(job)
            running.add(task)
            task.add_done_callback(running.discard)
            await asyncio.sleep(1 / args.rate)
        await asyncio.wait_for(asyncio.gather(*running), timeout=60)
    finally:
        proxy.stop()
    settled = [(t, rss, fds) for t, rss, fds in samples if t >= min(WARM_UP, args.minutes * 30)]
    rss_slope = slope([(t, rss) for t, rss, _ in settled])
    fd_slope = slope([(t, fds) for t, _, fds in settled])
    first, last = settled[0], settled[-1]
    total = sum(counts.values())
    print(f"soak, {args.minutes:g} min at {args.rate:g} sessions/s: {total} sessions {dict(counts)}")
    print(
        f"  proxy RSS {first[1]} -> {last[1]} kB, slope {rss_slope:+.1f} kB/min; "
        f"open fds {first[2]} -> {last[2]}, slope {fd_slope:+.2f} /min (after {settled[0][0]:.0f} s)"
    )
    print(f"  tracebacks or errors logged: {len(proxy.tracebacks())}")
    return 0


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="new sessions per second")
    args = parser.parse_args()
    return with_sendmail(lambda sendmail, _: soak(args, sendmail))


if __name__ == "__main__":
    sys.exit(main())
