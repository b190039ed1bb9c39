"""What STARTTLS costs the proxy: CPU per session with a handshake against CPU per plain session.

    python3 -m bench.tls [--sessions 200] [--concurrency 10] [--rounds 3]

For an RSA-2048 and an ECDSA P-256 certificate (made in the run by trustme), the proxy relays
sessions to a real sendmail on loopback: plain ones (EHLO, QUIT) and TLS ones (EHLO, STARTTLS,
EHLO, QUIT), in alternating rounds. The proxy's CPU time (user + system, from /proc) per session
is measured for each; the difference is the handshake's cost. Every loop is bounded in count and
time; only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import statistics
import sys
import time
from pathlib import Path

import trustme

from bench.core import bench_parser, command, wait_listening, with_sendmail
from bench.system import cpu_seconds
from tests.support.load import read_reply
from tests.support.proxy import ProxyProcess, free_port
from tests.support.sendmail import Sendmail
from tests.support.tls import CertFiles, write_pair

HOSTNAME = "proxy.bench.test"


async def session(port: int, context: ssl.SSLContext | None) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.2", 0))
    assert await read_reply(reader) == 220
    assert await command(reader, writer, b"EHLO bench.example") == 250
    if context is not None:
        assert await command(reader, writer, b"STARTTLS") == 220
        await writer.start_tls(context, server_hostname=HOSTNAME)
        assert await command(reader, writer, b"EHLO bench.example") == 250
    await command(reader, writer, b"QUIT")
    writer.close()


async def cpu_per_session(
    proxy: ProxyProcess, context: ssl.SSLContext | None, sessions: int, concurrency: int
) -> float:
    """Proxy CPU seconds per session, over ``sessions`` run ``concurrency`` at a time."""
    limit = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with limit:
            await session(proxy.port, context)

    before = cpu_seconds(proxy.pid)
    await asyncio.wait_for(asyncio.gather(*(one() for _ in range(sessions))), timeout=300)
    await asyncio.sleep(0.2)  # the proxy's side of the last closes
    return (cpu_seconds(proxy.pid) - before) / sessions


def start_proxy(sendmail: Sendmail, certs: CertFiles) -> ProxyProcess:
    return ProxyProcess(
        {
            "GREETPROXY_LISTEN": f"127.0.0.1:{free_port()}",
            "GREETPROXY_BACKEND": f"127.0.0.1:{sendmail.port}",
            "GREETPROXY_GREET_PAUSE": "0",
            "GREETPROXY_HOSTNAME": HOSTNAME,
            "GREETPROXY_LOG_LEVEL": "warning",
            "GREETPROXY_PASS_TTL": "0",
            "GREETPROXY_CLIENT_RATE": "100000",
            "GREETPROXY_CLIENT_CONCURRENCY": "1000",
            "GREETPROXY_TLS_CERT": str(certs.cert),
            "GREETPROXY_TLS_KEY": str(certs.key),
        }
    ).start(wait_for=None)


async def measure(args: argparse.Namespace, sendmail: Sendmail, workdir: Path) -> int:
    ca = trustme.CA()
    print(
        f"proxy CPU per session, {args.sessions} sessions x {args.rounds} rounds, "
        f"{args.concurrency} at a time (median of rounds):"
    )
    for key_type, label in ((trustme.KeyType.RSA, "RSA-2048"), (trustme.KeyType.ECDSA, "ECDSA P-256")):
        certs = write_pair(ca, workdir / key_type.name, HOSTNAME, key_type=key_type)
        proxy = start_proxy(sendmail, certs)
        try:
            await wait_listening(proxy.port)
            context = certs.client_context()
            await cpu_per_session(proxy, context, 20, args.concurrency)  # warm up
            plain, secure = [], []
            began = time.monotonic()
            for _ in range(args.rounds):
                plain.append(await cpu_per_session(proxy, None, args.sessions, args.concurrency))
                secure.append(await cpu_per_session(proxy, context, args.sessions, args.concurrency))
            elapsed = time.monotonic() - began
        finally:
            proxy.stop()
        plain_ms, secure_ms = statistics.median(plain) * 1e3, statistics.median(secure) * 1e3
        print(
            f"  {label:12} plain {plain_ms:.2f} ms, STARTTLS {secure_ms:.2f} ms: "
            f"handshake {secure_ms - plain_ms:.2f} ms CPU ({secure_ms / plain_ms:.1f}x a plain session; "
            f"{elapsed:.0f} s wall)"
        )
    return 0


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--sessions", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    return with_sendmail(lambda sendmail, workdir: measure(args, sendmail, workdir))


if __name__ == "__main__":
    sys.exit(main())
