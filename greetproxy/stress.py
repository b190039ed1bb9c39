"""Stress mode: when the pause holds too many clients, shorten it until the crowd thins out.

Entered above 90% of GREETPROXY_MAX_CONNECTIONS waiting in the pause, left below 70%, as
postscreen does with its pre-queue limit; the gap keeps it from flapping.
"""

from __future__ import annotations

from typing import Any

ENTER = 0.9
LEAVE = 0.7


class StressMode:
    def __init__(self, max_connections: int, log: Any) -> None:
        self.enter_at = ENTER * max_connections
        self.leave_at = LEAVE * max_connections
        self.active = False
        self._log = log

    def update(self, waiting: int) -> None:
        if not self.active and waiting > self.enter_at:
            self.active = True
            self._log.warning("stress", state="entering", waiting=waiting)
        elif self.active and waiting < self.leave_at:
            self.active = False
            self._log.info("stress", state="leaving", waiting=waiting)
