"""What a waiting connection costs: N clients held in a 30 s greet pause by greetproxy (one process)
and by sendmail's own FEATURE(greet_pause) (a process per connection), in one run.

    python3 -m bench.held [--counts 1000,5000] [--sendmail-max 1000]

For the proxy: growth of RSS and of private memory (USS, from /proc/PID/smaps_rollup) per held
connection, and open descriptors. For sendmail: its children and the sum of their private memory
(and PSS), for as many connections as --sendmail-max (every one forks a sendmail). Loopback only;
every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import sys
import time
from pathlib import Path

from bench.core import bench_parser, proxy_for, wait_listening, with_sendmail
from tests.support.proxy import free_port
from tests.support.sendmail import Sendmail

PAUSE = 30.0


def memory_kb(pid: int) -> dict[str, int]:
    """RSS, PSS and USS (private clean + dirty) of one process, in kB."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    fields = {name: int(value) for name, value in re.findall(r"^(\w+):\s+(\d+) kB", text, re.M)}
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "uss": fields["Private_Clean"] + fields["Private_Dirty"],
    }


async def hold(port: int, count: int) -> list[asyncio.StreamWriter]:
    """``count`` connections, opened 100 at a time, that say nothing."""
    writers: list[asyncio.StreamWriter] = []
    for start in range(0, count, 100):
        batch = await asyncio.wait_for(
            asyncio.gather(
                *(asyncio.open_connection("127.0.0.1", port) for _ in range(min(100, count - start)))
            ),
            timeout=60,
        )
        writers += [writer for _, writer in batch]
    return writers


async def measure(args: argparse.Namespace, sendmail: Sendmail, workdir: Path) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    counts = [int(text) for text in args.counts.split(",")]
    print(f"held in a {PAUSE:g} s greet pause:")
    proxy = proxy_for(
        sendmail,
        PAUSE,
        GREETPROXY_CLIENT_CONCURRENCY=str(max(counts) + 10),
        GREETPROXY_CLIENT_RATE="1000000",
        GREETPROXY_MAX_CONNECTIONS=str(max(counts) + 10),
        GREETPROXY_STRESS_GREET_PAUSE=f"{PAUSE:g}s",  # measure the pause itself, not stress mode
    )
    try:
        await wait_listening(proxy.port)
        await asyncio.sleep(1)
        base = memory_kb(proxy.pid)
        for count in counts:
            writers = await hold(proxy.port, count)
            await asyncio.sleep(1)
            held = memory_kb(proxy.pid)
            fds = len(list(Path(f"/proc/{proxy.pid}/fd").iterdir()))
            per_rss = (held["rss"] - base["rss"]) * 1024 / count
            per_uss = (held["uss"] - base["uss"]) * 1024 / count
            print(
                f"  greetproxy   {count:6} held: RSS {base['rss']} -> {held['rss']} kB "
                f"({per_rss:.0f} B each), USS {per_uss:.0f} B each, 1 process, {fds} fds"
            )
            for writer in writers:
                writer.close()
            await asyncio.sleep(2)
    finally:
        proxy.stop()

    paused = Sendmail(
        workdir / "greet-pause-sendmail",
        free_port(),
        extra_mc=f"FEATURE(`greet_pause', `{int(PAUSE * 1000)}')dnl\n",
    )
    paused.start(timeout=PAUSE + 30)  # its own start-up check waits out the pause too
    try:
        count = args.sendmail_max
        started = time.monotonic()
        writers = await hold(paused.port, count)
        await asyncio.sleep(2)
        kids = paused.session_pids()
        usage = [memory_kb(pid) for pid in kids]
        uss = sum(item["uss"] for item in usage)
        pss = sum(item["pss"] for item in usage)
        print(
            f"  sendmail     {count:6} held: {len(kids)} processes after {time.monotonic() - started:.1f} s, "
            f"USS {uss} kB ({uss * 1024 / max(len(kids), 1):.0f} B each), PSS {pss} kB"
        )
        for writer in writers:
            writer.close()
    finally:
        paused.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return 0


def main() -> int:
    parser = bench_parser(__doc__)
    parser.add_argument("--counts", default="1000,5000", help="held connections for the proxy")
    parser.add_argument("--sendmail-max", type=int, default=1000, help="held connections for sendmail")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench.held: needs root (sendmail runs in a private mount namespace)", file=sys.stderr)
        return 1
    return with_sendmail(lambda sendmail, workdir: measure(args, sendmail, workdir))


if __name__ == "__main__":
    sys.exit(main())
