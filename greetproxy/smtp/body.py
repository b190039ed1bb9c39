"""Frame message text after a 354: find the strict end of data, refuse bare CR/LF and long lines.

The end of data is only ever CRLF "." CRLF. Every other variant (``\\n.\\n``, ``\\r.\\r``,
``\\n.\\r\\n`` and the rest of the 2023 smuggling research) contains a bare CR or LF, which
makes the whole message bad: nothing after it reaches the backend, so the backend can never
see a message boundary that the proxy did not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TEXT_LINE_LIMIT = 1000  # octets including CRLF, RFC 5321 4.5.3.1.6
# Text plus CR, longer than the limit allows. Anchored at line starts so a search costs one pass, not
# one pass per octet of every long-but-legal line.
_LONG_LINE = re.compile(rb"^[^\n]{%d}" % TEXT_LINE_LIMIT, re.MULTILINE)
_END = b"\r\n.\r\n"

BARE_NEWLINE = "bare CR or LF in message text"
LONG_LINE = f"message text line longer than {TEXT_LINE_LIMIT} octets"


@dataclass(frozen=True, slots=True)
class BodyStep:
    forward: bytes  # clean text for the backend now; ends with ".\r\n" when done and clean
    done: bool  # the client's end of data was seen
    rest: bytes = b""  # bytes after the end of data: the client's next commands


class BodyScanner:
    def __init__(self) -> None:
        self._carry = b""  # clean: the incomplete last line; bad: the last 4 bytes seen
        self.problem: str | None = None
        self.size = 0  # octets of message text passed on

    def feed(self, data: bytes) -> BodyStep:
        if self.problem is not None:
            return self._discard(data)
        buffer = self._carry + data
        # The carry always starts a line that follows a CRLF (or the DATA command itself).
        if buffer.startswith(b".\r\n"):
            end = 0
        else:
            end = buffer.find(_END)
            end = end + 2 if end >= 0 else -1
        if end >= 0:
            text, rest = buffer[:end], buffer[end + 3 :]
            if self._spoiled(text):
                return BodyStep(b"", True, rest)
            self.size += len(text)
            return BodyStep(text + b".\r\n", True, rest)
        last_newline = buffer.rfind(b"\n") + 1
        text, self._carry = buffer[:last_newline], buffer[last_newline:]
        if self._spoiled(text) or self._spoiled_by_carry():
            return self._discard(b"", seen=buffer)
        self.size += len(text)
        return BodyStep(text, False)

    def _spoiled(self, text: bytes) -> bool:
        crlf = text.count(b"\r\n")
        if text.count(b"\n") != crlf or text.count(b"\r") != crlf:
            self.problem = BARE_NEWLINE
        elif len(text) >= TEXT_LINE_LIMIT and _LONG_LINE.search(text):
            self.problem = LONG_LINE
        return self.problem is not None

    def _spoiled_by_carry(self) -> bool:
        if len(self._carry) >= TEXT_LINE_LIMIT:
            self.problem = LONG_LINE
        return self.problem is not None

    def _discard(self, data: bytes, seen: bytes | None = None) -> BodyStep:
        """Drop text until the strict end of data, keeping 4 bytes of context across feeds."""
        if seen is not None:  # entering: what was seen so far is the context
            self._carry = (b"\r\n" + seen)[-4:]
        buffer = self._carry + data
        end = buffer.find(_END)
        if end >= 0:
            return BodyStep(b"", True, buffer[end + len(_END) :])
        self._carry = buffer[-4:]
        return BodyStep(b"", False)
