"""Many polite SMTP clients at once (asyncio, loopback only, bounded in count and time)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Outcome:
    number: int
    codes: list[int] = field(default_factory=list)  # every reply code the client got, in order
    banner_after: float = 0.0  # seconds from connect to the 220 (or the refusal)
    error: str = ""

    @property
    def delivered(self) -> bool:
        return self.codes[-2:] == [250, 221]


async def read_reply(reader: asyncio.StreamReader) -> int:
    """The code of the next whole reply (multi-line replies read to their last line)."""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed by the server")
        if line[3:4] != b"-":
            return int(line[:3])


async def polite_client(port: int, number: int, timeout: float) -> Outcome:
    """Wait for the banner, deliver one message to ``load<number>@example.test``, quit."""
    outcome = Outcome(number)
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                outcome.codes.append(await read_reply(reader))
                outcome.banner_after = time.monotonic() - started
                if outcome.codes[-1] != 220:
                    return outcome
                for line in (
                    b"EHLO load.example",
                    b"MAIL FROM:<load@sender.example>",
                    f"RCPT TO:<load{number}@example.test>".encode(),
                    b"DATA",
                ):
                    writer.write(line + b"\r\n")
                    outcome.codes.append(await read_reply(reader))
                writer.write(f"Subject: load {number}\r\n\r\nmessage {number}\r\n.\r\n".encode())
                outcome.codes.append(await read_reply(reader))
                writer.write(b"QUIT\r\n")
                outcome.codes.append(await read_reply(reader))
            finally:
                writer.close()
    except (OSError, TimeoutError) as error:
        outcome.error = repr(error)
    return outcome


def swarm(port: int, count: int, timeout: float = 90) -> list[Outcome]:
    """``count`` polite clients connecting in the same instant."""

    async def everyone() -> list[Outcome]:
        return await asyncio.gather(*(polite_client(port, number, timeout) for number in range(count)))

    return asyncio.run(everyone())


def established(port: int, source: str = "127.0.0.2") -> set[str]:
    """The established TCP connections from ``source`` to 127.0.0.1:port, seen at the connecting
    side (there a socket leaves ESTABLISHED inside close() itself; the server's side waits for the
    FIN to be processed). The proxy's accepted client sockets use ephemeral ports too, hence the
    source address in the filter."""
    result = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( dst 127.0.0.1:{port} and src {source} )"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return {" ".join(line.split()[2:4]) for line in result.stdout.splitlines()}


class PeakCounter:
    """Samples the connections open to ``port`` every few milliseconds in a thread; ``peak`` is
    the most seen at once.

    The kernel's walk of its connection table is not atomic: one walk can catch a connection that
    closes on the other core and then the one that replaces it, and count both. A connection found
    by two walks in a row was open throughout the time between them, so the size of the
    intersection never counts two connections that were not open together.
    """

    def __init__(self, port: int, interval: float = 0.005) -> None:
        self.port = port
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        previous: set[str] = set()
        while not self._stop.is_set():
            current = established(self.port)
            self.peak = max(self.peak, len(current & previous))
            previous = current
            time.sleep(self.interval)

    def __enter__(self) -> PeakCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
