"""Backend pressure: never overrun the backend when many clients pass the pause at once.

A stock sendmail listens with a backlog of 10 and forks a child per connection. The pool keeps
at most ``GREETPROXY_BACKEND_MAX_CONNECTIONS`` backend connections open, queues the clients that
pass while all are in use (in arrival order, each still a cheap waiting connection), paces new
connects to ``GREETPROXY_BACKEND_CONNECT_RATE`` and retries a refused or timed-out connect with
short backoff, as postscreen's post-queue limit does but without refusing at once.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib

from .backend import BackendFailure, BackendLink, BackendTls
from .config import Settings
from .session import Session

RETRY_FIRST = 0.05  # seconds before the first connect retry; doubles up to RETRY_MAX
RETRY_MAX = 1.0
MAX_LEAD = 0.5  # seconds: the most ahead of the banner that the backend is connected


class BackendBusy(BackendFailure):
    """Every backend connection stayed in use for the whole queue timeout."""


class ConnectPacer:
    """Spaces connects ``1/rate`` seconds apart; socket-free, given the current time."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    def reserve(self, now: float) -> float:
        """Book the next connect time; return how long to wait for it."""
        if not self.interval:
            return 0.0
        at = max(now, self._next)
        self._next = at + self.interval
        return at - now


class Slot:
    """The right to hold one backend connection; released once, by whoever holds it last."""

    __slots__ = ("_slots", "released")

    def __init__(self, slots: BackendSlots) -> None:
        self._slots = slots
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._slots.hand_on()


class BackendSlots:
    """A counting limit whose waiters are served strictly in arrival order."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiters: collections.deque[asyncio.Future[Slot]] = collections.deque()

    @property
    def queued(self) -> int:
        return len(self._waiters)

    async def acquire(self, timeout: float) -> Slot:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return Slot(self)
        waiter: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                waiter.result().release()  # a slot was handed over just as the wait ended
            else:
                waiter.cancel()
                # hand_on may have dropped it already: it skips (and pops) waiters that are done
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def hand_on(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(Slot(self))  # the slot passes on: in_use stays the same
                return
        self.in_use -= 1


class BackendPool:
    def __init__(self, config: Settings, tls: BackendTls | None, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.config = config
        self.tls = tls
        self.slots = BackendSlots(config.backend_max_connections)
        self.connecting = BackendSlots(config.backend_connects)
        self.pacer = ConnectPacer(config.backend_connect_rate)
        self.latency = 0.0  # smoothed seconds from connect to the backend's greeting
        self.ready = False  # the open-relay check has passed

    def lead(self, pause: float) -> float:
        """How long before the banner is due to start for the backend: a backend connected too
        early costs a sendmail process for every client that early-talks in the last moments."""
        return min(2 * self.latency + 0.005, MAX_LEAD, pause)

    async def admit(self, session: Session, pause_end: float) -> Slot:
        """Wait for a free backend connection and a connect time, up to the queue timeout counted
        from ``pause_end`` (loop time; the wait may begin a little earlier, see ``lead``).

        Cancelling this (the client talked early or hung up) gives the place up; nothing is open yet.
        """
        if not self.ready:
            raise BackendFailure("the open-relay check of the backend has not passed yet")
        loop = self.loop
        started = loop.time()
        ahead = self.slots.queued
        must_wait = ahead > 0 or self.slots.in_use >= self.slots.limit
        timeout = self.config.backend_queue_timeout
        deadline = pause_end + timeout
        try:
            slot = await self.slots.acquire(deadline - started)
        except TimeoutError:
            raise BackendBusy(f"all {self.slots.limit} backend connections busy for {timeout:g}s") from None
        try:
            delay = self.pacer.reserve(loop.time())
            if loop.time() + delay > deadline:
                raise BackendBusy(
                    f"backend connect rate: next connect in {delay:.1f}s, past the queue timeout"
                )
            if delay:
                await asyncio.sleep(delay)
        except BaseException:
            slot.release()
            raise
        waited = loop.time() - started
        if must_wait or delay:
            session.log.info("backend_queue", waited=round(waited, 3), queue=ahead, in_use=self.slots.in_use)
        return slot

    async def connect(self, session: Session, slot: Slot) -> BackendLink:
        """Connect and read the greeting, retrying refusals and timeouts within the connect timeout."""
        loop = self.loop
        config = self.config
        deadline = loop.time() + config.backend_connect_timeout
        backoff = RETRY_FIRST
        try:
            while True:
                started = loop.time()
                try:
                    link = await self._attempt(deadline - started)
                except BackendFailure as failure:
                    if not failure.retryable or loop.time() + backoff >= deadline:
                        raise
                    session.log.debug("backend_retry", reason=str(failure), backoff=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(2 * backoff, RETRY_MAX)
                    continue
                latency = loop.time() - started
                self.latency = 0.8 * self.latency + 0.2 * latency if self.latency else latency
                link.slot = slot
                return link
        except BaseException:
            slot.release()
            raise

    async def _attempt(self, timeout: float) -> BackendLink:
        """One connect, as one of at most ``backend_connects`` in flight: more would overflow the
        backend's listen queue (sendmail's is 10), and the kernel would drop the extra SYNs."""
        loop = self.loop
        started = loop.time()
        try:
            permit = await self.connecting.acquire(timeout)
        except TimeoutError:
            raise BackendFailure(f"no connect to the backend possible within {timeout:g}s") from None
        try:
            link, _ = await BackendLink.open(
                self.config.backend, self.config.backend_source, timeout - (loop.time() - started), self.tls
            )
        finally:
            permit.release()
        return link

    async def reconnect(self, session: Session, link: BackendLink) -> BackendLink:
        """A fresh connection in place of ``link``, keeping its slot."""
        slot = link.slot
        link.slot = None
        link.close()
        assert slot is not None
        try:
            await asyncio.sleep(self.pacer.reserve(self.loop.time()))
        except BaseException:
            slot.release()
            raise
        return await self.connect(session, slot)
