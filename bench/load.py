"""The load generator: asyncio SMTP clients of several kinds, mixed in chosen proportions.

Kinds (the mix gives each a share; the clients of a run come in that proportion, evenly spread):

    polite      waits for the banner, EHLO, delivers ``messages`` messages one command at a time, QUIT
    pipelining  the same, with MAIL, RCPT and DATA in one write (RFC 2920)
    slow        a polite sender whose every line goes out a few bytes at a time (a slow link)
    early       replays a whole dialogue the moment the connection is up (a bot)
    midpause    the same dialogue, sent part-way through the greet pause
    idle        connects and says nothing: until told to let go (hold mode), else until it hangs up
                part-way through the pause

A plan bounds everything: clients in all (``count``), seconds of arrivals (``duration``), connects in
flight (``in_flight``: a burst of thousands of SYNs overflows the listen backlog and stalls in the
kernel), clients open at once (``concurrency``) and seconds per client (``timeout``). Clients come
from the plan's loopback ``sources`` in turn, so no per-address limit or port range is in the way.

Run it in-process (``await run_plan(plan)``) or in a process of its own (``python -m bench.load
--plan JSON``, which is what bench.run does, so that its CPU time is its own): it then writes JSON
lines on stdout, ``progress`` every half second, ``held`` in hold mode (and waits for a line on stdin
before it lets go), and ``result`` at the end.

It measures itself: CPU time against wall time, and how late its event loop ran. A generator that
kept 90% of a core busy, or whose loop ran 50 ms late at the 99th percentile, was saturated: what it
measured is then partly its own limit, and the result says so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import os
import random
import select
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.report import percentile
from bench.system import cpu_seconds, meminfo_kb, own_cpu_seconds, raise_file_limit, tasks
from tests.support.load import read_reply
from tests.support.processes import terminate

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("polite", "pipelining", "slow", "early", "midpause", "idle")
SENDERS = ("polite", "pipelining", "slow")
SATURATED_SHARE = 0.90  # of one core
SATURATED_LAG = 0.050  # seconds late, 99th percentile
LAG_TICK = 0.05
DOMAIN = "example.test"

Event = dict[str, Any]


@dataclass
class Plan:
    port: int
    mix: dict[str, float]
    count: int  # clients at most
    duration: float  # seconds: no new client after it
    host: str = "127.0.0.1"
    rate: float = 0.0  # new clients per second; 0: as fast as the slots allow
    in_flight: int = 100  # connects not yet established, at most
    concurrency: int = 1000  # clients open at once, at most
    sources: list[str] = field(default_factory=lambda: ["127.0.0.1"])
    sources_by_kind: dict[str, list[str]] = field(default_factory=dict)  # instead of ``sources``
    pause: float = 0.0  # the server's greet pause: midpause and idle clients act inside it
    messages: int = 1  # per sender
    size: int = 0  # message text in bytes; 0: a small message of about 150 bytes
    hold: bool = False  # idle clients stay until released; ``held`` is reported once all connected
    barrier: bool = False  # senders greet, then wait for each other; only the messages are timed
    timeout: float = 60.0  # per client
    seed: int = 1
    watch: list[int] = field(default_factory=list)  # pids whose CPU time is read at start and end
    guard_mem_kb: int = 0  # no new client while MemAvailable is below this
    guard_tasks: int = 0  # no new client while the machine runs more tasks than this
    slow_chunk: int = 4  # bytes per write, slow senders
    slow_delay: float = 0.05  # seconds between their writes
    progress: float = 0.5  # seconds between progress events; 0: none

    def __post_init__(self) -> None:
        unknown = set(self.mix) - set(KINDS)
        if unknown or not self.mix or any(share <= 0 for share in self.mix.values()):
            raise ValueError(f"mix {self.mix}: kinds are {', '.join(KINDS)}, each with a share > 0")
        if self.count < 1 or self.duration <= 0 or self.in_flight < 1 or self.concurrency < 1:
            raise ValueError("count, duration, in_flight and concurrency must be positive")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Plan:
        return cls(**json.loads(text))


def senders_plan(port: int, senders: int, messages: int, size: int = 0, watch: Sequence[int] = ()) -> Plan:
    """``senders`` polite senders from 127.0.0.2 (the proxy's backend source address, so that a
    backend treats direct senders and the proxy alike), one session each, delivering ``messages``
    messages of ``size`` bytes; only the messages are timed, once every sender has greeted."""
    return Plan(
        port,
        {"polite": 1},
        senders,
        duration=60,
        concurrency=senders,
        sources=["127.0.0.2"],
        messages=messages,
        size=size,
        barrier=True,
        timeout=300,
        watch=list(watch),
    )


def kind_sequence(mix: Mapping[str, float]) -> Iterator[str]:
    """Kinds in the proportions of ``mix``, evenly spread: after n clients each kind has had its
    share of n, rounded up or down."""
    total = sum(mix.values())
    had = dict.fromkeys(mix, 0)
    number = 0
    while True:
        number += 1
        kind = max(mix, key=lambda name: mix[name] / total * number - had[name])
        had[kind] += 1
        yield kind


def loopback_sources(block: int, count: int) -> list[str]:
    """``count`` source addresses 127.<block>.x.y (no .0 or .255 in the last place)."""
    if not 1 <= block <= 254 or not 1 <= count <= 250 * 256:
        raise ValueError(f"block {block}, count {count}")
    return [f"127.{block}.{index // 250}.{1 + index % 250}" for index in range(count)]


def saturation(cpu: float, wall: float, lags: Sequence[float]) -> dict[str, float | bool]:
    """The generator's own load over ``wall`` seconds: share of a core, loop lag, and the verdict."""
    share = cpu / wall if wall > 0 else 0.0
    lag_p99 = percentile(lags, 99) if lags else 0.0
    return {
        "cpu": round(cpu, 3),
        "wall": round(wall, 3),
        "share": round(share, 3),
        "lag_p99": round(lag_p99, 4),
        "lag_max": round(max(lags, default=0.0), 4),
        "saturated": share >= SATURATED_SHARE or lag_p99 >= SATURATED_LAG,
    }


_BODIES: dict[int, bytes] = {}


def message(number: int, size: int) -> bytes:
    """A message of about ``size`` bytes (0: about 150), ending with the dot line."""
    if size not in _BODIES:
        if size <= 0:
            _BODIES[size] = b"x" * 70 + b"\r\n" * 12
        else:
            line = b"x" * 76 + b"\r\n"
            _BODIES[size] = line * max(1, size // len(line))
    head = f"Subject: bench {number}\r\nFrom: bench@sender.example\r\n\r\n".encode()
    return head + _BODIES[size] + b".\r\n"


def bot_dialogue(number: int) -> bytes:
    """What a bot replays without waiting for any reply: a whole delivery to the ``bot`` box."""
    return (
        f"EHLO bot{number}.example\r\nMAIL FROM:<bot{number}@bot.example>\r\n"
        f"RCPT TO:<bot@{DOMAIN}>\r\nDATA\r\nSubject: bot {number}\r\n\r\nbuy now\r\n.\r\nQUIT\r\n"
    ).encode()


class _Wire(asyncio.Protocol):
    """A bare client connection for bots and idle clients: what arrived, and when it closed."""

    __slots__ = ("transport", "data", "done")

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.transport: asyncio.Transport | None = None
        self.data = b""
        self.done = done

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if len(self.data) < 4096:
            self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def reply(self) -> str:
        code = self.data[:3]
        return f"reply_{code.decode()}" if code.isdigit() else "closed"


class _Stamped(asyncio.StreamReaderProtocol):
    """A stream protocol that notes when the connection was made and when its first bytes came."""

    connected = 0.0
    first_data = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.connected = time.monotonic()
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.first_data:
            self.first_data = time.monotonic()
        super().data_received(data)


class Run:
    """One plan being carried out."""

    def __init__(self, plan: Plan, emit: Callable[[Event], None] | None) -> None:
        self.plan = plan
        self.emit = emit
        self.loop = asyncio.get_running_loop()
        self.connecting = asyncio.Semaphore(plan.in_flight)
        self.open = asyncio.Semaphore(plan.concurrency)
        self.released = asyncio.Event()
        self.go = asyncio.Event()
        self.outcomes: dict[str, Counter[str]] = {kind: Counter() for kind in plan.mix}
        self.banner: list[float] = []
        self.delivered: Counter[str] = Counter()
        self.delivered_at: list[float] = []  # when each message had its 250
        self.first_done = 0.0  # when the first sender had its last message's 250: all ran until then
        self.lags: list[float] = []
        self.late: list[float] = []  # arrivals behind their schedule, seconds
        self.connects: list[float] = []  # seconds each connect took
        self.started = 0
        self.finished = 0
        self.greeted = 0  # senders past EHLO, for the barrier
        self.pending = 0  # clients launched and not yet past their connect
        self.idle: set[_Wire] = set()  # idle clients connected now
        self.tasks: set[asyncio.Task[None]] = set()
        self.rng = random.Random(plan.seed)

    # -- the clients ------------------------------------------------------------------------

    async def _connect_bare(self, source: str) -> tuple[_Wire, asyncio.Future[None]]:
        done: asyncio.Future[None] = self.loop.create_future()
        try:
            async with self.connecting:
                began = time.monotonic()
                _, wire = await self.loop.create_connection(
                    lambda: _Wire(done), self.plan.host, self.plan.port, local_addr=(source, 0)
                )
                self.connects.append(time.monotonic() - began)
        finally:
            self.pending -= 1
        return wire, done

    async def _connect_streams(
        self, source: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, _Stamped]:
        """asyncio.open_connection, with the protocol that notes when the connection was made and
        when its first bytes came."""
        reader = asyncio.StreamReader(loop=self.loop)
        protocol = _Stamped(reader, loop=self.loop)
        try:
            async with self.connecting:
                began = time.monotonic()
                transport, _ = await self.loop.create_connection(
                    lambda: protocol, self.plan.host, self.plan.port, local_addr=(source, 0)
                )
                self.connects.append(time.monotonic() - began)
        finally:
            self.pending -= 1
        return reader, asyncio.StreamWriter(transport, protocol, reader, self.loop), protocol

    async def bot(self, number: int, source: str, delay: float) -> str:
        wire, done = await self._connect_bare(source)
        assert wire.transport is not None
        try:
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(done), delay)
            if not done.done() and not wire.data:  # a server that refused us at once hears nothing
                wire.transport.write(bot_dialogue(number))
            await done
            return wire.reply()
        finally:
            wire.transport.close()

    async def idle_client(self, source: str, hang_up_after: float) -> str:
        wire, done = await self._connect_bare(source)
        assert wire.transport is not None
        self.idle.add(wire)
        other = asyncio.ensure_future(
            self.released.wait() if self.plan.hold else asyncio.sleep(hang_up_after)
        )
        try:
            await asyncio.wait([done, other], return_when=asyncio.FIRST_COMPLETED)
            if wire.data or done.done():
                return wire.reply()
            return "held" if self.plan.hold else "hangup"
        finally:
            other.cancel()
            self.idle.discard(wire)
            wire.transport.close()

    async def sender(self, number: int, source: str, kind: str) -> str:
        reader, writer, stamps = await self._connect_streams(source)
        slow = kind == "slow"

        async def say(data: bytes) -> None:
            if not slow:
                writer.write(data)
                return
            for start in range(0, len(data), self.plan.slow_chunk):
                writer.write(data[start : start + self.plan.slow_chunk])
                await writer.drain()
                await asyncio.sleep(self.plan.slow_delay)

        async def expect(line: bytes, wanted: int, name: str) -> str | None:
            await say(line)
            code = await read_reply(reader)
            return None if code == wanted else f"{name}_{code}"

        try:
            code = await read_reply(reader)
            # on the protocol's callbacks: the loop's lag in resuming this task is not in it
            self.banner.append(stamps.first_data - stamps.connected)
            if code != 220:
                return f"banner_{code}"
            if failed := await expect(b"EHLO sender.example\r\n", 250, "ehlo"):
                return failed
            if self.plan.barrier:
                self.greeted += 1
                await self.go.wait()
            for index in range(self.plan.messages):
                rcpt = f"RCPT TO:<legit{index % 7}@{DOMAIN}>\r\n".encode()
                mail = f"MAIL FROM:<sender{number}@sender.example>\r\n".encode()
                if kind == "pipelining":
                    writer.write(mail + rcpt + b"DATA\r\n")
                    codes = [await read_reply(reader) for _ in range(3)]
                    if codes != [250, 250, 354]:
                        return "pipelined_" + "_".join(map(str, codes))
                else:
                    for line, wanted, name in (
                        (mail, 250, "mail"),
                        (rcpt, 250, "rcpt"),
                        (b"DATA\r\n", 354, "data"),
                    ):
                        if failed := await expect(line, wanted, name):
                            return failed
                if failed := await expect(message(number, self.plan.size), 250, "dot"):
                    return failed
                self.delivered["legit"] += 1
                self.delivered_at.append(time.monotonic())
            self.first_done = self.first_done or time.monotonic()
            await expect(b"QUIT\r\n", 221, "quit")
            return "delivered"
        finally:
            writer.close()

    async def client(self, number: int, kind: str) -> None:
        plan = self.plan
        sources = plan.sources_by_kind.get(kind, plan.sources)
        source = sources[number % len(sources)]
        try:
            async with asyncio.timeout(plan.timeout):
                if kind == "early":
                    outcome = await self.bot(number, source, 0.0)
                elif kind == "midpause":
                    outcome = await self.bot(number, source, plan.pause * self.rng.uniform(0.2, 0.8))
                elif kind == "idle":
                    outcome = await self.idle_client(source, plan.pause * self.rng.uniform(0.1, 0.9))
                else:
                    outcome = await self.sender(number, source, kind)
        except TimeoutError:
            outcome = "timeout"
        except ConnectionError as error:
            outcome = f"lost:{type(error).__name__}"
        except OSError as error:
            outcome = f"connect:{os.strerror(error.errno) if error.errno else type(error).__name__}"
        finally:
            self.open.release()
            self.finished += 1
        self.outcomes[kind][outcome] += 1

    # -- the run ----------------------------------------------------------------------------

    def _guard(self) -> str:
        if self.plan.guard_mem_kb and meminfo_kb("MemAvailable") < self.plan.guard_mem_kb:
            return f"memory: MemAvailable below {self.plan.guard_mem_kb // 1024} MB"
        if self.plan.guard_tasks and tasks() > self.plan.guard_tasks:
            return f"tasks: more than {self.plan.guard_tasks} on the machine"
        return ""

    async def _arrivals(self) -> str:
        plan = self.plan
        kinds = kind_sequence(plan.mix)
        began = time.monotonic()
        checked = began
        for number in range(plan.count):
            now = time.monotonic()
            if now - began >= plan.duration:
                return "duration"
            if now - checked >= 0.25 and (plan.guard_mem_kb or plan.guard_tasks):
                checked = now
                if reason := self._guard():
                    return reason
            if plan.rate:
                due = began + number / plan.rate
                if due > now:
                    await asyncio.sleep(due - now)
                else:
                    self.late.append(now - due)
            await self.open.acquire()
            # wait for a connect slot before the next arrival: never more SYNs in flight than asked
            async with self.connecting:
                pass
            self.pending += 1
            task = self.loop.create_task(self.client(number, next(kinds)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
            self.started += 1
            if self.started % 64 == 0:
                await asyncio.sleep(0)
        return "count"

    async def _lag_monitor(self) -> None:
        while True:
            before = self.loop.time()
            await asyncio.sleep(LAG_TICK)
            self.lags.append(max(0.0, self.loop.time() - before - LAG_TICK))

    async def _progress(self) -> None:
        began = time.monotonic()
        while self.plan.progress and self.emit is not None:
            # arrivals end at the count or at the duration, whichever comes first
            part = max(self.started / self.plan.count, (time.monotonic() - began) / self.plan.duration)
            self.emit(
                {
                    "event": "progress",
                    "fraction": round(min(part, 1.0), 3),
                    "started": self.started,
                    "done": self.finished,
                    "total": self.plan.count,
                }
            )
            await asyncio.sleep(self.plan.progress)

    def _connect_figures(self) -> Event:
        """How long connects took: p99, and how many took a second or more (a SYN the kernel
        dropped, e.g. at a full accept queue, is sent again after 1 s)."""
        return {
            "connect_p99": round(percentile(self.connects, 99), 4) if self.connects else 0.0,
            "slow_connects": sum(1 for seconds in self.connects if seconds >= 0.9),
        }

    def _watch(self) -> dict[int, float]:
        readings = {}
        for pid in self.plan.watch:
            with contextlib.suppress(OSError):
                readings[pid] = cpu_seconds(pid)
        return readings

    async def _all_connected(self, limit: float) -> None:
        """Every launched client past its connect (or failed), bounded in time."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not self.pending:
                return
            await asyncio.sleep(0.05)

    def _steady(self, began: float) -> dict[str, float]:
        """Messages a second while every sender was at work: from the start to the first sender's
        last message (after it, fewer senders share the backend, and the rate says less)."""
        if not self.first_done or self.first_done <= began:
            return {"messages": 0, "seconds": 0.0, "rate": 0.0}
        count = sum(1 for at in self.delivered_at if at <= self.first_done)
        seconds = self.first_done - began
        return {"messages": count, "seconds": round(seconds, 3), "rate": count / seconds}

    async def _barrier(self) -> None:
        """Wait until every sender has greeted (or ended), bounded in time."""
        deadline = time.monotonic() + min(self.plan.timeout, 60)
        while self.greeted < self.started - self.finished and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def carry_out(self, release: Callable[[], Any] | None) -> Event:
        plan = self.plan
        monitors = [self.loop.create_task(self._lag_monitor()), self.loop.create_task(self._progress())]
        cpu_before, began = own_cpu_seconds(), time.monotonic()
        watch_before = self._watch()
        result: Event = {}
        try:
            stopped = await self._arrivals()
            if plan.barrier:
                await self._barrier()
                cpu_before, began, watch_before = own_cpu_seconds(), time.monotonic(), self._watch()
                self.go.set()
            if plan.hold:
                await self._all_connected(min(plan.timeout, 30.0))  # a connect still pending is not held
                await asyncio.sleep(1.0)  # refusals (421 at a full server) arrive now
                held = sum(1 for wire in self.idle if not wire.data and not wire.done.done())
                connect_wall = time.monotonic() - began
                result["held"] = {
                    "held": held,
                    "tried": self.started,
                    "stopped": stopped,
                    "seconds": round(connect_wall, 2),
                    "spoke": sum(1 for wire in self.idle if wire.data),
                    **self._connect_figures(),
                    "ended": dict(sum(self.outcomes.values(), Counter())),
                    "generator": saturation(own_cpu_seconds() - cpu_before, connect_wall, self.lags),
                }
                if self.emit is not None:
                    self.emit({"event": "held", **result["held"]})
                if release is not None:
                    await release()
                self.released.set()
            if self.tasks:
                await asyncio.wait(set(self.tasks), timeout=plan.timeout + 5)
            for task in list(self.tasks):
                task.cancel()
        finally:
            for monitor in monitors:
                monitor.cancel()
        wall = time.monotonic() - began
        watch_after = self._watch()
        result.update(
            {
                "stopped": stopped,
                "clients": self.started,
                "unfinished": self.started - self.finished,
                "outcomes": {kind: dict(counts) for kind, counts in self.outcomes.items()},
                "banner": [round(value, 5) for value in self.banner],
                "delivered": dict(self.delivered),
                "wall": round(wall, 3),
                "steady": self._steady(began),
                "arrivals_late_p99": round(percentile(self.late, 99), 4) if self.late else 0.0,
                **self._connect_figures(),
                "watch": {
                    str(pid): round(watch_after[pid] - cpu, 4)
                    for pid, cpu in watch_before.items()
                    if pid in watch_after
                },
                "generator": saturation(own_cpu_seconds() - cpu_before, wall, self.lags),
            }
        )
        return result


async def run_plan(
    plan: Plan, emit: Callable[[Event], None] | None = None, release: Callable[[], Any] | None = None
) -> Event:
    """Carry out ``plan`` on the running loop and return its result. In hold mode ``release`` is
    awaited once every idle client is connected (none: let go at once)."""
    return await Run(plan, emit).carry_out(release)


# -- in a process of its own ------------------------------------------------------------------


class GeneratorError(RuntimeError):
    pass


class Generator:
    """``python -m bench.load`` in a process of its own, read from the orchestrating process."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close(), with the process
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.load", "--plan", plan.to_json()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self._buffer = b""

    def _line(self, deadline: float) -> bytes | None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise GeneratorError(
                        f"the load generator exited ({self.process.wait()}): {self.stderr()}"
                    )
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def wait_for(self, name: str, timeout: float, progress: Callable[[Event], None] | None = None) -> Event:
        """Read events until one called ``name``; progress events go to ``progress``."""
        deadline = time.monotonic() + timeout
        while True:
            line = self._line(deadline)
            if line is None:
                self.close()
                raise GeneratorError(f"no {name!r} from the load generator within {timeout:.0f} s")
            event = json.loads(line)
            if event.get("event") == name:
                return event
            if event.get("event") == "progress" and progress is not None:
                progress(event)

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"release\n")
        self.process.stdin.flush()

    def stderr(self) -> str:
        self.errors.seek(0)
        return self.errors.read().decode(errors="replace")[-2000:]

    def close(self) -> None:
        terminate(self.process)
        self.errors.close()


def run_generator(plan: Plan, progress: Callable[[Event], None] | None = None) -> Event:
    """Carry out ``plan`` in a process of its own; bounded by the plan's own limits, plus slack."""
    generator = Generator(plan)
    try:
        return generator.wait_for("result", plan.duration + plan.timeout + 60, progress)
    finally:
        generator.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bench load generator (see the module docstring)")
    parser.add_argument("--plan", required=True, help="a Plan as JSON")
    args = parser.parse_args(argv)
    plan = Plan.from_json(args.plan)
    raise_file_limit()
    # A run is short and makes few cycles; collections over tens of thousands of live clients would
    # stall the loop for tens of milliseconds and show up as lag.
    gc.disable()

    def emit(event: Event) -> None:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    async def release() -> None:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    import uvloop

    result = uvloop.run(run_plan(plan, emit, release))
    emit({"event": "result", **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
