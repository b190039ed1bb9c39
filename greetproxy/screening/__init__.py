"""Screening tests and the verdict that combines them.

Each test lives in its own module and reports :class:`Finding` objects; :func:`decide` turns
the findings of one connection into one :class:`Verdict`. A test never looks at another's result.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Action(enum.IntEnum):
    """What a failed test asks for; a higher value wins when tests disagree."""

    IGNORE = 0  # log only
    ENFORCE = 1  # greet, never contact the backend, refuse MAIL and RCPT
    DROP = 2  # refuse and close at once

    @classmethod
    def named(cls, name: str) -> Action:
        return cls[name.upper()]


@dataclass(frozen=True, slots=True)
class Finding:
    test: str
    action: Action
    detail: str


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action | None  # None: the client passed
    findings: tuple[Finding, ...]

    @property
    def passed(self) -> bool:
        return self.action is None or self.action is Action.IGNORE

    @property
    def reason(self) -> str:
        return ", ".join(finding.test for finding in self.findings if finding.action == self.action)


def decide(findings: Iterable[Finding]) -> Verdict:
    collected = tuple(findings)
    action = max((finding.action for finding in collected), default=None)
    return Verdict(action, collected)
