"""A fast SMTP sink for the bench: aiosmtpd under uvloop, in a process of its own, on a loopback port.
It accepts mail for one domain only (so the proxy's open-relay guard finds it closed), counts the
messages and throws them away.

    python3 -m bench.sink --port 2600     # prints {"event": "ready"} once it listens
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.processes import terminate
from tests.support.proxy import free_port

ROOT = Path(__file__).resolve().parents[1]
DOMAIN = "example.test"


class Discard:
    """aiosmtpd handler: recipients in DOMAIN only; every message counted and dropped."""

    def __init__(self) -> None:
        self.messages = 0

    async def handle_RCPT(self, server, session, envelope, address: str, rcpt_options) -> str:  # noqa: ANN001
        if not address.lower().endswith("@" + DOMAIN):
            return "550 5.7.1 Relaying denied"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Recipient OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: ANN001
        self.messages += 1
        return "250 2.0.0 Message accepted"


async def serve(port: int) -> None:
    import asyncio

    from aiosmtpd.smtp import SMTP

    handler = Discard()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.bench.test", decode_data=False, ident="bench sink"),
        "127.0.0.1",
        port,
        backlog=1024,
    )
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"event": "ready", "port": port}), flush=True)
    await stop.wait()
    server.close()
    print(json.dumps({"event": "stopped", "messages": handler.messages}), flush=True)


class ServerProcess:
    """A bench server as a child process (``python3 -m <module> --port N ...``) on a free loopback
    port; started once it printed its ready line. ``port`` as for a Sendmail."""

    def __init__(self, module: str, *arguments: str) -> None:
        self.port = free_port()
        self.command = [sys.executable, "-m", module, "--port", str(self.port), *arguments]
        self.process: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 15) -> ServerProcess:
        environment = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=environment
        )
        assert self.process.stdout is not None
        readable, _, _ = select.select([self.process.stdout], [], [], timeout)
        line = self.process.stdout.readline() if readable else ""  # one whole line, or EOF
        if '"ready"' not in line:
            self.stop()
            raise RuntimeError(f"{' '.join(self.command[1:4])} did not start: {line!r}")
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)
        self.process = None


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
