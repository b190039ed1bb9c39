"""Baselines for the bench: the least a Python server on uvloop can do for the same job, measured
in the same run as greetproxy, so that a figure can be read against what the machine allows.

    python3 -m bench.floor --port 2600 drop                  # answers a client's first bytes with 554
    python3 -m bench.floor --port 2601 relay --backend 2525  # passes bytes both ways, checks nothing

``drop`` is what a dropped early talker costs at the least: accept, read, write, close. ``relay``
is a byte relay with no framing, no checks, no log, no Received header: what one more hop between
client and backend costs at the least. Each prints {"event": "ready"} once it listens. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys

DROP_REPLY = b"554 5.5.1 Protocol error: talked before the greeting\r\n"


class Drop(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(DROP_REPLY)  # type: ignore[attr-defined]
        self.transport.close()


class RelayedClient(asyncio.Protocol):
    """The client's side: bytes go to the backend as they come (held until it is connected)."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.backend: asyncio.Transport | None = None
        self.early = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        try:
            backend, _ = await asyncio.get_running_loop().create_connection(
                lambda: RelayedBackend(self.transport),
                "127.0.0.1",
                self.backend_port,
                local_addr=("127.0.0.2", 0),  # as the proxy and the direct senders do
            )
        except OSError:
            self.transport.close()
            return
        self.backend = backend  # type: ignore[assignment]
        if self.early:
            backend.write(self.early)

    def data_received(self, data: bytes) -> None:
        if self.backend is None:
            self.early += data
        else:
            self.backend.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.backend is not None:
            self.backend.close()


class RelayedBackend(asyncio.Protocol):
    def __init__(self, client: asyncio.BaseTransport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


async def serve(port: int, kind: str, backend: int | None) -> None:
    loop = asyncio.get_running_loop()
    if kind == "drop":
        server = await loop.create_server(Drop, "127.0.0.1", port, backlog=4096)
    else:
        assert backend is not None
        server = await loop.create_server(lambda: RelayedClient(backend), "127.0.0.1", port, backlog=1024)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"event": "ready", "port": port}), flush=True)
    await stop.wait()
    server.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("kind", choices=["drop", "relay"])
    parser.add_argument("--backend", type=int, help="the backend's port on 127.0.0.1 (relay)")
    args = parser.parse_args()
    if args.kind == "relay" and args.backend is None:
        parser.error("relay needs --backend")
    import uvloop

    uvloop.run(serve(args.port, args.kind, args.backend))
    return 0


if __name__ == "__main__":
    sys.exit(main())
