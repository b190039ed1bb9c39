"""One SMTP connection to the backend MTA: connect, greeting, command and reply.

A plain asyncio Protocol, no streams: before a session it is awaited (``reply``, ``command``: the
greeting, backend STARTTLS, the open-relay probe); during a relayed session it hands every reply to
its listener as it arrives, in the same loop turn, with no task to wake (see relay.py).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from .config import Endpoint, Settings
from .smtp.ehlo import extensions
from .smtp.replies import Reply, ReplyError, ReplyParser
from .tls import client_context, describe_failure

if TYPE_CHECKING:
    from .pool import Slot


class BackendFailure(Exception):
    """The backend could not be reached, or stopped behaving like an SMTP server."""

    def __init__(self, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable  # a new connect attempt may well succeed (refused, timed out, 4xx)


@dataclass(frozen=True, slots=True)
class BackendTls:
    """STARTTLS to the backend: the context, the name its certificate must carry, our EHLO name."""

    context: ssl.SSLContext
    name: str
    ehlo: str

    @classmethod
    def from_config(cls, config: Settings) -> BackendTls | None:
        """None unless GREETPROXY_BACKEND_TLS=starttls; raises TlsSetupError for a bad CA file."""
        if config.backend_tls == "off":
            return None
        context = client_context(config.backend_tls_verify, config.backend_tls_ca)
        return cls(context, config.backend_tls_name or config.hostname, config.hostname)


class BackendListener(Protocol):
    """Who hears a backend connection's replies as they come (the relay)."""

    def on_reply(self, answer: Reply) -> None: ...

    def on_backend_lost(self, reason: str) -> None: ...

    def on_backend_full(self, full: bool) -> None: ...


class BackendLink(asyncio.Protocol):
    """Reads wait without a timer of their own: the caller bounds them (a timeout, the watchdog)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = ReplyParser()
        self._waiter: asyncio.Future[Reply] | None = None
        self.lost: str | None = None  # why the connection is gone, once it is
        self.slot: Slot | None = None  # the pool's permit for this connection, released once closed
        self.listener: BackendListener | None = None

    @classmethod
    async def open(
        cls, endpoint: Endpoint, source: str | None, connect_timeout: float, tls: BackendTls | None = None
    ) -> tuple[BackendLink, Reply]:
        """Connect (from ``source`` if given), read a 220 greeting and start ``tls`` if given, all
        within ``connect_timeout``."""
        loop = asyncio.get_running_loop()
        link = None
        try:
            async with asyncio.timeout(connect_timeout):
                _, link = await loop.create_connection(
                    cls, endpoint.host, endpoint.port, local_addr=(source, 0) if source else None
                )
                greeting = await link.reply()
                if greeting.code == 220 and tls is not None:
                    await link._start_tls(tls, connect_timeout)
        except TimeoutError:
            if link is not None:
                link.abort()
            raise BackendFailure(
                f"no greeting from {endpoint} within {connect_timeout:g}s", retryable=True
            ) from None
        except OSError as error:
            if link is not None:
                link.abort()
            reason = f"connect to {endpoint} failed: {error.strerror or error}"
            raise BackendFailure(reason, retryable=True) from None
        except BackendFailure:
            assert link is not None
            link.abort()
            raise
        if greeting.code != 220:
            link.close()
            raise BackendFailure(f"backend greeted with {greeting}", retryable=greeting.code < 500)
        return link, greeting

    async def _start_tls(self, tls: BackendTls, timeout: float) -> None:
        """EHLO, STARTTLS, handshake; the client's own EHLO then starts the session afresh."""
        answer = await self.command(b"EHLO " + tls.ehlo.encode())
        if answer.code != 250 or "STARTTLS" not in extensions(answer):
            raise BackendFailure(
                f"backend does not offer STARTTLS (GREETPROXY_BACKEND_TLS=starttls): {answer}"
            )
        answer = await self.command(b"STARTTLS")
        if answer.code != 220:
            raise BackendFailure(f"backend refused STARTTLS: {answer}", retryable=answer.code < 500)
        if self._parser.pending():  # plain text that would pass for replies inside TLS
            raise BackendFailure("backend sent more after its 220 to STARTTLS")
        assert self.transport is not None
        try:
            transport = await asyncio.get_running_loop().start_tls(
                self.transport, self, tls.context, server_hostname=tls.name, ssl_handshake_timeout=timeout
            )
        except (ssl.SSLError, OSError) as error:
            raise BackendFailure(f"TLS with the backend failed: {describe_failure(error)}") from None
        if transport is None:
            raise BackendFailure("backend closed the connection during the TLS handshake")
        self.transport = transport

    # -- asyncio callbacks -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._parser.feed(data)
        if self.listener is not None:
            self._deliver()
        elif self._waiter is not None and not self._waiter.done():
            try:
                answer = self._parser.next_reply()
            except ReplyError as error:
                self._waiter.set_exception(self._malformed(error))
                return
            if answer is not None:
                self._waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = f"backend connection failed: {exc}" if exc else "backend closed the connection"
        slot, self.slot = self.slot, None
        if slot is not None:  # freed once the socket is really closed, not merely asked to close
            slot.release()
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.on_backend_lost(self.lost)
        elif self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(BackendFailure(self.lost))

    def pause_writing(self) -> None:
        if self.listener is not None:
            self.listener.on_backend_full(True)

    def resume_writing(self) -> None:
        if self.listener is not None:
            self.listener.on_backend_full(False)

    # -- what the owner does -----------------------------------------------------------------

    def listen(self, listener: BackendListener) -> None:
        """From now on every reply goes to ``listener`` as it arrives (and replies that came
        before, if any: the listener judges them)."""
        self.listener = listener
        if self.lost is not None:
            self.listener = None
            listener.on_backend_lost(self.lost)
        elif self._parser.pending():
            self._deliver()

    def _deliver(self) -> None:
        while self.listener is not None:
            try:
                answer = self._parser.next_reply()
            except ReplyError as error:
                listener = self.listener
                self.listener = None
                self.abort()
                listener.on_backend_lost(str(self._malformed(error)))
                return
            if answer is None:
                return
            self.listener.on_reply(answer)

    def _malformed(self, error: ReplyError) -> BackendFailure:
        return BackendFailure(f"backend sent a malformed reply: {error}")

    async def reply(self) -> Reply:
        try:
            answer = self._parser.next_reply()
        except ReplyError as error:
            raise self._malformed(error) from None
        if answer is not None:
            return answer
        if self.lost is not None:
            raise BackendFailure(self.lost)
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            return await self._waiter
        finally:
            self._waiter = None

    async def command(self, line: bytes) -> Reply:
        self.write(line + b"\r\n")
        return await self.reply()

    def write(self, data: bytes) -> None:
        # uvloop raises RuntimeError on a write to a transport it has closed (the backend hung up)
        if self.lost is not None or self.transport is None or self.transport.is_closing():
            raise BackendFailure(self.lost or "backend closed the connection")
        self.transport.write(data)

    def close(self) -> None:
        """Close after what was written; the slot is freed when the socket is closed."""
        self.listener = None
        if self.transport is not None:
            self.transport.close()
        elif self.slot is not None:
            self.slot.release()
            self.slot = None

    def abort(self) -> None:
        self.listener = None
        if self.transport is not None:
            self.transport.abort()
