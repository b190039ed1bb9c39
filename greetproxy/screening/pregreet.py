"""The pre-greet test: any byte before the final banner line marks a client as an early talker."""

from __future__ import annotations

from dataclasses import dataclass

from . import Action, Finding

SAMPLE_LIMIT = 100  # bytes shown in the log, as postscreen does


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
