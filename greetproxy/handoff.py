"""Hand-off mode, the proxy's side: give a screened client's socket to the privileged helper
(greetproxy/helper.py), which runs sendmail on it, so that sendmail sees the real client.

Each hand-off holds one of the backend pool's slots until the helper reports that its sendmail
exited, so GREETPROXY_BACKEND_MAX_CONNECTIONS bounds the sendmail children as it bounds relayed
sessions, with the same first-come queue.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .helper import MESSAGE_SIZE

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from .pool import Slot
    from .session import Session


def missing_command(command: Sequence[str]) -> str | None:
    """Why the hand-off command cannot run, or None."""
    return None if shutil.which(command[0]) else f"{command[0]} is not an executable file"


class HandoffFailure(Exception):
    """The helper could not start sendmail for a client."""


@dataclass(slots=True)
class _Child:
    session: Session
    slot: Slot
    started: float
    pid: int = 0


class Handoff:
    def __init__(self, command: Sequence[str], log_format: str, log_level: str) -> None:
        self.command = list(command)
        self._log_options = ["--log-format", log_format, "--log-level", log_level]
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: socket.socket | None = None
        self.exits: Counter[int] = Counter()  # exit statuses of the sendmail children
        self._pending: dict[str, tuple[_Child, asyncio.Future[int]]] = {}
        self._running: dict[str, _Child] = {}
        self._on_lost: Callable[[], None] = lambda: None

    @property
    def children(self) -> int:
        return len(self._running)

    def start(self) -> None:
        """Start the helper, before this process gives up root (the helper keeps it)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "greetproxy.helper", "--fd", str(theirs.fileno()), *self._log_options]
                + ["--", *self.command],
                pass_fds=[theirs.fileno()],
            )
        ours.setblocking(False)
        self.channel = ours

    def attach(self, on_lost: Callable[[], None]) -> None:
        """Listen to the helper's answers on the running loop; ``on_lost`` if it goes away."""
        assert self.channel is not None
        self._on_lost = on_lost
        asyncio.get_running_loop().add_reader(self.channel, self._readable)

    async def hand_off(self, session: Session, client: socket.socket, slot: Slot) -> int:
        """Give ``client`` to a new sendmail; returns its pid. The slot is released when it exits
        (or at once if this fails). The caller closes its own copy of the socket afterwards."""
        if self.channel is None or self.process is None or self.process.poll() is not None:
            slot.release()
            raise HandoffFailure("the hand-off helper is not running")
        child = _Child(session, slot, time.monotonic())
        future = asyncio.get_running_loop().create_future()
        self._pending[session.id] = (child, future)
        try:
            socket.send_fds(self.channel, [f"spawn {session.id}".encode()], [client.fileno()])
        except OSError as error:
            del self._pending[session.id]
            slot.release()
            raise HandoffFailure(f"cannot reach the hand-off helper: {error.strerror or error}") from None
        return await future

    def _readable(self) -> None:
        assert self.channel is not None
        while True:
            try:
                message = self.channel.recv(MESSAGE_SIZE)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                self._lost()
                return
            kind, _, rest = message.decode("ascii", "replace").partition(" ")
            session_id, _, detail = rest.partition(" ")
            if kind == "exited":
                self._exited(session_id, int(detail))
                continue
            pending = self._pending.pop(session_id, None)
            if pending is None:
                continue
            child, future = pending
            if kind == "started":
                child.pid = int(detail)
                self._running[session_id] = child
                future.set_result(child.pid)
            else:
                child.slot.release()
                future.set_exception(HandoffFailure(detail))

    def _exited(self, session_id: str, status: int) -> None:
        child = self._running.pop(session_id, None)
        if child is None:
            return
        child.slot.release()
        self.exits[status] += 1
        child.session.log.info(
            "handoff_exit",
            pid=child.pid,
            status=status,
            duration=round(time.monotonic() - child.started, 3),
            children=len(self._running),
        )

    def _lost(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.channel is not None
        loop.remove_reader(self.channel)
        for child, future in self._pending.values():
            child.slot.release()
            future.set_exception(HandoffFailure("the hand-off helper exited"))
        self._pending.clear()
        for child in self._running.values():
            child.slot.release()
        self._running.clear()
        self._on_lost()

    def close(self, log: FilteringBoundLogger) -> None:
        """Closing our end stops the helper; sendmail sessions in progress run on."""
        if self.channel is not None:
            asyncio.get_running_loop().remove_reader(self.channel)
            self.channel.close()
            self.channel = None
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        exits = {str(status): count for status, count in sorted(self.exits.items())}
        log.info("handoff_summary", exits=exits)


def duplicate_socket(transport: asyncio.BaseTransport) -> socket.socket:
    """A copy of the transport's socket to send to the helper: the connection stays open when the
    transport then closes its own descriptor."""
    return socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
