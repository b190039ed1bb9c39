"""What the scenarios of ``python3 -m bench`` run against, started once when first needed and
stopped at the end: a private real sendmail on loopback (tests/support/sendmail.py), the fast sink
(bench/sink.py), sendmails with FEATURE(greet_pause), greetproxy daemons, and the load generator in a
process of its own. Loopback only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from bench.core import Backend, proxy_for, wait_listening
from bench.load import Event, Generator, Plan, run_generator
from bench.sink import ServerProcess
from bench.system import listen_overflows, raise_file_limit
from tests.support.proxy import LOOPBACK_SCREENED, ProxyProcess, free_port
from tests.support.sendmail import Sendmail

GENERATOR_SPARE_FDS = 200  # a generator process keeps these for itself


class Progress(Protocol):
    def step(self, label: str) -> None: ...

    def update(self, fraction: float, detail: str = "") -> None: ...


class Services:
    def __init__(self, workdir: Path, progress: Progress) -> None:
        self.workdir = workdir
        self.progress = progress
        self._stack = contextlib.ExitStack()
        self._sendmail: Sendmail | None = None
        self._sink: ServerProcess | None = None
        self._names = 0
        self.file_limit = raise_file_limit()  # (soft, hard): what each generator process may open

    def close(self) -> None:
        self._stack.close()

    def _folder(self, name: str) -> Path:
        self._names += 1
        folder = self.workdir / f"{self._names:02d}-{name}"
        folder.mkdir(parents=True)
        return folder

    # -- backends -----------------------------------------------------------------------------

    def sendmail(self) -> Sendmail:
        """The plain sendmail every proxy relays to (no greet pause of its own)."""
        if self._sendmail is None:
            sendmail = Sendmail(self._folder("sendmail"), free_port())
            sendmail.start()
            self._stack.callback(sendmail.stop)
            self._sendmail = sendmail
        return self._sendmail

    def sink(self) -> ServerProcess:
        if self._sink is None:
            self._sink = ServerProcess("bench.sink").start()
            self._stack.callback(self._sink.stop)
        return self._sink

    @contextlib.contextmanager
    def floor(self, kind: str, backend: Backend | None = None) -> Iterator[ServerProcess]:
        """A bench.floor baseline: ``drop``, or ``relay`` in front of ``backend``."""
        arguments = ["--backend", str(backend.port)] if backend is not None else []
        server = ServerProcess("bench.floor", kind, *arguments).start()
        try:
            yield server
        finally:
            server.stop()

    @contextlib.contextmanager
    def greet_pause_sendmail(self, pause: float) -> Iterator[Sendmail]:
        """sendmail with FEATURE(greet_pause): a forked process per waiting client. 127.0.0.1 (its
        own start-up check) is exempt; the bench's clients come from other loopback addresses."""
        sendmail = Sendmail(
            self._folder("greet-pause-sendmail"),
            free_port(),
            access=("GreetPause:127.0.0.1\t0",),
            extra_mc=f"FEATURE(`greet_pause', `{int(pause * 1000)}')dnl\n",
        )
        sendmail.start()
        try:
            yield sendmail
        finally:
            sendmail.stop()

    # -- the proxy ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def proxy(
        self, backend: Backend, pause: float, access: str = "", log_file: Path | None = None, **env: str
    ) -> Iterator[ProxyProcess]:
        """A greetproxy in front of ``backend``, listening when yielded. Every client is screened
        (loopback too), nothing is remembered, the per-client limits are out of the way (the
        bench's clients share few addresses) unless ``env`` says otherwise; ``access``: more
        lines for the access file. ``log_file``: the JSON log goes there (read after the run)
        instead of to this process, which would parse every line."""
        folder = self._folder("proxy")
        (folder / "access").write_text(LOOPBACK_SCREENED + access)
        settings = {
            "GREETPROXY_ACCESS_FILE": str(folder / "access"),
            "GREETPROXY_STATE_DIR": str(folder),
            "GREETPROXY_CLIENT_CONCURRENCY": "100000",
            "GREETPROXY_CLIENT_RATE": "10000000",
            "GREETPROXY_SHUTDOWN_GRACE": "2s",
            **env,
        }
        prefix: list[str] = []
        if log_file is not None:
            prefix = ["sh", "-c", 'exec "$@" >>"$0"', str(log_file)]  # exec: the pid is the daemon's
            settings.setdefault("GREETPROXY_LOG_LEVEL", "info")
        proxy = proxy_for(backend, pause, prefix, **settings)
        try:
            try:
                asyncio.run(wait_listening(proxy.port, timeout=30))
            except RuntimeError as error:
                raise RuntimeError(f"{error}: {proxy.stderr[-2000:]}") from None
            yield proxy
        finally:
            proxy.stop()

    # -- the load generator -------------------------------------------------------------------

    def load(self, plan: Plan, detail: str) -> Event:
        """Carry out ``plan`` in a generator process, its progress shown as ``detail``; with the
        machine's accept-queue overflows meanwhile (``listen_overflows``)."""
        overflows = listen_overflows()
        result = run_generator(plan, self._on_progress(detail))
        result["listen_overflows"] = listen_overflows() - overflows
        return result

    def _on_progress(self, detail: str) -> Callable[[Event], None]:
        def show(event: Event) -> None:
            self.progress.update(event["fraction"], f"{detail} {event['started']:,}/{event['total']:,}")

        return show

    def shards(self, count: int) -> int:
        """Generator processes needed to hold ``count`` connections under the open-file limit."""
        return max(1, math.ceil(count / (self.file_limit[1] - GENERATOR_SPARE_FDS)))

    @contextlib.contextmanager
    def holding(self, plans: list[Plan], detail: str, timeout: float) -> Iterator[list[Event]]:
        """Hold-mode plans, one generator process each: yields their ``held`` events once all of
        them have connected; on the way out they let go, and their results are added to each
        event under ``result``."""
        overflows = listen_overflows()
        generators = [Generator(plan) for plan in plans]
        try:
            held = [
                generator.wait_for("held", timeout, self._on_progress(detail) if index == 0 else None)
                for index, generator in enumerate(generators)
            ]
            for event in held:
                event["listen_overflows"] = listen_overflows() - overflows  # machine-wide
            yield held
            for generator in generators:
                generator.release()
            for generator, event in zip(generators, held, strict=True):
                event["result"] = generator.wait_for("result", timeout)
        finally:
            for generator in generators:
                generator.close()


class PeakSampler:
    """Samples ``measure()`` every ``interval`` seconds in a thread; ``peak`` is the largest value."""

    def __init__(self, measure: Callable[[], int], interval: float = 0.05) -> None:
        self.measure = measure
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.measure())
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def log_events(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON events of a proxy's log file; lines that are not JSON are skipped."""
    with path.open("rb") as lines:
        for line in lines:
            with contextlib.suppress(ValueError):
                yield json.loads(line)


def log_errors(path: Path) -> list[str]:
    """Lines of a proxy's JSON log at level error, or carrying an exception (a bug's traceback)."""
    with path.open("rb") as lines:
        return [
            line.decode(errors="replace")[:300]
            for line in lines
            if b'"level":"error"' in line or b'"exception"' in line
        ]
