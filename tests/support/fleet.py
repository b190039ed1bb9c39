"""A real redis-server and a real HAProxy (Debian's packages) on loopback ports, for the fleet tests."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import redis

from tests.support.processes import terminate
from tests.support.proxy import free_port

REDIS_SERVER = "/usr/bin/redis-server"
HAPROXY = "/usr/sbin/haproxy"


def fleet_tools_missing() -> list[str]:
    return [tool for tool in (REDIS_SERVER, HAPROXY) if shutil.which(tool) is None]


def _listening(port: int) -> bool:
    """Whether 127.0.0.1:port is listening, without connecting (a probe through HAProxy would
    reach a greetproxy and shift the round robin)."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
            return True
    return False


def wait_listening(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"{what} exited with {process.returncode}: {output}")
        if _listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


class RedisServer:
    """A private redis-server without persistence; ``kill`` and ``start`` again on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_listening(self.port, self.process, "redis-server")
        return self

    def kill(self) -> None:
        """As a crash: SIGKILL, nothing written."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


class HAProxy:
    """HAProxy in TCP mode on a loopback port, round-robin over ``servers`` with a PROXY header
    (``send-proxy`` for v1, ``send-proxy-v2``) from 127.0.0.1."""

    def __init__(self, workdir: Path, servers: Sequence[int], proxy_option: str = "send-proxy") -> None:
        self.workdir = workdir
        self.port = free_port()
        lines = [
            "global",
            "    maxconn 1000",
            "defaults",
            "    mode tcp",
            "    timeout connect 5s",
            "    timeout client 60s",
            "    timeout server 60s",
            "frontend smtp",
            f"    bind 127.0.0.1:{self.port}",
            "    default_backend greetproxy",
            "backend greetproxy",
            "    balance roundrobin",
            *(f"    server gp{index} 127.0.0.1:{port} {proxy_option}" for index, port in enumerate(servers)),
        ]
        self.config = workdir / "haproxy.cfg"
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> HAProxy:
        check = subprocess.run([HAPROXY, "-c", "-f", str(self.config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c: {check.stdout}{check.stderr}")
        # -db: stay in the foreground, no daemon
        self.process = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(self.config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        wait_listening(self.port, self.process, "haproxy")
        return self

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)


class RedisSentinel:
    """One Redis Sentinel (redis-server --sentinel) watching ``master`` as ``mymaster``."""

    def __init__(self, workdir: Path, master: RedisServer) -> None:
        self.port = free_port()
        self.config = workdir / "sentinel.conf"  # Sentinel rewrites its file: it must be its own
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {workdir}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master.port} 1\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.port}/mymaster/0"

    def start(self) -> RedisSentinel:
        self.process = subprocess.Popen(
            [REDIS_SERVER, str(self.config), "--sentinel"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        wait_listening(self.port, self.process, "redis-server --sentinel")
        return self

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
