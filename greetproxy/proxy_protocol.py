"""The PROXY protocol header (v1 text, v2 binary) a load balancer sends ahead of the client's bytes.

Parsing is aiosmtpd's (``aiosmtpd.proxy_protocol.get_proxy``), which reads through an async
reader. :class:`ProxyHeader` is that reader over bytes fed to it, and drives the parser by hand:
the parser's coroutine runs until it wants bytes that have not come yet, and resumes on the next
:meth:`ProxyHeader.feed`. So the gate needs no task and no stream per connection, and the parsing
tests without sockets or timers.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine, Generator
from dataclasses import dataclass
from typing import Any

from aiosmtpd.proxy_protocol import AF, V2_CMD, ProxyData, get_proxy

from .screening.access import client_address

V1_LONGEST = 107  # the spec's longest v1 line, CRLF included
LONGEST = 16 + 4096  # v2: the fixed part and room for a load balancer's TLVs

# aiosmtpd logs every malformed header as a warning of its own; ours (proxy_protocol) says it once.
logging.getLogger("mail.debug").addFilter(lambda record: not record.getMessage().startswith("PROXY"))


class _More:
    """Awaited by the reader when the bytes it needs have not arrived: the driver gets control."""

    def __await__(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True, slots=True)
class ProxyResult:
    """A parsed header: ``client`` is None for a LOCAL (v2) or UNKNOWN (v1) header, the load
    balancer's own connection (a health check): the connection is then taken as the balancer's."""

    version: int
    client: tuple[str, int] | None
    leftover: bytes  # the client's first bytes, which came behind the header


class ProxyHeaderError(Exception):
    """Not a usable PROXY header; the message says what was wrong."""


class ProxyHeader:
    """Feed it the connection's first bytes until :meth:`feed` returns a :class:`ProxyResult`."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fed = 0  # bytes so far: the parser drains the buffer as it reads
        self._parser: Coroutine[Any, None, ProxyData] = get_proxy(self)
        self._parser.send(None)  # runs until it waits for the first bytes

    def feed(self, data: bytes) -> ProxyResult | None:
        """The header, once complete; None while more bytes are needed. Raises ProxyHeaderError."""
        self._buffer += data
        self._fed += len(data)
        try:
            self._parser.send(None)
        except StopIteration as done:
            return self._result(done.value)
        if self._fed > LONGEST:
            self._parser.close()
            raise ProxyHeaderError(f"no complete header in {LONGEST} bytes")
        return None

    def close(self) -> None:
        self._parser.close()

    def _result(self, data: ProxyData) -> ProxyResult:
        if not data.valid:
            raise ProxyHeaderError(data.error or "not a PROXY header")
        leftover = bytes(self._buffer)
        local = data.version == 2 and data.command == V2_CMD.LOCAL
        if local or data.family not in (AF.INET, AF.INET6):  # v1 UNKNOWN, v2 LOCAL/UNSPEC/UNIX
            return ProxyResult(data.version or 0, None, leftover)
        address = str(client_address(str(data.src_addr)))
        return ProxyResult(data.version or 0, (address, int(data.src_port or 0)), leftover)

    # -- aiosmtpd's AsyncReader, over the bytes fed so far -----------------------------------

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            await _More()
        return self._take(n)

    async def read(self, n: int = -1) -> bytes:
        while not self._buffer:
            await _More()
        return self._take(len(self._buffer) if n < 0 else n)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        while (end := self._buffer.find(separator)) < 0:
            if len(self._buffer) > V1_LONGEST:
                return self._take(len(self._buffer))  # the parser reports it as too long
            await _More()
        return self._take(end + len(separator))

    def _take(self, n: int) -> bytes:
        taken = bytes(self._buffer[:n])
        del self._buffer[:n]
        return taken
