"""10,000 slowloris clients: each that gets a banner dribbles its EHLO a byte at a time; the rest
wait for a backend connection. Every one is cut off (at the command timeout, or by the backend
queue timeout), none hangs, the proxy's memory stays bounded and its descriptors come back."""

from __future__ import annotations

import asyncio
import resource
import threading
import time
from collections import Counter

from tests.conftest import proxy_env
from tests.support.proxy import ProxyProcess

CLIENTS = 10_000
BACKEND_SLOTS = 50
LINE = b"EHLO slow.example\r\n"  # a byte every 0.5 s: 9.5 s for the line, the timeout is 2 s


async def slowloris(
    port: int,
    outcomes: Counter[str],
    start: asyncio.Event,
    connecting: asyncio.Semaphore,
    connected: list[int],
) -> None:
    try:
        async with connecting:  # a burst beyond the SYN backlog would only measure the kernel
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        outcomes["connect_error"] += 1
        connected[0] += 1
        return
    connected[0] += 1
    try:
        await start.wait()  # all connected before the first of them talks
        async with asyncio.timeout(60):
            first = await reader.readline()
            if not first.startswith(b"220"):
                outcomes[first[:9].decode()] += 1
                return
            for byte in LINE:
                writer.write(bytes([byte]))
                try:
                    async with asyncio.timeout(0.5):
                        answer = await reader.readline()
                except TimeoutError:
                    continue
                outcomes[answer[:9].decode() or "closed"] += 1
                return
            outcomes["whole_line_sent"] += 1
    except TimeoutError:
        outcomes["hung"] += 1
    except OSError:
        outcomes["reset"] += 1
    finally:
        writer.close()


def test_ten_thousand_slowloris_clients_are_cut_off_with_bounded_memory(backend):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds 10k sockets too
    proxy = ProxyProcess(
        proxy_env(
            backend.port,
            greet_pause="0",
            command_timeout="2s",
            backend_max_connections=str(BACKEND_SLOTS),
            backend_queue_timeout="5s",
            client_concurrency="20000",
            client_rate="1000000",
            log_level="info",
        )
    ).start(wait_for=None)
    time.sleep(1.5)
    baseline, fds_before = proxy.rss_kb(), proxy.open_fds()
    peak = [baseline]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.1):
            peak[0] = max(peak[0], proxy.rss_kb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    outcomes: Counter[str] = Counter()

    async def everyone() -> float:
        start = asyncio.Event()
        connecting, connected = asyncio.Semaphore(100), [0]
        tasks = [
            asyncio.ensure_future(slowloris(proxy.port, outcomes, start, connecting, connected))
            for _ in range(CLIENTS)
        ]
        async with asyncio.timeout(60):
            while connected[0] < CLIENTS:  # all in (the first are greeted already), then talk
                await asyncio.sleep(0.1)
        began = time.monotonic()
        start.set()
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
        return time.monotonic() - began

    try:
        elapsed = asyncio.run(everyone())
    finally:
        sampling.set()
        sampler.join()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    time.sleep(1)
    fds_after = proxy.open_fds()
    per_connection = (peak[0] - baseline) * 1024 / CLIENTS
    print(
        f"\n{CLIENTS} slowloris clients in {elapsed:.1f}s: {dict(outcomes)}; proxy RSS {baseline} -> peak "
        f"{peak[0]} kB ({per_connection:.0f} bytes a connection), fds {fds_before} -> {fds_after}"
    )
    assert outcomes["hung"] == 0 and outcomes["whole_line_sent"] == 0 and outcomes["connect_error"] == 0
    assert outcomes["421 4.4.2"] >= BACKEND_SLOTS  # greeted, then cut off at the command timeout
    assert sum(outcomes.values()) == CLIENTS
    assert set(outcomes) <= {"421 4.4.2", "421 4.3.2", "reset", "closed"}, outcomes
    assert per_connection < 16 * 1024
    assert fds_after <= fds_before + 2
    proxy.stop()
    assert not proxy.tracebacks(), proxy.tracebacks()[:3]
