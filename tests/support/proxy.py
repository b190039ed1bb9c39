"""Run ``greetproxy run`` as a real child process and read its JSON log events."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Event = dict[str, object]
ROOT = Path(__file__).resolve().parents[2]


# Test clients connect from loopback, which the access list permits by default (no pause, no tests):
# screen it like any other network unless a test brings its own access file.
LOOPBACK_SCREENED = "127.0.0.0/8 screen\n::1 screen\n"


def child_environment(env: Mapping[str, str]) -> dict[str, str]:
    """The process environment without GREETPROXY_* variables, then ``env``, with a private state
    directory and the loopback-screening access file unless ``env`` names its own."""
    child = {key: value for key, value in os.environ.items() if not key.startswith("GREETPROXY_")}
    child.update(env)
    child["PYTHONPATH"] = str(ROOT)
    if os.geteuid() == 0:  # the tests run as root (CI does): keeping it must be said
        child.setdefault("GREETPROXY_USER", "root")
    if "GREETPROXY_STATE_DIR" not in child or "GREETPROXY_ACCESS_FILE" not in child:
        state = Path(tempfile.mkdtemp(prefix="greetproxy-state-"))
        child.setdefault("GREETPROXY_STATE_DIR", str(state))
        if "GREETPROXY_ACCESS_FILE" not in child:
            (state / "access").write_text(LOOPBACK_SCREENED)
            child["GREETPROXY_ACCESS_FILE"] = str(state / "access")
    return child


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class ProxyProcess:
    """One greetproxy daemon; ``env`` holds its GREETPROXY_* variables."""

    def __init__(self, env: Mapping[str, str], prefix: Sequence[str] = ()) -> None:
        """``prefix``: a command to run the daemon under, e.g. ``prlimit --nofile=128``."""
        self.env = dict(env)
        self.prefix = list(prefix)
        self.events: list[Event] = []
        self.expected_errors: set[str] = set()  # events a test provokes at error level on purpose
        self.stderr = ""
        self._lock = threading.Condition()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        return int(self.env["GREETPROXY_LISTEN"].rsplit(":", 1)[1])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, wait_for: str | None = "listening", timeout: float = 15) -> ProxyProcess:
        child_env = child_environment(self.env)
        self.env = {key: value for key, value in child_env.items() if key.startswith("GREETPROXY_")}
        self.process = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "greetproxy", "run"],
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        if wait_for:
            self.wait_event(wait_for, timeout=timeout)
        return self

    def _read_stdout(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                event = {"event": "unparsed", "line": raw.decode(errors="replace")}
            with self._lock:
                self.events.append(event)
                self._lock.notify_all()

    def _read_stderr(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        for raw in self.process.stderr:
            with self._lock:
                self.stderr += raw.decode(errors="replace")
                self._lock.notify_all()

    def find(self, name: str, **fields: object) -> list[Event]:
        with self._lock:
            return [
                event
                for event in self.events
                if event.get("event") == name
                and all(event.get(key) == value for key, value in fields.items())
            ]

    def wait_event(
        self,
        name: str,
        timeout: float = 10,
        where: Callable[[Event], bool] = lambda event: True,
        **fields: object,
    ) -> Event:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for event in self.find(name, **fields):
                    if where(event):
                        return event
                if self.process is not None and self.process.poll() is not None and name != "stopped":
                    raise AssertionError(
                        f"proxy exited with {self.process.returncode} before {name!r}: "
                        f"{self.stderr}\n{self.events}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {name!r} event {fields} within {timeout}s; got {self.events}")
                self._lock.wait(min(remaining, 0.1))

    def wait_count(self, name: str, count: int, timeout: float = 10, **fields: object) -> list[Event]:
        """Wait until ``count`` events like these have been read (the log arrives a little after
        the client has seen the reply), then return all of them."""
        self.wait_event(name, timeout, where=lambda event: len(self.find(name, **fields)) >= count, **fields)
        return self.find(name, **fields)

    def session_events(self, session: str) -> list[Event]:
        with self._lock:
            return [event for event in self.events if event.get("session") == session]

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        assert self.process is not None
        return self.process.wait(timeout)

    def stop(self, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def rss_kb(self) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])

    def tracebacks(self) -> list[str]:
        with self._lock:
            found = [line for line in self.stderr.splitlines() if "Traceback" in line]
            found += [
                str(event)
                for event in self.events
                if "exception" in event
                or (event.get("level") == "error" and event.get("event") not in self.expected_errors)
            ]
            return found


def run_once(
    env: Mapping[str, str], timeout: float = 30, command: str = "run"
) -> subprocess.CompletedProcess[str]:
    """``greetproxy run`` that is expected to exit by itself (bad config, open relay), or another
    ``command`` such as ``check`` or ``cache list``."""
    child_env = child_environment(env)
    return subprocess.run(
        [sys.executable, "-m", "greetproxy", *command.split()],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
