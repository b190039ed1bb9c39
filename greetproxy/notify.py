"""systemd's readiness protocol (sd_notify) without libsystemd: one datagram to $NOTIFY_SOCKET.

READY=1 once the proxy listens, STOPPING=1 when it begins to drain, WATCHDOG=1 at half the
watchdog interval while the event loop runs (a stuck loop stops the pings, and systemd restarts it).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any


class Notifier:
    def __init__(self, address: str | None, watchdog_interval: float | None, log: Any) -> None:
        # An address starting with "@" is in the abstract namespace.
        self.address = "\0" + address[1:] if address and address.startswith("@") else address
        self.watchdog_interval = watchdog_interval
        self._log = log

    def send(self, message: str) -> None:
        if not self.address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(message.encode(), self.address)
        except OSError as error:
            self._log.warning("sd_notify", message=message.split("\n", 1)[0], error=str(error))

    async def keep_alive(self) -> None:
        assert self.watchdog_interval is not None
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_interval)
