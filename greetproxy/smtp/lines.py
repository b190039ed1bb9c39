"""Split client input into command lines, flagging bare LF, bare CR and over-long lines."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Ending(enum.Enum):
    CRLF = "crlf"
    BARE_LF = "bare_lf"
    TOO_LONG = "too_long"


@dataclass(slots=True)
class Line:
    text: bytes  # without its terminator; for TOO_LONG, the first `limit` bytes
    ending: Ending

    @property
    def bare_newline(self) -> bool:
        """A lone LF ends the line or a lone CR sits inside it (RFC 5321 2.3.8 forbids both)."""
        return self.ending is Ending.BARE_LF or b"\r" in self.text


class LineSplitter:
    """Buffers bytes and hands out whole lines of at most ``limit`` octets including CRLF.

    A line over the limit is reported once as TOO_LONG and the rest of it, up to the next LF,
    is discarded, so a client cannot make the buffer grow without bound.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._start = 0  # consumed prefix, dropped lazily to avoid quadratic copying
        self._discarding = False

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def __len__(self) -> int:
        return len(self._buffer) - self._start

    def take_buffer(self) -> bytes:
        """Everything not yet handed out as a line (for a switch to message-text framing)."""
        rest = b"" if self._discarding else bytes(self._buffer[self._start :])
        self._buffer.clear()
        self._start = 0
        self._discarding = False
        return rest

    def next_line(self) -> Line | None:
        if self._start == len(self._buffer):
            return None
        while True:
            end = self._buffer.find(b"\n", self._start)
            if not self._discarding:
                break
            if end < 0:
                self._buffer.clear()
                self._start = 0
                return None
            self._consume(end + 1)
            self._discarding = False
        if end < 0:
            if len(self) > self.limit:
                text = bytes(self._buffer[self._start : self._start + self.limit])
                self._buffer.clear()
                self._start = 0
                self._discarding = True
                return Line(text, Ending.TOO_LONG)
            return None
        raw = self._buffer[self._start : end + 1]
        self._consume(end + 1)
        if len(raw) > self.limit:
            return Line(bytes(raw[: self.limit]), Ending.TOO_LONG)
        if raw.endswith(b"\r\n"):
            return Line(bytes(raw[:-2]), Ending.CRLF)
        return Line(bytes(raw[:-1]), Ending.BARE_LF)

    def _consume(self, upto: int) -> None:
        self._start = upto
        if self._start == len(self._buffer):
            self._buffer.clear()
            self._start = 0
        elif self._start > 65536:
            del self._buffer[: self._start]
            self._start = 0
