"""State shared by every instance of a fleet, in Redis (``GREETPROXY_STATE=redis://...``).

The pass cache and the per-client limits move here so that a client that passed on one instance
is a remembered pass on the others, and so that its connections count on all of them. One Lua
script per new connection does all of it in one round trip, atomically: drop expired leases,
compare the open ones and the rate bucket against the limits, take a lease, read the pass.

A connection's place in the concurrency count is a *lease* (a member of a sorted set, scored by
its expiry on Redis's own clock), renewed while the connection lives and removed when it ends;
the leases of an instance that crashed run out within :data:`LEASE_TTL`, so no count stays stuck.

Redis is a help, never a dependency: a failed or slow call (``GREETPROXY_STATE_TIMEOUT``) sends
the instance to its local state (the SQLite pass cache and its own counts) at once; the outage is
logged once, every failure is counted, and Redis is tried again with a growing backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .logs import get_logger

PREFIX = "greetproxy:"
LEASE_TTL = 60.0  # seconds a lease outlives its last renewal (an instance that crashed)
RENEW_EVERY = LEASE_TTL / 3
RENEW_BATCH = 1000  # leases renewed per script call
POOL_SIZE = 4  # connections to Redis, kept within the descriptors server.FILE_RESERVE holds back
QUEUE_BATCH = 500  # commands a round trip at most
TELL_WITHIN = 0.1  # seconds a command nobody waits for may wait for company
RETRY_FIRST, RETRY_MOST = 1.0, 30.0  # seconds between attempts while Redis is away, doubling
SCHEMES = ("redis", "rediss", "unix", "redis+sentinel")

_T = TypeVar("_T")

# KEYS: open leases (sorted set), rate bucket (hash), pass. ARGV: lease member, lease ms,
# concurrency, rate capacity, refill per ms, count even when over a limit (dry run), check limits.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local broken = ''
if ARGV[7] == '1' then
  local lease, capacity, refill = tonumber(ARGV[2]), tonumber(ARGV[4]), tonumber(ARGV[5])
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  local open = redis.call('ZCARD', KEYS[1])
  local bucket = redis.call('HMGET', KEYS[2], 'tokens', 'at')
  local tokens = capacity
  if bucket[1] then
    tokens = math.min(capacity, tonumber(bucket[1]) + (now - tonumber(bucket[2])) * refill)
  end
  if open >= tonumber(ARGV[3]) then
    broken = 'client_concurrency'
  elseif tokens < 1 then
    broken = 'client_rate'
  end
  if broken == '' or ARGV[6] == '1' then
    redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
    redis.call('PEXPIRE', KEYS[1], lease)
    tokens = math.max(0, tokens - 1)
    redis.call('HSET', KEYS[2], 'tokens', tostring(tokens), 'at', now)
    redis.call('PEXPIRE', KEYS[2], math.ceil((capacity - tokens) / refill) + 1000)
  end
end
return {broken, redis.call('GET', KEYS[3]) or ''}
"""

# KEYS: lease sets; ARGV[1]: lease ms, then one member per key.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if redis.call('ZADD', key, 'XX', 'CH', now + lease, ARGV[i + 1]) == 1 then
    redis.call('PEXPIRE', key, lease)
  end
end
return #KEYS
"""


class StateUnavailable(Exception):
    """Redis did not answer (or not in time): the caller decides on local state."""


@dataclass(frozen=True, slots=True)
class SharedAnswer:
    refused: str | None  # the limit the fleet-wide counts break, if any
    pass_expires: float | None  # unix time of the client's pass, if one is cached


def check_url(url: str) -> str:
    """Raise ValueError unless ``url`` is a Redis URL greetproxy can use."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(
            "expected redis://host:port/db, rediss://..., unix:///path or "
            "redis+sentinel://host:port[,host:port]/service[/db]"
        )
    if parts.scheme == "redis+sentinel":
        _sentinel_parts(url)
        return url
    try:
        aioredis.ConnectionPool.from_url(url)  # parses only; connects on first use
    except ValueError as error:
        raise ValueError(f"expected a Redis URL ({error})") from None
    return url


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], str, int, str | None]:
    """redis+sentinel://[:password@]host:port[,host:port]/service[/db] -> (sentinels, service, db,
    password): redis-py speaks Sentinel but has no URL for it."""
    parts = urlsplit(url)
    credentials, _, hosts = parts.netloc.rpartition("@")
    password = unquote(credentials.partition(":")[2]) or None
    sentinels = []
    for host in filter(None, hosts.split(",")):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise ValueError(f"expected sentinels as host:port, not {host!r}")
        sentinels.append((name.strip("[]"), int(port)))
    path = [part for part in parts.path.split("/") if part]
    if not sentinels or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError("expected redis+sentinel://host:port[,host:port]/service[/db]")
    return sentinels, path[0], int(path[1]) if len(path) == 2 else 0, password


def connect(url: str, timeout: float) -> aioredis.Redis:
    """A client that gives up after ``timeout`` and never retries on its own (we fall back)."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "client_name": f"greetproxy-{socket.gethostname()}-{os.getpid()}",
    }
    if url.startswith("redis+sentinel:"):
        from redis.asyncio.sentinel import Sentinel

        sentinels, service, db, password = _sentinel_parts(url)
        sentinel = Sentinel(sentinels, sentinel_kwargs={"socket_timeout": timeout}, **options)
        return sentinel.master_for(service, db=db, password=password)
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=timeout, **options
    )
    return aioredis.Redis(connection_pool=pool)


def _without_password(url: str) -> str:
    """The URL for the logs."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def masked(url: str) -> str:
    """The URL with its password as ``***``, for ``greetproxy check``."""
    parts = urlsplit(url)
    credentials, at, hosts = parts.netloc.rpartition("@")
    user, colon, password = credentials.partition(":")
    if not password:
        return url
    return parts._replace(netloc=f"{user}{colon}***{at}{hosts}").geturl()


class RedisState:
    """The fleet's shared pass cache and per-client counts, with local state as the fallback.

    Every command goes through one queue, sent as a pipeline a round trip at a time: under load
    each round trip carries the commands of many connections (redis-py costs ~150 us of CPU a
    command alone, ~30 us in a pipeline of a hundred), and commands reach Redis in the order they
    were made, so a connection's release never overtakes its lease.
    """

    def __init__(self, url: str, timeout: float, concurrency: int, rate_per_minute: int) -> None:
        self.url = url
        self.timeout = timeout
        self.client = connect(url, timeout)
        self._limits = (concurrency, rate_per_minute, rate_per_minute / 60_000)  # refill per ms
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.where = _without_password(url)
        self.leases: dict[str, str] = {}  # session id -> its lease set, renewed while it lives
        self.available = True
        self.failures = 0  # calls that failed, since the start
        self._queue: list[_Command] = []
        self._sender: asyncio.Task[None] | None = None  # sends the queue while it is not empty
        self._later: asyncio.TimerHandle | None = None  # sends what was told, if nothing is asked
        self._outage: tuple[float, int] | None = None  # when it began, failures then
        self._retry = RETRY_FIRST
        self._tasks: list[asyncio.Task[None]] = []
        self.log = get_logger()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._renew_forever()), loop.create_task(self._first_probe())]

    # -- what the gate asks -------------------------------------------------------------------

    def admit(
        self, session_id: str, ip: str, pass_key: str, limits: bool, dry_run: bool
    ) -> Coroutine[Any, Any, SharedAnswer]:
        """Take a lease for a new connection from ``ip`` and read the pass of ``pass_key``.
        ``limits`` False (a permitted client) only reads the pass. The lease is taken, and its
        command queued, when this is called, not when the answer is awaited: a release that comes
        first (a client gone at once) still follows it. The answer raises StateUnavailable."""
        open_key = f"{PREFIX}open:{ip}"
        concurrency, capacity, refill = self._limits
        keys = (open_key, f"{PREFIX}rate:{ip}", f"{PREFIX}pass:{pass_key}")
        args = (self._member(session_id), int(LEASE_TTL * 1000), concurrency, capacity, refill)
        answer = self._ask("EVAL", _ADMIT, 3, *keys, *args, int(dry_run), int(limits))
        if limits:
            self.leases[session_id] = open_key
        return self._admitted(session_id, answer, dry_run)

    async def _admitted(self, session_id: str, answer: asyncio.Future[Any], dry_run: bool) -> SharedAnswer:
        try:
            broken, expires = await answer
        except StateUnavailable:
            self.leases.pop(session_id, None)
            raise
        if broken and not dry_run:
            self.leases.pop(session_id, None)  # refused: the script took no lease
        pass_expires = float(expires) if expires and float(expires) > time.time() else None
        return SharedAnswer(broken.decode() or None, pass_expires)

    def release(self, session_id: str) -> None:
        """The connection ended: its lease goes (or, if Redis is away, runs out on its own)."""
        open_key = self.leases.pop(session_id, None)
        if open_key is not None:
            self._tell("ZREM", open_key, self._member(session_id))

    def remember(self, pass_key: str, expires: float) -> None:
        self._tell("SET", f"{PREFIX}pass:{pass_key}", repr(expires), "PXAT", int(expires * 1000), now=True)

    def forget(self, pass_key: str) -> None:
        self._tell("DEL", f"{PREFIX}pass:{pass_key}", now=True)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for session_id in list(self.leases):  # a clean stop frees its leases at once
            self.release(session_id)
        self._send_now()
        if self._sender is not None:
            await asyncio.wait([self._sender], timeout=self.timeout * 4)
        with contextlib.suppress(Exception):
            await self.client.aclose()

    # -- plumbing -----------------------------------------------------------------------------

    def _member(self, session_id: str) -> str:
        return f"{self.instance}:{session_id}"

    def _ask(self, *command: object) -> asyncio.Future[Any]:
        """Queue a command and send the queue now; the future has its reply, or StateUnavailable."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieved)
        if not self.available:
            future.set_exception(StateUnavailable("away"))
            return future
        self._queue.append(_Command(command, future))
        self._send_now()
        return future

    def _tell(self, *command: object, now: bool = False) -> None:
        """Queue a command nobody waits for, sent with the next question or within
        :data:`TELL_WITHIN`: a quiet instance makes one round trip a connection, not two. ``now``:
        news the other instances need at once (a pass given or withdrawn: the client's next
        connection may reach another instance within milliseconds). While Redis is away nothing is
        queued: what is not said then is served by local state (passes), or runs out (leases)."""
        if not self.available:
            return
        self._queue.append(_Command(command, None))
        if now:
            self._send_now()
        elif self._sender is None and self._later is None:
            self._later = asyncio.get_running_loop().call_later(TELL_WITHIN, self._send_now)

    def _send_now(self) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._sender is None and self._queue:
            self._sender = asyncio.get_running_loop().create_task(self._send_queue())

    async def _send_queue(self) -> None:
        try:
            while self._queue and self.available:
                batch, self._queue = self._queue[:QUEUE_BATCH], self._queue[QUEUE_BATCH:]
                try:
                    async with asyncio.timeout(self.timeout):
                        async with self.client.pipeline(transaction=False) as pipe:
                            for item in batch:
                                pipe.execute_command(*item.command)
                            replies = await pipe.execute(raise_on_error=False)
                except (redis.exceptions.RedisError, OSError, TimeoutError) as error:
                    self._failed(error)
                    replies = [StateUnavailable(str(error) or type(error).__name__)] * len(batch)
                for item, answer in zip(batch, replies, strict=True):
                    if isinstance(answer, Exception) and not isinstance(answer, StateUnavailable):
                        self._failed(answer)  # a refused script or command: a bug, or not Redis
                        answer = StateUnavailable(str(answer))
                    if item.reply is None or item.reply.done():
                        continue
                    if isinstance(answer, Exception):
                        item.reply.set_exception(answer)
                    else:
                        item.reply.set_result(answer)
            for item in self._queue:  # Redis went away meanwhile
                if item.reply is not None and not item.reply.done():
                    item.reply.set_exception(StateUnavailable("away"))
            self._queue.clear()
        finally:
            self._sender = None

    def _failed(self, error: BaseException) -> None:
        self.failures += 1
        reason = str(error) or type(error).__name__
        self.log.debug("state_error", error=reason, state=self.where)
        if self.available:
            self.available = False
            self._outage = (time.monotonic(), self.failures - 1)
            self.log.warning(
                "state_unavailable", error=reason, state=self.where, fallback="local", retry=self._retry
            )
            self._tasks.append(asyncio.get_running_loop().create_task(self._probe_until_back()))

    async def _ping(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.ping()
        except (redis.exceptions.RedisError, OSError, TimeoutError) as error:
            raise StateUnavailable(str(error) or type(error).__name__) from None

    async def _first_probe(self) -> None:
        """At start: a Redis that is not there yet must not stop the instance, only be noticed."""
        try:
            await self._ping()
        except StateUnavailable as error:
            self._failed(error)
        else:
            self.log.info("state", state=self.where, instance=self.instance)

    async def _probe_until_back(self) -> None:
        while True:
            await asyncio.sleep(self._retry)
            try:
                await self._ping()
            except StateUnavailable as error:
                self.failures += 1
                self.log.debug("state_error", error=str(error), state=self.where)
                self._retry = min(self._retry * 2, RETRY_MOST)
                continue
            began, failures = self._outage or (time.monotonic(), self.failures)
            self.available, self._retry, self._outage = True, RETRY_FIRST, None
            self.log.info(
                "state_available",
                state=self.where,
                down_for=round(time.monotonic() - began, 1),
                failures=self.failures - failures,
            )
            return

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            leases = list(self.leases.items())
            for start in range(0, len(leases), RENEW_BATCH):
                batch = leases[start : start + RENEW_BATCH]
                members = [self._member(session) for session, _ in batch]
                self._tell(
                    "EVAL", _RENEW, len(batch), *(key for _, key in batch), int(LEASE_TTL * 1000), *members
                )


def _retrieved(future: asyncio.Future[Any]) -> None:
    """An answer whose asker went away (a connection cancelled before it awaited) is dropped
    quietly, not reported as an exception never retrieved."""
    if not future.cancelled():
        future.exception()


@dataclass(frozen=True, slots=True)
class _Command:
    command: tuple[object, ...]
    reply: asyncio.Future[Any] | None  # None: nobody waits for the answer


# -- the command line: ``greetproxy cache`` against the fleet's Redis ------------------------------


async def run_once(url: str, timeout: float, work: Callable[[aioredis.Redis], Awaitable[_T]]) -> _T:
    """One operation of the command line against Redis; StateUnavailable if it cannot."""
    client = connect(url, timeout)
    try:
        return await asyncio.wait_for(work(client), timeout * 10)
    except (redis.exceptions.RedisError, OSError, TimeoutError) as error:
        raise StateUnavailable(f"{_without_password(url)}: {error or type(error).__name__}") from None
    finally:
        await client.aclose()


async def run_check(url: str, timeout: float) -> tuple[str, float]:
    """``greetproxy check``: Redis's version, and the best of five PING round trips in seconds."""

    async def measure(client: aioredis.Redis) -> tuple[str, float]:
        version = (await client.info("server"))["redis_version"]
        trips = []
        for _ in range(5):
            started = time.perf_counter()
            await client.ping()
            trips.append(time.perf_counter() - started)
        return str(version), min(trips)

    return await run_once(url, timeout, measure)


async def pass_entries(client: aioredis.Redis) -> list[tuple[str, float]]:
    keys = [key async for key in client.scan_iter(match=f"{PREFIX}pass:*", count=1000)]
    values = await client.mget(keys) if keys else []
    now = time.time()
    found = [
        (key.decode()[len(PREFIX) + 5 :], float(value))
        for key, value in zip(keys, values, strict=True)
        if value
    ]
    return sorted(item for item in found if item[1] > now)


async def pass_forget(client: aioredis.Redis, pass_key: str) -> bool:
    return bool(await client.delete(f"{PREFIX}pass:{pass_key}"))


async def pass_clear(client: aioredis.Redis) -> int:
    keys = [key async for key in client.scan_iter(match=f"{PREFIX}pass:*", count=1000)]
    return int(await client.delete(*keys)) if keys else 0
