"""Frame message text after a 354: find the strict end of data, refuse bare CR/LF and long lines.

The end of data is only ever CRLF "." CRLF. Every other variant (``\\n.\\n``, ``\\r.\\r``,
``\\n.\\r\\n`` and the rest of the 2023 smuggling research) contains a bare CR or LF, which
makes the whole message bad: nothing after it reaches the backend, so the backend can never
see a message boundary that the proxy did not.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXT_LINE_LIMIT = 1000  # octets including CRLF, RFC 5321 4.5.3.1.6
_END = b"\r\n.\r\n"

BARE_NEWLINE = "bare CR or LF in message text"
LONG_LINE = f"message text line longer than {TEXT_LINE_LIMIT} octets"


@dataclass(slots=True)
class BodyStep:
    forward: bytes  # clean text for the backend now; ends with ".\r\n" when done and clean
    done: bool  # the client's end of data was seen
    rest: bytes = b""  # bytes after the end of data: the client's next commands


class BodyScanner:
    """Each chunk is split at its CRLFs once; every check works on those lines with C-speed
    list and bytes operations (a regular expression or a loop per line costs several times more:
    about 1 ms for 100 KB of text, against 0.2 ms)."""

    def __init__(self) -> None:
        self._carry = b""  # clean: the incomplete last line; bad: the last 4 bytes seen
        self.problem: str | None = None
        self.size = 0  # octets of message text passed on

    def feed(self, data: bytes) -> BodyStep:
        if self.problem is not None:
            return self._discard(data)
        buffer = self._carry + data if self._carry else data
        lines = buffer.split(b"\r\n")
        # The carry always starts a line that follows a CRLF (or the DATA command itself), so a
        # "." line followed by a CRLF is the end of data wherever it is.
        try:
            end_line = lines.index(b".", 0, len(lines) - 1)
        except ValueError:
            end_line = -1
        if end_line >= 0:
            end = sum(map(len, lines[:end_line])) + 2 * end_line  # where the "." line starts
            text, rest = buffer[:end], buffer[end + 3 :]
            if self._spoiled(lines[:end_line]):
                return BodyStep(b"", True, rest)
            self.size += len(text)
            return BodyStep(text + b".\r\n", True, rest)
        partial = lines[-1]  # after the last CRLF: the next chunk completes it
        if b"\n" in partial:  # a bare LF
            self.problem = BARE_NEWLINE
        elif len(partial) >= TEXT_LINE_LIMIT:
            self.problem = LONG_LINE
        if self.problem is not None or self._spoiled(lines[:-1]):
            return self._discard(b"", seen=buffer)
        self._carry = partial
        text = buffer[: len(buffer) - len(partial)]
        self.size += len(text)
        return BodyStep(text, False)

    def _spoiled(self, lines: list[bytes]) -> bool:
        """``lines``: complete lines, split at their CRLFs."""
        joined = b"".join(lines)
        if b"\r" in joined or b"\n" in joined:
            self.problem = BARE_NEWLINE
        elif lines and max(map(len, lines)) > TEXT_LINE_LIMIT - 2:
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
