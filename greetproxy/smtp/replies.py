"""Parse the backend's replies (multi-line included) and format the proxy's own."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]|$)")
# RFC 5321 reply text is printable (TAB allowed; UTF-8 under SMTPUTF8). sendmail echoes client
# bytes with their 8th bit stripped, so 0x8d from a client comes back as a bare CR.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_CLEAN_FINAL_LINE = re.compile(rb"([2-5][0-9][0-9]) ([^\x00-\x08\x0a-\x1f\x7f]*)\r\n")
MAX_REPLY_LINE = 4096
MAX_REPLY_LINES = 200


class ReplyError(Exception):
    """The backend sent something that is not an SMTP reply."""


@dataclass(slots=True)
class Reply:
    code: int
    lines: tuple[bytes, ...]  # the text of each line, after "NNN-" or "NNN "
    raw: bytes = field(default=b"", compare=False, repr=False)  # as the client gets it

    def __post_init__(self) -> None:
        if not self.raw:
            head = str(self.code).encode()
            last = len(self.lines) - 1
            self.raw = b"".join(
                head + (b" " if index == last else b"-") + text + b"\r\n"
                for index, text in enumerate(self.lines)
            )

    @property
    def text(self) -> str:
        return " / ".join(line.decode("utf-8", "replace") for line in self.lines)

    @property
    def is_error(self) -> bool:
        return self.code >= 400

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


@functools.lru_cache(maxsize=256)
def reply(code: int, text: str) -> bytes:
    """One line of the proxy's own reply (the same few, over and over: kept once made)."""
    return f"{code} {text}\r\n".encode()


class ReplyParser:
    """Collects reply lines until the final one (``NNN `` or a bare ``NNN``)."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._raw: list[bytes] = []  # each line as the client gets it
        self._code = 0

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def pending(self) -> bool:
        """Bytes received beyond the replies handed out."""
        return bool(self._buffer)

    def next_reply(self) -> Reply | None:
        if not self._buffer:
            return None
        if not self._lines:  # the common case, a whole one-line reply with clean text, at once
            whole = _CLEAN_FINAL_LINE.match(self._buffer)
            if whole is not None and whole.end() <= MAX_REPLY_LINE:
                code, text, raw = whole.group(1, 2, 0)  # before the buffer moves under the match
                del self._buffer[: len(raw)]
                return Reply(int(code), (text,), raw)
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_REPLY_LINE:
                    raise ReplyError("reply line too long")
                return None
            line = bytes(self._buffer[:end]).removesuffix(b"\r")
            del self._buffer[: end + 1]
            match = _REPLY_LINE.match(line)
            if not match or len(line) > MAX_REPLY_LINE:
                raise ReplyError(f"not an SMTP reply line: {line[:80]!r}")
            code = int(match.group(1))
            if self._lines and code != self._code:
                raise ReplyError(f"reply code changed inside a multi-line reply: {line[:80]!r}")
            self._code = code
            text = line[4:]
            if _CONTROL.search(text):
                text = _CONTROL.sub(b"?", text)
                line = line[:4] + text
            final = match.group(2) != b"-"
            self._lines.append(text)
            self._raw.append(line + b"\r\n" if len(line) > 3 else line + b" \r\n")
            if len(self._lines) > MAX_REPLY_LINES:
                raise ReplyError("multi-line reply with too many lines")
            if final:
                done = Reply(code, tuple(self._lines), b"".join(self._raw))
                self._lines, self._raw = [], []
                return done
