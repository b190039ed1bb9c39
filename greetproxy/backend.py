"""One SMTP connection to the backend MTA: connect, greeting, command and reply."""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import Endpoint, Settings
from .smtp.ehlo import extensions
from .smtp.replies import Reply, ReplyError, ReplyParser
from .tls import client_context, describe_failure, start_tls

if TYPE_CHECKING:
    from .pool import Slot

READ_SIZE = 65536


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


class BackendLink:
    """Reads wait without a timer of their own: the caller's watchdog bounds them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._parser = ReplyParser()
        self.slot: Slot | None = None  # the pool's permit for this connection, released on close

    @classmethod
    async def open(
        cls, endpoint: Endpoint, source: str | None, connect_timeout: float, tls: BackendTls | None = None
    ) -> tuple[BackendLink, Reply]:
        """Connect (from ``source`` if given), read a 220 greeting and start ``tls`` if given, all
        within ``connect_timeout``."""
        writer = None
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer = await asyncio.open_connection(
                    endpoint.host, endpoint.port, local_addr=(source, 0) if source else None
                )
                link = cls(reader, writer)
                greeting = await link.reply()
                if greeting.code == 220 and tls is not None:
                    await link._start_tls(tls, connect_timeout)
        except TimeoutError:
            if writer is not None:
                writer.transport.abort()
            raise BackendFailure(
                f"no greeting from {endpoint} within {connect_timeout:g}s", retryable=True
            ) from None
        except OSError as error:
            if writer is not None:
                writer.transport.abort()
            reason = f"connect to {endpoint} failed: {error.strerror or error}"
            raise BackendFailure(reason, retryable=True) from None
        except BackendFailure:
            writer.transport.abort()
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
        try:
            self._reader, self._writer = await start_tls(
                self._writer, tls.context, timeout, server_hostname=tls.name
            )
        except (ssl.SSLError, OSError) as error:
            raise BackendFailure(f"TLS with the backend failed: {describe_failure(error)}") from None

    async def command(self, line: bytes) -> Reply:
        self._write(line + b"\r\n")
        return await self.reply()

    def _write(self, data: bytes) -> None:
        # uvloop raises RuntimeError on a write to a transport it has closed (the backend hung up)
        if self._writer.transport.is_closing():
            raise BackendFailure("backend closed the connection")
        self._writer.write(data)

    async def reply(self) -> Reply:
        while True:
            try:
                done = self._parser.next_reply()
            except ReplyError as error:
                raise BackendFailure(f"backend sent a malformed reply: {error}") from None
            if done is not None:
                return done
            try:
                data = await self._reader.read(READ_SIZE)
            except OSError as error:
                raise BackendFailure(f"backend connection failed: {error.strerror or error}") from None
            if not data:
                raise BackendFailure("backend closed the connection")
            self._parser.feed(data)

    async def send(self, data: bytes) -> None:
        """Write message text, waiting while the backend's socket buffer is full."""
        self._write(data)
        if self._writer.transport.get_write_buffer_size():
            try:
                await self._writer.drain()
            except OSError as error:
                raise BackendFailure(f"backend connection failed: {error.strerror or error}") from None

    def close(self) -> None:
        self._writer.close()
        slot, self.slot = self.slot, None
        if slot is not None:  # free only once the socket is really closed, not merely asked to close
            closed = asyncio.ensure_future(self._writer.wait_closed())
            closed.add_done_callback(lambda done: _release_after(done, slot))


def _release_after(closed: asyncio.Future[None], slot: Slot) -> None:
    if not closed.cancelled():
        closed.exception()  # a reset connection is closed all the same
    slot.release()
