"""Per-client limits, checked at connect before any pause or backend work.

Open connections per client address (postscreen's client_connection_count_limit) and new
connections per address per minute (a token bucket: a burst of ``rate``, then ``rate``/60 a second).
"""

from __future__ import annotations

SWEEP_EVERY = 60.0  # seconds between purges of buckets that have refilled (idle clients)


class ClientLimits:
    def __init__(self, concurrency: int, rate_per_minute: int) -> None:
        self.concurrency = concurrency
        self.capacity = float(rate_per_minute)
        self.refill = rate_per_minute / 60.0
        self.open: dict[str, int] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)
        self._swept = 0.0

    def check(self, ip: str, now: float) -> str | None:
        """The limit a new connection from ``ip`` would break, if any."""
        if self.open.get(ip, 0) >= self.concurrency:
            return "client_concurrency"
        if self._tokens(ip, now) < 1.0:
            return "client_rate"
        return None

    def count(self, ip: str, now: float) -> None:
        """Record a new connection from ``ip`` (also one let through by a dry run)."""
        self._buckets[ip] = (max(0.0, self._tokens(ip, now) - 1.0), now)
        self.open[ip] = self.open.get(ip, 0) + 1
        if now - self._swept > SWEEP_EVERY:
            self._sweep(now)

    def _tokens(self, ip: str, now: float) -> float:
        tokens, at = self._buckets.get(ip, (self.capacity, now))
        return min(self.capacity, tokens + (now - at) * self.refill)

    def release(self, ip: str) -> None:
        count = self.open.get(ip, 0) - 1
        if count > 0:
            self.open[ip] = count
        else:
            self.open.pop(ip, None)

    def _sweep(self, now: float) -> None:
        self._swept = now
        full = [ip for ip in self._buckets if self._tokens(ip, now) >= self.capacity]
        for ip in full:
            del self._buckets[ip]
