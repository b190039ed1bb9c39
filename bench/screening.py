"""Figures for screening, measured in one run against a real sendmail and a DNS stub on loopback.

    python3 -m bench.screening [--connections 300] [--cached 100]

1. Proxy CPU per DNSBL-scored connection: the same N connections (each from its own loopback
   address, so every one is a fresh lookup of two lists) through a proxy with DNSBL sites and
   through one without; the difference of the proxy's CPU time, divided by N.
2. Banner delay for a client with a remembered pass: connect to banner, over M connections.
Every loop is bounded in count and time; only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time

from bench.core import bench_parser, wait_listening, with_sendmail
from bench.system import cpu_seconds
from tests.support.dns import DnsStub
from tests.support.load import read_reply
from tests.support.proxy import ProxyProcess, free_port
from tests.support.sendmail import Sendmail

SITES = "bl.bench.test*2, wl.bench.test=127.0.[0..255].[1..3]*-5"


def proxy_for(sendmail: Sendmail, **extra: str) -> ProxyProcess:
    env = {
        "GREETPROXY_LISTEN": f"127.0.0.1:{free_port()}",
        "GREETPROXY_BACKEND": f"127.0.0.1:{sendmail.port}",
        "GREETPROXY_GREET_PAUSE": "0.3s",
        "GREETPROXY_HOSTNAME": "proxy.bench.test",
        "GREETPROXY_LOG_LEVEL": "warning",
        "GREETPROXY_CLIENT_RATE": "100000",
        "GREETPROXY_PASS_TTL": "0",
    }
    env.update({f"GREETPROXY_{key.upper()}": value for key, value in extra.items()})
    return ProxyProcess(env).start(wait_for=None)


async def visit(port: int, source: str) -> float:
    """Connect from ``source``, wait for the banner, QUIT; seconds to the banner."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    code = await read_reply(reader)
    banner = time.monotonic() - started
    writer.write(b"QUIT\r\n")
    await read_reply(reader)
    writer.close()
    if code != 220:
        raise RuntimeError(f"banner {code} from {source}")
    return banner


def sources(count: int) -> list[str]:
    return [f"127.0.{10 + index // 250}.{1 + index % 250}" for index in range(count)]


async def cpu_per_connection(proxy: ProxyProcess, addresses: list[str]) -> float:
    await wait_listening(proxy.port)
    await asyncio.sleep(0.5)  # start-up, the DNSBL self-test
    before = cpu_seconds(proxy.pid)
    for start in range(0, len(addresses), 25):  # 25 at a time, bounded
        batch = addresses[start : start + 25]
        await asyncio.wait_for(asyncio.gather(*(visit(proxy.port, source) for source in batch)), timeout=60)
    return cpu_seconds(proxy.pid) - before


async def run(args: argparse.Namespace, sendmail: Sendmail, dns: DnsStub) -> int:
    addresses = sources(args.connections)
    plain = proxy_for(sendmail)
    baseline = await cpu_per_connection(plain, addresses)
    plain.stop()
    scored = proxy_for(sendmail, dnsbl_sites=SITES, dns_servers=f"127.0.0.1:{dns.port}", dnswl_threshold="-1")
    with_dnsbl = await cpu_per_connection(scored, addresses)
    scored.stop()
    queried = len(dns.queries)
    print(f"DNSBL CPU, {len(addresses)} connections from distinct addresses, 2 lists ({queried} queries):")
    print(
        f"  proxy CPU per connection: {baseline / len(addresses) * 1e6:.0f} us without DNSBL, "
        f"{with_dnsbl / len(addresses) * 1e6:.0f} us with; "
        f"{(with_dnsbl - baseline) / len(addresses) * 1e6:.0f} us per DNSBL-scored connection"
    )

    with tempfile.TemporaryDirectory() as state:
        cached = proxy_for(sendmail, pass_ttl="1d", state_dir=state)
        await wait_listening(cached.port)
        await visit(cached.port, "127.0.0.9")  # passes the pause once; remembered from now on
        await asyncio.sleep(0.2)
        delays = sorted([await visit(cached.port, "127.0.0.9") for _ in range(args.cached)])
        cached.stop()
    print(
        f"banner delay for a remembered client, {len(delays)} connections (sendmail's own greeting included):"
    )
    print(
        f"  median {statistics.median(delays) * 1000:.1f} ms, "
        f"p99 {delays[int(len(delays) * 0.99) - 1] * 1000:.1f} ms, "
        f"best {delays[0] * 1000:.1f} ms"
    )
    return 0


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--cached", type=int, default=100)
    args = parser.parse_args()
    dns = DnsStub().start()
    for zone in ("bl.bench.test", "wl.bench.test"):
        dns.set(f"2.0.0.127.{zone}", ["127.0.0.2"])
    try:
        return with_sendmail(lambda sendmail, _: run(args, sendmail, dns))
    finally:
        dns.stop()


if __name__ == "__main__":
    sys.exit(main())
