"""What the relay and the enforce engine share: a greeted client's side of a session.

A Conversation is the client transport's Protocol from the banner on. It is driven by the
transport's callbacks, with no task of its own: each chunk the client sends is framed into
command lines and answered in the same loop turn, or, while an answer is pending (the backend
has not replied yet), kept until that answer is out, so that pipelined commands keep their order.
Under load this costs a fraction of a task per session: no future and no task switch per command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from .session import Session
from .smtp.commands import PARAMETER_LINE_LIMIT, line_limit, verb_of
from .smtp.lines import Ending, Line, LineSplitter
from .smtp.replies import reply

if TYPE_CHECKING:
    from .server import Proxy


class Watchdog:
    """One timer per session, not one per wait: it calls ``expired`` with what was awaited (the
    client, or the backend) once a single wait has lasted ``limit`` seconds."""

    __slots__ = ("limit", "waiting", "since", "_expired", "_loop", "_handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float, expired: Callable[[str], None]) -> None:
        self._loop = loop
        self.limit = limit
        self.waiting: str | None = None  # "client" or "backend"
        self.since = 0.0
        self._expired = expired
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(limit, self._check)

    def begin(self, what: str) -> None:
        self.waiting = what
        self.since = self._loop.time()

    def end(self) -> None:
        self.waiting = None

    def _check(self) -> None:
        now = self._loop.time()
        if self.waiting is not None and now - self.since >= self.limit:
            self._handle = None
            self._expired(self.waiting)
            return
        due = self.since + self.limit if self.waiting is not None else now + self.limit
        self._handle = self._loop.call_at(due, self._check)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class Conversation(asyncio.Protocol):
    """A subclass answers each well-formed command in ``on_command``: at once, or later, by
    setting ``busy`` and calling ``answered`` when the answer is out."""

    def __init__(self, proxy: Proxy, session: Session) -> None:
        self.proxy = proxy
        self.session = session
        self.hostname = proxy.config.hostname
        self.transport: asyncio.Transport | None = None
        self.lines = LineSplitter(PARAMETER_LINE_LIMIT)
        self.errors = 0
        self.busy = False  # a command's answer is pending: the lines after it wait
        self.blocked = False  # the client reads none of its replies: its lines wait
        self.client_eof = False  # the client sends nothing more
        self.stop_requested = False
        self.ended = False
        self.watchdog = Watchdog(proxy.loop, proxy.config.command_timeout, self._expired)

    def begin(self, transport: asyncio.Transport, greeting: bytes, held: bytes = b"") -> None:
        """Take the connection over (from the gate): greet, then answer what came meanwhile."""
        self.transport = transport
        transport.set_protocol(self)
        self._started()
        if self.ended:
            return
        self.send(greeting)
        self.receive(held)
        if not transport.is_closing():
            transport.resume_reading()  # the gate may have paused it

    def _started(self) -> None:
        """The transport is ours; for subclasses that hold more (the backend)."""

    def take_over(self, previous: Conversation, first: tuple[str, Line]) -> None:
        """Go on with ``previous``'s connection mid-session, from the command ``first`` on."""
        assert previous.transport is not None
        previous.ended = True  # it ends here without a word: the session goes on with us
        previous.watchdog.stop()
        self.transport, self.lines, self.errors = previous.transport, previous.lines, previous.errors
        self.proxy.swap(previous, self)
        self.transport.set_protocol(self)
        self.on_command(*first)  # counted and checked already
        if not (self.busy or self.ended or self._too_many_errors()):
            self.work()

    # -- asyncio callbacks -------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.session.bytes_in += len(data)
        try:
            self.receive(data)
        except Exception as error:
            self.crashed(error)

    def eof_received(self) -> bool:
        self.client_eof = True
        try:
            self.on_client_eof()
        except Exception as error:
            self.crashed(error)
        return True  # replies still go out to a client that only shut its sending side

    def connection_lost(self, exc: Exception | None) -> None:
        self.end("client_hangup")

    def pause_writing(self) -> None:
        """The client does not read its replies: answer nothing more until it does."""
        self.blocked = True
        self._reading()
        self.watchdog.begin("client")

    def resume_writing(self) -> None:
        self.blocked = False
        self._reading()
        try:
            self.work()
        except Exception as error:
            self.crashed(error)

    # -- the dialogue ------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        self.lines.feed(data)
        self.work()

    def on_client_eof(self) -> None:
        if not self.busy:
            self.work()  # ends the session once the lines already sent are answered

    def work(self) -> None:
        """Answer the complete lines in hand while no answer is pending."""
        while not (self.busy or self.blocked or self.ended):
            line = self.lines.next_line()
            if line is None:
                self._await_client()
                return
            self._command(line)
            if not (self.busy or self.ended):
                self._too_many_errors()

    def _command(self, line: Line) -> None:
        """Refuse a malformed line, hand a well-formed one to ``on_command``."""
        self.session.commands += 1
        verb = verb_of(line.text)
        if line.ending is Ending.TOO_LONG or len(line.text) + 2 > line_limit(verb):
            self.refuse(verb, 500, "5.5.2 line too long", "line_too_long")
        elif line.bare_newline:
            self.refuse(verb, 500, "5.5.2 bare CR or LF in command: lines end with CRLF", "bare_newline")
        else:
            self.on_command(verb, line)

    def on_command(self, verb: str, line: Line) -> None:
        raise NotImplementedError

    def answered(self) -> None:
        """The pending command has its answer: on to the next."""
        self.busy = False
        if not self.ended and not self._too_many_errors():
            self.work()

    def _await_client(self) -> None:
        if self.stop_requested:
            self._shut_down()
        elif self.client_eof:
            self.end("client_hangup")
        elif self.watchdog.waiting != "client":
            # from the start of the wait, not from the last byte: a client that dribbles a byte
            # at a time (slowloris) is cut off like an idle one
            self.watchdog.begin("client")

    def _too_many_errors(self) -> bool:
        if self.errors < self.proxy.config.max_errors:
            return False
        self.session.log.info("reject", code=421, reason="too_many_errors", errors=self.errors)
        self.last_words(
            421, f"4.7.0 {self.hostname} too many errors, closing transmission channel", "too_many_errors"
        )
        return True

    def refuse(self, verb: str, code: int, text: str, reason: str, **fields: object) -> None:
        self.errors += 1
        self.session.log.info("reject", code=code, command=verb, reason=reason, by="proxy", **fields)
        self.send(reply(code, text))

    # -- timeouts, shutdown, the end ---------------------------------------------------------

    def _expired(self, what: str) -> None:
        try:
            self.on_expired(what)
        except Exception as error:
            self.crashed(error)

    def on_expired(self, what: str) -> None:
        """A wait lasted the whole command timeout; ``what`` was awaited."""
        self.session.log.info("timeout", after=self.proxy.config.command_timeout)
        self.last_words(
            421, f"4.4.2 {self.hostname} timeout exceeded, closing transmission channel", "timeout"
        )

    def interrupt(self, now: bool = False) -> None:
        """Shutdown: end the session now if it waits for the client (or ``now``), else once the
        pending answer is out."""
        self.stop_requested = True
        if not self.ended and (now or self.watchdog.waiting == "client"):
            self._shut_down()

    def _shut_down(self) -> None:
        self.last_words(421, f"4.3.2 {self.hostname} service shutting down", "shutdown")

    def crashed(self, error: BaseException) -> None:
        """A bug: logged with its traceback; the client is told to come back, never left waiting."""
        self.proxy.internal_error(error, self.session.log)
        self.last_words(421, f"4.3.0 {self.hostname} internal error, try again later", "internal_error")

    def send(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if transport.is_closing():  # uvloop raises on a write to a closed transport
            self.end("client_hangup")
            return
        self.session.bytes_out += len(data)
        transport.write(data)

    def last_words(self, code: int, text: str, outcome: str) -> None:
        if not self.ended:
            self.send(reply(code, text))
        self.end(outcome)

    def end(self, outcome: str) -> None:
        if self.ended:
            return
        self.ended = True
        self.watchdog.stop()
        self.close()
        if self.transport is not None:
            self.transport.close()
        self.session.finish(outcome)
        self.proxy.release(self)

    def close(self) -> None:
        """Release what the subclass holds besides the client connection."""

    def _reading(self) -> None:
        """Read from the client unless something says to wait."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if self._hold_reading():
            transport.pause_reading()
        else:
            transport.resume_reading()

    def _hold_reading(self) -> bool:
        return self.blocked
