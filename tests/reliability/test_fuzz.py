"""A socket-level fuzzer: random and mutated SMTP dialogues into a running proxy in front of the
real sendmail. The proxy never crashes or logs a traceback, every reply it sends is a well-formed
SMTP reply, and its memory and descriptors come back to where they were."""

from __future__ import annotations

import asyncio
import random
import re

from tests.conftest import proxy_env
from tests.support.proxy import ProxyProcess

DIALOGUES = 300
CONCURRENCY = 10
REPLY_LINE = re.compile(rb"^[2-5]\d\d(?:[ -][\x20-\x7e\x80-\xff]*)?$")

COMMANDS = [
    b"EHLO fuzz.example",
    b"HELO fuzz.example",
    b"MAIL FROM:<f@sender.example>",
    b"MAIL FROM:<>",
    b"RCPT TO:<fuzz@example.test>",
    b"RCPT TO:<unknown@example.test>",
    b"DATA",
    b"RSET",
    b"NOOP",
    b"VRFY fuzz",
    b"HELP",
    b"STARTTLS",
    b"AUTH PLAIN AGZvbwBiYXI=",
    b"BDAT 10 LAST",
    b"QUIT",
]


def mutate(rng: random.Random, line: bytes) -> bytes:
    kind = rng.randrange(10)
    if kind == 0:  # NUL bytes
        at = rng.randrange(len(line) + 1)
        return line[:at] + b"\0" * rng.randint(1, 4) + line[at:]
    if kind == 1:  # invalid UTF-8
        return line + b" \xff\xfe\xc3"
    if kind == 2:  # a bare CR or LF inside
        at = rng.randrange(len(line) + 1)
        return line[:at] + rng.choice([b"\r", b"\n", b"\n.\n", b"\r.\r"]) + line[at:]
    if kind == 3:  # far too long
        return line + b"x" * rng.choice([600, 1100, 5000, 70000])
    if kind == 4:  # a huge parameter list
        return line + b"".join(b" X%d=%d" % (index, index) for index in range(rng.randint(50, 400)))
    if kind == 5:  # random bytes
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
    if kind == 6:  # case and spacing
        return line.lower().replace(b" ", b"  ")
    return line


def dialogue(rng: random.Random) -> list[bytes]:
    """Writes to send, each possibly several commands (pipelined)."""
    writes: list[bytes] = []
    if rng.random() < 0.05:  # 10k RCPT lines in one go
        writes.append(b"EHLO fuzz.example\r\nMAIL FROM:<f@sender.example>\r\n")
        writes.append(b"RCPT TO:<fuzz@example.test>\r\n" * 10_000)
        writes.append(b"QUIT\r\n")
        return writes
    for _ in range(rng.randint(1, 12)):
        line = mutate(rng, rng.choice(COMMANDS))
        ending = rng.choice([b"\r\n"] * 8 + [b"\n", b"\r", b""])
        text = line + ending
        if line == b"DATA" and rng.random() < 0.7:
            body = rng.choice(
                [
                    b"Subject: fuzz\r\n\r\nbody\r\n.\r\n",
                    b"x\n.\nMAIL FROM:<smuggled@x>\r\n.\r\n",
                    b"\0\0\0\r\n.\r\n",
                    b"y" * 2000 + b"\r\n.\r\n",
                    bytes(rng.randrange(256) for _ in range(300)),
                ]
            )
            text += body
        writes.append(text)
    if rng.random() < 0.3:
        writes.append(b"QUIT\r\nNOOP\r\nMAIL FROM:<after@quit>\r\n")  # commands after QUIT
    return writes


async def run_one(port: int, writes: list[bytes], early: bool) -> bytes:
    received = bytearray()
    try:
        async with asyncio.timeout(20):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                if not early:
                    received += await reader.readuntil(b"\r\n")
                for data in writes:
                    writer.write(data)
                    await writer.drain()
                    try:
                        async with asyncio.timeout(0.3):
                            received += await reader.read(1 << 20)
                    except TimeoutError:
                        pass
                writer.write_eof()
                while chunk := await reader.read(1 << 20):
                    received += chunk
            finally:
                writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        pass
    return bytes(received)


def malformed(received: bytes) -> list[bytes]:
    """The reply lines that are not SMTP replies: each ends with CRLF, has a code, no bare CR/LF."""
    if not received:
        return []
    if not received.endswith(b"\r\n"):
        trailing = received.rsplit(b"\r\n", 1)[-1]
        return [b"unterminated: " + trailing[:80]]
    return [
        line[:80]
        for line in received[:-2].split(b"\r\n")
        if not REPLY_LINE.match(line) or b"\n" in line or b"\r" in line
    ]


def test_random_and_mutated_dialogues_get_only_well_formed_replies(sendmail):
    backend = sendmail
    proxy = ProxyProcess(
        proxy_env(
            backend.port, greet_pause="0", client_concurrency="500", client_rate="100000", max_errors="1000"
        )
    ).start()
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    cases = [(dialogue(rng), rng.random() < 0.1) for _ in range(DIALOGUES)]

    async def fuzz(batch: list[tuple[list[bytes], bool]]) -> list[bytes]:
        limit = asyncio.Semaphore(CONCURRENCY)

        async def one(case: tuple[list[bytes], bool]) -> bytes:
            async with limit:
                return await run_one(proxy.port, *case)

        return await asyncio.gather(*(one(case) for case in batch))

    asyncio.run(fuzz(cases[:20]))  # warm up: imports, caches, the first backend connections
    before = proxy.rss_kb(), proxy.open_fds()
    results = asyncio.run(fuzz(cases))
    proxy.wait_count("disconnect", DIALOGUES + 20, timeout=60)
    after = proxy.rss_kb(), proxy.open_fds()
    bad = [(index, lines) for index, received in enumerate(results) if (lines := malformed(received))]
    rss, fds = f"rss {before[0]} -> {after[0]} kB", f"fds {before[1]} -> {after[1]}"
    print(f"\nseed {seed}: {DIALOGUES} dialogues, {rss}, {fds}")
    assert not bad, f"seed {seed}: malformed replies {bad[:5]}"
    assert proxy.process is not None and proxy.process.poll() is None
    assert after[1] == before[1], "descriptors left open"
    assert after[0] - before[0] < 20_000, "memory grew by more than 20 MB"
    proxy.stop()
    assert not proxy.tracebacks(), proxy.tracebacks()[:5]
