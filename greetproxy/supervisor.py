"""``GREETPROXY_WORKERS=N``: N worker processes on the same ports (SO_REUSEPORT), one supervisor.

Each worker is ``greetproxy worker --index I``: the daemon itself, with its share of the limits.
Workers speak sd_notify to the supervisor exactly as a single daemon speaks it to systemd, each on
a socket of its own, so the supervisor knows when every worker listens (then it tells systemd
READY=1) and when one drains. A worker that dies is started again (after 1 s, longer if it keeps
dying young); one that fails its start-up (status 2: bad settings, an open backend) stops them
all with that status. SIGTERM, SIGINT and SIGHUP are passed on. With metrics on, the workers write
them to files (prometheus-client's multiprocess mode) and the supervisor serves their sum.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Settings
from .notify import Notifier

RESTART_FIRST = 1.0  # seconds before a dead worker is started again
RESTART_MAX = 30.0
YOUNG = 10.0  # a worker that dies younger than this waits twice as long next time


@dataclass
class Worker:
    index: int
    notify: socket.socket
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    ready: bool = False
    backoff: float = RESTART_FIRST


class Supervisor:
    def __init__(self, settings: Settings, notifier: Notifier, log: Any) -> None:
        self.settings = settings
        self.notifier = notifier
        self.log = log
        self.folder = Path(tempfile.mkdtemp(prefix="greetproxy-workers-"))
        self.metrics_folder = self.folder / "metrics"
        self.workers: list[Worker] = []
        self.stopping = False
        self.status = 0

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        if self.settings.metrics_listen is not None:
            self._serve_metrics()
        for index in range(self.settings.workers):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(self.folder / f"worker-{index}.sock"))
            sock.setblocking(False)
            worker = Worker(index, sock)
            loop.add_reader(sock, self._notified, worker)
            self.workers.append(worker)
        self._hand_folder_to_workers()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop, signum)
        loop.add_signal_handler(signal.SIGHUP, self._forward, signal.SIGHUP)
        if self.notifier.watchdog_interval:
            keep_alive = asyncio.ensure_future(self.notifier.keep_alive())
        try:
            for worker in self.workers:
                await self._start(worker)
            watchers = [asyncio.ensure_future(self._watch(worker)) for worker in self.workers]
            await asyncio.gather(*watchers)
        finally:
            if self.notifier.watchdog_interval:
                keep_alive.cancel()
            for worker in self.workers:
                loop.remove_reader(worker.notify)
                worker.notify.close()
            shutil.rmtree(self.folder, ignore_errors=True)
        self.log.info("supervisor", state="stopped", status=self.status)
        return self.status

    def _hand_folder_to_workers(self) -> None:
        """Workers that drop root still reach their notify socket and write their metrics."""
        user = self.settings.user
        if os.geteuid() != 0 or user is None:
            return
        entry = pwd.getpwnam(user)
        for path in [self.folder, *self.folder.iterdir()]:
            os.chown(path, entry.pw_uid, entry.pw_gid)

    async def _start(self, worker: Worker) -> None:
        env = {
            key: value for key, value in os.environ.items() if key not in ("WATCHDOG_USEC", "WATCHDOG_PID")
        }
        env["NOTIFY_SOCKET"] = str(self.folder / f"worker-{worker.index}.sock")
        if self.settings.metrics_listen is not None:
            env["PROMETHEUS_MULTIPROC_DIR"] = str(self.metrics_folder)
        worker.ready = False
        worker.started = time.monotonic()
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "greetproxy", "worker", "--index", str(worker.index), env=env
        )
        self.log.info("worker", index=worker.index, state="started", pid=worker.process.pid)

    async def _watch(self, worker: Worker) -> None:
        """Wait for the worker to exit; start it again unless the supervisor is stopping."""
        while True:
            assert worker.process is not None
            status = await worker.process.wait()
            self._process_dead(worker.process.pid)
            lived = time.monotonic() - worker.started
            if self.stopping:
                self.log.info("worker", index=worker.index, state="exited", status=status)
                return
            if status == 2 and not worker.ready:  # it could not start: settings, open backend, ports
                self.log.error("worker", index=worker.index, state="failed_start", status=status)
                self.status = 2
                self._stop(signal.SIGTERM)
                return
            worker.backoff = min(worker.backoff * 2, RESTART_MAX) if lived < YOUNG else RESTART_FIRST
            self.log.error(
                "worker",
                index=worker.index,
                state="died",
                status=status,
                lived=round(lived, 1),
                restart_in=worker.backoff,
            )
            await asyncio.sleep(worker.backoff)
            if self.stopping:
                return
            await self._start(worker)

    def _notified(self, worker: Worker) -> None:
        try:
            message = worker.notify.recv(4096).decode("utf-8", "replace")
        except OSError:
            return
        fields = dict(line.split("=", 1) for line in message.splitlines() if "=" in line)
        if fields.get("READY") == "1" and not worker.ready:
            worker.ready = True
            if all(each.ready for each in self.workers):
                listen = ", ".join(map(str, self.settings.listen))
                self.notifier.send(f"READY=1\nSTATUS={len(self.workers)} workers listening on {listen}")
                self.log.info("supervisor", state="ready", workers=len(self.workers))

    def _stop(self, signum: int) -> None:
        if not self.stopping:
            self.stopping = True
            self.notifier.send("STOPPING=1")
        self._forward(signum)

    def _forward(self, signum: int) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signum)

    def _serve_metrics(self) -> None:
        from prometheus_client import CollectorRegistry, start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        endpoint = self.settings.metrics_listen
        assert endpoint is not None
        self.metrics_folder.mkdir()
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.metrics_folder))
        start_http_server(endpoint.port, addr=endpoint.host, registry=registry)
        self.log.info("metrics", listen=str(endpoint), workers=self.settings.workers)

    def _process_dead(self, pid: int) -> None:
        if self.settings.metrics_listen is not None:
            from prometheus_client.multiprocess import mark_process_dead

            mark_process_dead(pid, str(self.metrics_folder))
