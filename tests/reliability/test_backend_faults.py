"""Nothing lost under backend faults: sessions while sendmail's sessions are killed at random
moments and the daemon itself is killed and started again.

Every message a client got a 250 for must have been delivered; every other client got a 4xx (or
lost its connection) and may retry; no client ever sees a 5xx from a fault. Messages delivered
without a 250 (sendmail delivered, then died before its reply got out) are counted, not refused.
"""

from __future__ import annotations

import asyncio
import random
import re
import threading
import time
from collections import Counter

import pytest

from tests.conftest import proxy_env, started_sendmail
from tests.support.load import read_reply
from tests.support.proxy import ProxyProcess

SESSIONS = 1000
CONCURRENCY = 20
BOX = "faults"


@pytest.fixture(scope="module")
def fragile_sendmail(tmp_path_factory, sendmail):
    yield from started_sendmail(tmp_path_factory, "fragile-sendmail")


async def one_session(port: int, number: int, replies: Counter[int], failed: Counter[str]) -> bool:
    """Deliver message ``number``; True if the end of data got a 250. ``failed`` counts the step at
    which sessions that got no 250 gave up (a 4xx or a lost connection)."""
    acked = False
    step = "connect"
    try:
        async with asyncio.timeout(30):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                lines = [
                    b"EHLO faults.example",
                    b"MAIL FROM:<f@sender.example>",
                    f"RCPT TO:<{BOX}@example.test>".encode(),
                    b"DATA",
                ]
                step = "banner"
                code = await read_reply(reader)
                replies[code] += 1
                for line in lines:
                    if code >= 400:
                        break
                    step = line.split(b" ", 1)[0].decode()
                    writer.write(line + b"\r\n")
                    code = await read_reply(reader)
                    replies[code] += 1
                if code != 354:
                    failed[step] += 1
                    return False
                step = "end of data"
                writer.write(f"Subject: fault-{number}\r\n\r\nmessage {number}\r\n.\r\n".encode())
                code = await read_reply(reader)
                replies[code] += 1
                acked = code == 250
                if not acked:
                    failed[step] += 1
                    return False
                writer.write(b"QUIT\r\n")
                replies[await read_reply(reader)] += 1
            finally:
                writer.close()
    except (OSError, TimeoutError, ConnectionError):
        if not acked:
            failed[step] += 1
    return acked


async def run_sessions(port: int, replies: Counter[int], failed: Counter[str]) -> set[int]:
    numbers = iter(range(SESSIONS))
    acked: set[int] = set()

    async def sender() -> None:
        for number in numbers:
            if await one_session(port, number, replies, failed):
                acked.add(number)

    await asyncio.gather(*(sender() for _ in range(CONCURRENCY)))
    return acked


def chaos(backend, stop: threading.Event, counts: Counter[str], seed: int) -> None:
    """Kill sendmail's sessions every 20-200 ms; three times, kill the daemon and start it again."""
    rng = random.Random(seed)
    restarts_due = sorted(rng.uniform(1, 6) for _ in range(3))  # the run lasts 10 s or more
    began = time.monotonic()
    while not stop.is_set():
        if restarts_due and time.monotonic() - began > restarts_due[0]:
            restarts_due.pop(0)
            backend.stop()
            counts["daemon_kills"] += 1
            time.sleep(rng.uniform(0.2, 1.0))  # clients get 421 meanwhile
            backend.start()
        else:
            counts["session_kills"] += backend.kill_sessions()
        stop.wait(rng.uniform(0.02, 0.2))


def test_no_acknowledged_message_is_lost_while_the_backend_is_killed(fragile_sendmail):
    backend = fragile_sendmail
    backend.clear()
    env = proxy_env(
        backend.port,
        greet_pause="100ms",
        client_concurrency="500",
        client_rate="100000",
        backend_connect_timeout="3s",
        command_timeout="10s",
        log_level="info",
    )
    proxy = ProxyProcess(env).start()
    replies: Counter[int] = Counter()
    failed: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    stop = threading.Event()
    seed = random.randrange(1 << 30)
    thread = threading.Thread(target=chaos, args=(backend, stop, counts, seed), daemon=True)
    began = time.monotonic()
    thread.start()
    try:
        acked = asyncio.run(run_sessions(proxy.port, replies, failed))
    finally:
        stop.set()
        thread.join(30)
    elapsed = time.monotonic() - began
    if not backend.is_running():
        backend.start()
    delivered = Counter(
        int(match.group(1))
        for raw in backend.messages(BOX)
        if (match := re.search(rb"Subject: fault-(\d+)", raw))
    )
    lost = acked - set(delivered)
    duplicates = {number: count for number, count in delivered.items() if count > 1}
    unacked_delivered = set(delivered) - acked
    print(
        f"\n{SESSIONS} sessions in {elapsed:.1f}s (seed {seed}): {counts['session_kills']} session kills, "
        f"{counts['daemon_kills']} daemon kills; {len(acked)} acknowledged, {len(delivered)} delivered, "
        f"{len(lost)} lost, {len(duplicates)} duplicated, {len(unacked_delivered)} delivered without "
        f"a 250; replies {dict(sorted(replies.items()))}; no 250, by step: {dict(failed)}"
    )
    assert not lost, f"acknowledged but never delivered: {sorted(lost)[:20]}"
    assert not duplicates
    assert not [code for code in replies if code >= 500], replies  # a fault is never a 5xx
    assert counts["session_kills"] > 0 and counts["daemon_kills"] == 3
    assert len(acked) > SESSIONS // 10  # the run was not all failures
    assert proxy.process is not None and proxy.process.poll() is None  # the proxy stayed up
    proxy.stop()
    assert not proxy.tracebacks(), proxy.tracebacks()[:5]
