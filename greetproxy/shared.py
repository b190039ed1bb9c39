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
from collections.abc import Awaitable, Callable
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
POOL_SIZE = 8  # connections to Redis, kept within the descriptors server.FILE_RESERVE holds back
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
    """The fleet's shared pass cache and per-client counts, with local state as the fallback."""

    def __init__(self, url: str, timeout: float, concurrency: int, rate_per_minute: int) -> None:
        self.url = url
        self.timeout = timeout
        self.client = connect(url, timeout)
        self._admit_script = self.client.register_script(_ADMIT)
        self._renew_script = self.client.register_script(_RENEW)
        self._limits = (concurrency, rate_per_minute, rate_per_minute / 60_000)  # refill per ms
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.where = _without_password(url)
        self.leases: dict[str, str] = {}  # session id -> its lease set, renewed while it lives
        self.available = True
        self.failures = 0  # calls that failed, since the start
        self._outage: tuple[float, int] | None = None  # when it began, failures then
        self._retry = RETRY_FIRST
        self._probe: asyncio.Task[None] | None = None
        self._renewer: asyncio.Task[None] | None = None
        self.log = get_logger()

    def start(self) -> None:
        self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
        self._probe = asyncio.get_running_loop().create_task(self._first_probe())

    # -- what the gate asks -------------------------------------------------------------------

    async def admit(
        self, session_id: str, ip: str, pass_key: str, limits: bool, dry_run: bool
    ) -> SharedAnswer:
        """Take a lease for a new connection from ``ip`` and read the pass of ``pass_key``.
        ``limits`` False (a permitted client) only reads the pass. Raises StateUnavailable."""
        open_key = f"{PREFIX}open:{ip}"
        if limits:
            self.leases[session_id] = open_key  # before the call: a release while it runs sees it
        concurrency, capacity, refill = self._limits
        keys = [open_key, f"{PREFIX}rate:{ip}", f"{PREFIX}pass:{pass_key}"]
        args = [self._member(session_id), int(LEASE_TTL * 1000), concurrency, capacity, refill]
        args += [int(dry_run), int(limits)]
        try:
            broken, expires = await self._call(self._admit_script(keys=keys, args=args))
        except StateUnavailable:
            self.leases.pop(session_id, None)
            raise
        if broken and not dry_run:
            self.leases.pop(session_id, None)  # refused: the script took no lease
        elif limits and session_id not in self.leases:
            self._spawn(self._drop_lease(open_key, session_id))  # the connection ended meanwhile
        pass_expires = float(expires) if expires and float(expires) > time.time() else None
        return SharedAnswer(broken.decode() or None, pass_expires)

    def release(self, session_id: str) -> None:
        """The connection ended: its lease goes (or, if Redis is away, runs out on its own)."""
        open_key = self.leases.pop(session_id, None)
        if open_key is not None and self.available:
            self._spawn(self._drop_lease(open_key, session_id))

    def remember(self, pass_key: str, expires: float) -> None:
        if self.available:
            key = f"{PREFIX}pass:{pass_key}"
            self._spawn(self._quiet(self.client.set(key, repr(expires), pxat=int(expires * 1000))))

    def forget(self, pass_key: str) -> None:
        if self.available:
            self._spawn(self._quiet(self.client.delete(f"{PREFIX}pass:{pass_key}")))

    async def close(self) -> None:
        for task in (self._renewer, self._probe):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.available and self.leases:  # a clean stop frees its leases at once
            with contextlib.suppress(StateUnavailable):
                await self._call(self._drop_all())
        with contextlib.suppress(Exception):
            await self.client.aclose()

    # -- plumbing -----------------------------------------------------------------------------

    def _member(self, session_id: str) -> str:
        return f"{self.instance}:{session_id}"

    async def _call(self, call: Awaitable[_T]) -> _T:
        if not self.available:
            if asyncio.iscoroutine(call):
                call.close()
            raise StateUnavailable("away")
        try:
            return await asyncio.wait_for(call, self.timeout)
        except (redis.exceptions.RedisError, OSError, TimeoutError) as error:
            self._failed(error)
            raise StateUnavailable(str(error)) from None

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
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_back())

    async def _first_probe(self) -> None:
        """At start: a Redis that is not there yet must not stop the instance, only be noticed."""
        with contextlib.suppress(StateUnavailable):
            await self._call(self.client.ping())
            self.log.info("state", state=self.where, instance=self.instance)

    async def _probe_until_back(self) -> None:
        while True:
            await asyncio.sleep(self._retry)
            try:
                await asyncio.wait_for(self.client.ping(), self.timeout)
            except (redis.exceptions.RedisError, OSError, TimeoutError) as error:
                self.failures += 1
                self.log.debug("state_error", error=str(error) or type(error).__name__, state=self.where)
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
                keys = [key for _, key in batch]
                args = [int(LEASE_TTL * 1000), *(self._member(session) for session, _ in batch)]
                with contextlib.suppress(StateUnavailable):
                    await self._call(self._renew_script(keys=keys, args=args))

    async def _drop_lease(self, open_key: str, session_id: str) -> None:
        with contextlib.suppress(StateUnavailable):
            await self._call(self.client.zrem(open_key, self._member(session_id)))

    async def _drop_all(self) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for session_id, open_key in self.leases.items():
                pipe.zrem(open_key, self._member(session_id))
            await pipe.execute()
        self.leases.clear()

    async def _quiet(self, call: Awaitable[object]) -> None:
        with contextlib.suppress(StateUnavailable):
            await self._call(call)

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)  # type: ignore[arg-type]
        _background.add(task)
        task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()  # fire-and-forget calls, kept from the collector


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
