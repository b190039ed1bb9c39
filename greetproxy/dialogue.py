"""What the relay and the enforce engine share: reading client lines, replying, ending a session."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from .session import Session
from .smtp.commands import PARAMETER_LINE_LIMIT, line_limit, verb_of
from .smtp.lines import Ending, Line, LineSplitter
from .smtp.replies import reply

if TYPE_CHECKING:
    from .server import Proxy

READ_SIZE = 65536
STREAM_LIMIT = 65536


def new_streams(
    loop: asyncio.AbstractEventLoop,
) -> tuple[asyncio.StreamReader, asyncio.StreamReaderProtocol]:
    """A reader and its protocol for a transport the caller attaches them to."""
    reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=loop)
    return reader, asyncio.StreamReaderProtocol(reader, loop=loop)


class ClientGone(Exception):
    """The client hung up."""


class ShuttingDown(Exception):
    """The shutdown grace is over."""


class Watchdog:
    """One timer per session, not one per read: it cancels the session's task once a single wait
    (for the client, or for the backend) has lasted ``limit`` seconds."""

    __slots__ = ("limit", "waiting", "since", "expired", "_task", "_loop", "_handle")

    def __init__(self, limit: float, task: asyncio.Task[None]) -> None:
        self._loop = asyncio.get_running_loop()
        self.limit = limit
        self.waiting: str | None = None  # "client" or "backend"
        self.since = 0.0
        self.expired: str | None = None
        self._task = task
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(limit, self._check)

    def begin(self, what: str) -> None:
        self.waiting = what
        self.since = self._loop.time()

    def resume(self, what: str) -> None:
        """Wait again for the same thing, counting from the first ``begin``."""
        self.waiting = what

    def end(self) -> None:
        self.waiting = None

    def _check(self) -> None:
        now = self._loop.time()
        if self.waiting is not None and now - self.since >= self.limit:
            self.expired = self.waiting
            self._handle = None
            self._task.cancel()
            return
        due = self.since + self.limit if self.waiting is not None else now + self.limit
        self._handle = self._loop.call_at(due, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class ClientDialogue:
    """A greeted client's side of the conversation; subclasses answer its commands."""

    def __init__(
        self, proxy: Proxy, session: Session, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.session = session
        self.reader = reader
        self.writer = writer
        self.hostname = proxy.config.hostname
        self.lines = LineSplitter(PARAMETER_LINE_LIMIT)
        self.errors = 0
        self.stop_requested = False
        self.task: asyncio.Task[None] | None = None
        self.watchdog: Watchdog | None = None

    async def run(self, greeting: bytes) -> None:
        self.task = asyncio.current_task()
        assert self.task is not None
        self.watchdog = Watchdog(self.proxy.config.command_timeout, self.task)
        outcome = "error"
        try:
            await self._send(greeting)
            outcome = await self.converse()
        except ClientGone:
            outcome = "client_hangup"
        except ShuttingDown:
            outcome = await self._shut_down()
        except asyncio.CancelledError:
            outcome = await self._cancelled(self.watchdog.expired)
        finally:
            self.watchdog.stop()
            self.close()
            self.writer.close()
            self.session.finish(outcome)
            self.proxy.release(self)

    async def converse(self) -> str:
        """Answer commands until the session ends; return the outcome."""
        raise NotImplementedError

    async def _cancelled(self, expired: str | None) -> str:
        """The task was cancelled: by the watchdog (``expired`` says which wait), or by shutdown."""
        if expired == "client":
            self.session.log.info("timeout", after=self.proxy.config.command_timeout)
            await self._last_words(
                421, f"4.4.2 {self.hostname} timeout exceeded, closing transmission channel"
            )
            return "timeout"
        return await self._shut_down()

    async def _shut_down(self) -> str:
        await self._last_words(421, f"4.3.2 {self.hostname} service shutting down")
        return "shutdown"

    def close(self) -> None:
        """Release what the subclass holds besides the client connection."""

    def interrupt(self) -> None:
        """Shutdown: end the session now if it waits for the client, else after the next reply."""
        self.stop_requested = True
        if self.task is not None and self.watchdog is not None and self.watchdog.waiting == "client":
            self.task.cancel()

    async def next_command(self) -> tuple[str, Line] | None:
        """The next well-formed command line; malformed ones are refused here. None: hang-up."""
        while True:
            line = await self._next_line()
            if line is None:
                return None
            self.session.commands += 1
            verb = verb_of(line.text)
            if line.ending is Ending.TOO_LONG or len(line.text) + 2 > line_limit(verb):
                await self.refuse(verb, 500, "5.5.2 line too long", "line_too_long")
            elif line.bare_newline:
                await self.refuse(
                    verb, 500, "5.5.2 bare CR or LF in command: lines end with CRLF", "bare_newline"
                )
            else:
                return verb, line

    async def too_many_errors(self) -> bool:
        if self.errors < self.proxy.config.max_errors:
            return False
        self.session.log.info("reject", code=421, reason="too_many_errors", errors=self.errors)
        await self._last_words(421, f"4.7.0 {self.hostname} too many errors, closing transmission channel")
        return True

    async def refuse(self, verb: str, code: int, text: str, reason: str, **fields: object) -> None:
        self.errors += 1
        self.session.log.info("reject", code=code, command=verb, reason=reason, by="proxy", **fields)
        await self._send(reply(code, text))

    async def _last_words(self, code: int, text: str) -> None:
        if self.writer.transport.is_closing():
            return
        with contextlib.suppress(ClientGone):
            await self._send(reply(code, text))

    async def _send(self, data: bytes) -> None:
        if self.writer.transport.is_closing():  # uvloop raises on a write to a closed transport
            raise ClientGone
        self.session.bytes_out += len(data)
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size():  # the client is not reading: wait for it
            try:
                await self.writer.drain()
            except OSError:
                raise ClientGone from None

    async def _next_line(self) -> Line | None:
        """The command timeout counts from the first read of the line, not from the last byte: a
        client that dribbles a byte at a time (slowloris) is cut off like an idle one."""
        partial = False
        while True:
            line = self.lines.next_line()
            if line is not None:
                return line
            data = await self._read(resume=partial)
            if not data:
                return None
            partial = True
            self.lines.feed(data)

    async def _read(self, resume: bool = False) -> bytes:
        if self.stop_requested:
            raise ShuttingDown
        assert self.watchdog is not None
        if resume:
            self.watchdog.resume("client")
        else:
            self.watchdog.begin("client")
        try:
            data = await self.reader.read(READ_SIZE)
        except OSError:
            return b""
        finally:
            self.watchdog.end()
        self.session.bytes_in += len(data)
        return data
