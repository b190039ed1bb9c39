"""The pre-greet test: any byte before the final banner line marks a client as an early talker."""

from __future__ import annotations

from dataclasses import dataclass

from . import Action, Finding

SAMPLE_LIMIT = 100  # bytes shown in the log, as postscreen does

_ESCAPES = {0x5C: "\\\\", 0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t", 0x00: "\\0"}


@dataclass(slots=True)
class Pregreet:
    after: float  # seconds from connect to the first early byte
    count: int = 0
    sample: bytes = b""

    def add(self, data: bytes) -> None:
        self.count += len(data)
        if len(self.sample) < SAMPLE_LIMIT:
            self.sample += data[: SAMPLE_LIMIT - len(self.sample)]

    def finding(self, action: Action) -> Finding:
        return Finding("pregreet", action, f"{self.count} bytes after {self.after:.3f}s")


def escape(data: bytes) -> str:
    """C-style escapes for everything that is not printable ASCII."""
    return "".join(
        _ESCAPES.get(byte) or (chr(byte) if 0x20 <= byte < 0x7F else f"\\x{byte:02x}") for byte in data
    )
