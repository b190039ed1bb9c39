"""Figures for the fleet (GREETPROXY_STATE=redis://, PROXY protocol), in one run on loopback.

    python3 -m bench.fleet [--connections 200] [--rounds 3] [--clients 40] [--messages 5]

1. What a Redis round trip adds per connection: a client with a remembered pass connects again and
   again, one connection at a time; the time to its banner with the pass cache in this host's
   memory (SQLite) against the pass cache in Redis, in alternating rounds. The difference of the
   medians is Redis's cost; proxy CPU per connection both ways; redis-py's own PING for reference.
2. Two instances behind a real HAProxy (PROXY v2) against one instance alone, the same workload:
   C client addresses each delivering M messages, one connection each, with a 0.5 s pause and the
   pass cache on. Two instances with local state make every client wait once per instance; with
   Redis once on the fleet. Messages/s, connections that waited, the split between the instances.
Needs redis-server and haproxy (Debian's packages). Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

from bench.core import bench_parser, proxy_for, wait_listening, with_sendmail
from bench.screening import visit
from bench.system import cpu_seconds
from tests.support.fleet import HAProxy, RedisServer, fleet_tools_missing
from tests.support.load import read_reply
from tests.support.proxy import ProxyProcess
from tests.support.sendmail import Sendmail

PAUSE = 0.5
MESSAGE = b"Subject: fleet bench\r\nFrom: bench@sender.example\r\n\r\n" + b"x" * 70 + b"\r\n" * 12


async def remembered_banners(proxy: ProxyProcess, connections: int) -> tuple[float, float]:
    """Median seconds to the banner of a remembered client, and proxy CPU seconds per connection."""
    before = cpu_seconds(proxy.pid)
    delays = [await visit(proxy.port, "127.0.0.40") for _ in range(connections)]
    return statistics.median(delays), (cpu_seconds(proxy.pid) - before) / connections


async def redis_ping(url: str, count: int = 200) -> float:
    client = aioredis.Redis.from_url(url)
    try:
        trips = []
        for _ in range(count):
            started = time.perf_counter()
            await client.ping()
            trips.append(time.perf_counter() - started)
        return statistics.median(trips)
    finally:
        await client.aclose()


async def added_latency(args: argparse.Namespace, sendmail: Sendmail, redis: RedisServer) -> None:
    remembered = {"GREETPROXY_PASS_TTL": "1d", "GREETPROXY_CLIENT_CONCURRENCY": "1000"}
    local = proxy_for(sendmail, PAUSE, **remembered)
    shared = proxy_for(sendmail, PAUSE, GREETPROXY_STATE=redis.url, **remembered)
    try:
        for proxy in (local, shared):
            await wait_listening(proxy.port)
            if await visit(proxy.port, "127.0.0.40") < PAUSE:  # the first visit waits
                raise RuntimeError("the client was remembered before it passed")
        await asyncio.sleep(0.3)  # the passes reach the file and Redis
        figures: dict[str, list[tuple[float, float]]] = {"local": [], "redis": []}
        for round_number in range(args.rounds):
            for name, proxy in (("local", local), ("redis", shared)):
                figures[name].append(await remembered_banners(proxy, args.connections))
            print(
                f"  round {round_number + 1}: local {figures['local'][-1][0] * 1000:.2f} ms, "
                f"redis {figures['redis'][-1][0] * 1000:.2f} ms",
                file=sys.stderr,
            )
    finally:
        local.stop()
        shared.stop()
    ping = await redis_ping(redis.url)
    median = {name: statistics.median(delay for delay, _ in rounds) for name, rounds in figures.items()}
    cpu = {name: statistics.median(spent for _, spent in rounds) for name, rounds in figures.items()}
    print(f"1. a remembered client's time to banner, {args.connections} connections x {args.rounds} rounds:")
    print(
        f"  pass cache in memory (SQLite) {median['local'] * 1000:.2f} ms, in Redis "
        f"{median['redis'] * 1000:.2f} ms: Redis adds {(median['redis'] - median['local']) * 1000:.2f} ms "
        f"(redis-py PING round trip {ping * 1000:.3f} ms)"
    )
    print(
        f"  proxy CPU per connection: local {cpu['local'] * 1e6:.0f} us, "
        f"with Redis {cpu['redis'] * 1e6:.0f} us"
    )


async def deliver(port: int, source: str, messages: int) -> None:
    """One client address delivering ``messages``, a connection each."""
    for index in range(messages):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        try:
            if await read_reply(reader) != 220:
                raise RuntimeError(f"{source}: no banner")
            for line in (b"EHLO fleet.example", b"MAIL FROM:<bench@sender.example>"):
                writer.write(line + b"\r\n")
                if await read_reply(reader) != 250:
                    raise RuntimeError(f"{source}: {line!r} refused")
            writer.write(f"RCPT TO:<fleet{index % 5}@example.test>\r\nDATA\r\n".encode())
            if (await read_reply(reader), await read_reply(reader)) != (250, 354):
                raise RuntimeError(f"{source}: RCPT or DATA refused")
            writer.write(MESSAGE + b".\r\nQUIT\r\n")
            if await read_reply(reader) != 250:
                raise RuntimeError(f"{source}: message refused")
            await read_reply(reader)
        finally:
            writer.close()


async def workload(port: int, clients: int, messages: int) -> float:
    """Messages per second, for ``clients`` addresses at once."""
    sources = [f"127.0.1.{index + 1}" for index in range(clients)]
    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(deliver(port, source, messages) for source in sources)), 300)
    return clients * messages / (time.monotonic() - started)


async def layout(
    sendmail: Sendmail, workdir: Path, args: argparse.Namespace, count: int, extra: dict[str, str]
) -> str:
    """Run the workload on ``count`` instances (two: behind HAProxy); one line of figures."""
    instances = [proxy_for(sendmail, PAUSE, **extra) for _ in range(count)]
    balancer = None
    try:
        for instance in instances:
            await wait_listening(instance.port)
        port = instances[0].port
        if count > 1:
            folder = workdir / f"haproxy-{len(list(workdir.glob('haproxy-*')))}"
            folder.mkdir()
            balancer = HAProxy(folder, [instance.port for instance in instances], "send-proxy-v2").start()
            port = balancer.port
        before = [cpu_seconds(instance.pid) for instance in instances]
        rate = await workload(port, args.clients, args.messages)
        spent = sum(cpu_seconds(instance.pid) - was for instance, was in zip(instances, before, strict=True))
        await asyncio.sleep(0.5)  # the last events reach the log
        waited = sum(len(instance.find("pass", via="tests")) for instance in instances)
        split = "/".join(str(len(instance.find("pass"))) for instance in instances)
        outages = sum(len(instance.find("state_unavailable")) for instance in instances)
    finally:
        if balancer is not None:
            balancer.stop()
        for instance in instances:
            instance.stop()
    sendmail.clear()
    total = args.clients * args.messages
    line = f"{rate:6.1f} msg/s, {waited:4} of {total} connections waited the pause (split {split}), "
    line += f"proxy CPU {spent / total * 1e6:.0f} us per message"
    return line + (f", Redis outages {outages}" if outages else "")


async def two_instances(
    args: argparse.Namespace, sendmail: Sendmail, redis: RedisServer, workdir: Path
) -> None:
    # info: the pass events say which connections waited
    base = {"GREETPROXY_LOG_LEVEL": "info", "GREETPROXY_PASS_TTL": "1d"}
    balanced = {**base, "GREETPROXY_PROXY_PROTOCOL_FROM": "127.0.0.1"}
    print(
        f"2. {args.clients} client addresses x {args.messages} messages (a connection each), "
        f"pause {PAUSE:g}s, pass cache on:"
    )
    print(f"  one instance       {await layout(sendmail, workdir, args, 1, base)}")
    print(f"  two, local state   {await layout(sendmail, workdir, args, 2, balanced)}")
    shared = {**balanced, "GREETPROXY_STATE": redis.url}
    print(f"  two, Redis         {await layout(sendmail, workdir, args, 2, shared)}")


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--connections", type=int, default=200, help="per round and state")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=40)
    parser.add_argument("--messages", type=int, default=5, help="per client address")
    args = parser.parse_args()
    if missing := fleet_tools_missing():
        print(f"bench.fleet: {', '.join(missing)} not installed (apt-get install redis-server haproxy)")
        return 1

    async def measure(sendmail: Sendmail, workdir: Path) -> int:
        redis = RedisServer(workdir).start()
        try:
            await added_latency(args, sendmail, redis)
            await two_instances(args, sendmail, redis, workdir)
        finally:
            redis.stop()
        return 0

    return with_sendmail(measure)


if __name__ == "__main__":
    sys.exit(main())
