"""The pass cache: clients that passed screening, remembered until their pass expires.

A client is cached under its network (:func:`cache_key`) with the unix time its pass expires.
:class:`PassCache` is what the daemon uses; :class:`SqlitePassCache` keeps the passes in a SQLite
file that survives restarts. The ``cache_*`` functions at the end serve ``greetproxy cache``: they
open the same file directly, which WAL makes safe while the daemon runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, TypeVar

from .logs import get_logger
from .screening.access import client_address

REFRESH_EVERY = 1.0  # seconds between checks for changes another process (the command line) made

_T = TypeVar("_T")
_Change = Callable[[dict[str, float]], object]


class StoreError(Exception):
    """The pass cache file cannot be used; the message names the file, for the administrator."""


def cache_key(ip: str, prefix4: int, prefix6: int) -> str:
    """The network ``ip`` is cached under, e.g. ``192.0.2.0/24`` for 24 and 64; 32 and 128 cache
    each address on its own. ValueError for a bad address or prefix length."""
    address = client_address(ip)
    prefix = prefix4 if address.version == 4 else prefix6
    return str(ipaddress.ip_network((address, prefix), strict=False))


class PassCache(Protocol):
    def peek(self, key: str) -> float | None:
        """The expiry as this process knows it, without waiting (the gate asks on every connect)."""

    async def get(self, key: str) -> float | None:
        """When the pass of ``key`` expires (unix time); None if there is none or it has expired."""

    async def put(self, key: str, expires: float) -> None:
        """Record a pass for ``key`` until ``expires`` (unix time), replacing any earlier one."""

    async def forget(self, key: str) -> bool:
        """Drop the pass of ``key``; True if it had one that had not expired."""

    async def clear(self) -> int:
        """Drop every pass; how many had not expired."""

    async def entries(self) -> list[tuple[str, float]]:
        """The passes that have not expired, as (key, expires), by key."""

    async def close(self) -> None:
        """Finish the writes made so far and let go of the store."""


class SqlitePassCache:
    """A :class:`PassCache` in a SQLite file (WAL), with every read served from a dict in memory.

    ``get`` never waits: the dict is loaded at open and changed at once by every write. Writes go
    to the file in one thread of their own, in the order they were made, and are awaited there, so
    the event loop never blocks on the disk; the sqlite3 connection is used in that thread only.

    The command line changes the file behind the daemon's back. Every ``refresh_every`` seconds the
    write thread asks SQLite whether another connection committed since (``PRAGMA data_version``, one
    cheap query) and if so reloads the dict, so a ``greetproxy cache forget`` reaches the daemon within
    ``refresh_every`` (a second by default), with no signal and no check on the ``get`` path.
    """

    def __init__(
        self,
        path: Path,
        executor: ThreadPoolExecutor,
        file: _File,
        entries: dict[str, float],
        refresh_every: float,
    ) -> None:  # use open()
        self._path = path
        self._executor = executor
        self._file = file
        self._entries = entries
        self._replay: list[_Change] | None = None  # changes made while a refresh is in flight
        self._watcher: asyncio.Task[None] | None = asyncio.create_task(self._watch(refresh_every))

    @classmethod
    async def open(
        cls, path: str | os.PathLike[str], refresh_every: float = REFRESH_EVERY
    ) -> SqlitePassCache:
        """Open (or create) the file and load its passes; expired ones are purged first."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"{path}: cannot create the directory {path.parent}: {error.strerror}") from None
        if not os.access(path.parent, os.W_OK):
            # WAL keeps two files beside the database, so the directory itself must be writable.
            raise StoreError(f"{path}: the directory {path.parent} is not writable by this user")
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="greetproxy-store")
        try:
            file, entries = await asyncio.get_running_loop().run_in_executor(executor, _load, path)
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(path, executor, file, entries, refresh_every)

    def peek(self, key: str) -> float | None:
        expires = self._entries.get(key)
        return expires if expires is not None and expires > time.time() else None

    async def get(self, key: str) -> float | None:
        return self.peek(key)

    async def put(self, key: str, expires: float) -> None:
        self._change(lambda entries: entries.update({key: expires}))
        await self._run(self._file.put, key, expires)

    async def forget(self, key: str) -> bool:
        self._change(lambda entries: entries.pop(key, None))
        return await self._run(self._file.forget, key, time.time())

    async def clear(self) -> int:
        self._change(dict.clear)
        return await self._run(self._file.clear, time.time())

    async def entries(self) -> list[tuple[str, float]]:
        now = time.time()
        return sorted((key, expires) for key, expires in self._entries.items() if expires > now)

    async def purge(self) -> int:
        """Delete the expired passes, from the file and from memory; how many there were.

        The daemon should schedule it every few minutes: expired passes are never served, but
        nothing else removes them. The loop only spends time on the expired keys, not on them all.
        """
        now = time.time()
        expired = await self._run(self._file.purge, now)

        def drop(entries: dict[str, float]) -> None:
            for key in expired:
                if entries.get(key, math.inf) <= now:  # unless a put queued behind the purge renewed it
                    del entries[key]

        self._change(drop)
        return len(expired)

    async def refresh(self) -> bool:
        """Reload the dict if another process changed the file since the last look; True if it had."""
        if self._replay is not None:
            return False  # one is in flight; a change it missed is the next one's
        self._replay = []
        try:
            entries = await self._run(self._file.changes, time.time())
            if entries is None:
                return False
            # The snapshot was read after every write queued before it and before every write queued
            # since, and those are in the replay list: applied to it, they give the current state.
            for change in self._replay:
                change(entries)
            self._entries = entries
            return True
        finally:
            self._replay = None

    async def close(self) -> None:
        """Wait for the writes made so far, then close the file. Closing twice is harmless."""
        if self._watcher is None:
            return
        self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher
        self._watcher = None
        await self._run(self._file.close)
        self._executor.shutdown(wait=False)  # nothing is left in its queue

    def _change(self, change: _Change) -> None:
        change(self._entries)
        if self._replay is not None:
            self._replay.append(change)

    async def _run(self, function: Callable[..., _T], *args: object) -> _T:
        # Queued at once, before the caller's next change, so the file sees changes in dict order.
        future = asyncio.get_running_loop().run_in_executor(self._executor, function, *args)
        with _reporting(self._path):
            # Shielded: a cancelled caller must not unqueue a write the dict has made already.
            return await asyncio.shield(future)

    async def _watch(self, every: float) -> None:
        log = get_logger()
        while True:
            await asyncio.sleep(every)
            try:
                if await self.refresh():
                    log.info("pass_cache_reload", entries=len(self._entries))
            except StoreError as error:
                log.warning("pass_cache_error", error=str(error))


class _File:
    """The SQLite side. sqlite3 refuses use from any thread but the one that opened it."""

    def __init__(self, path: Path) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None)  # autocommit: a statement, a commit
        # WAL: readers (the command line among them) and the one writer never wait on each other.
        self.connection.execute("PRAGMA journal_mode=WAL")
        # Safe from corruption in WAL mode; a power cut may lose the last passes: those clients pause again.
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.execute(
            "CREATE TABLE IF NOT EXISTS pass (key TEXT PRIMARY KEY, expires REAL NOT NULL)"
        )
        self.version = self._data_version()

    def rows(self, now: float) -> dict[str, float]:
        return dict(self.connection.execute("SELECT key, expires FROM pass WHERE expires > ?", (now,)))

    def put(self, key: str, expires: float) -> None:
        self.connection.execute("INSERT OR REPLACE INTO pass (key, expires) VALUES (?, ?)", (key, expires))

    def forget(self, key: str, now: float) -> bool:
        return (
            self.connection.execute("DELETE FROM pass WHERE key = ? AND expires > ?", (key, now)).rowcount > 0
        )

    def clear(self, now: float) -> int:
        live = self.connection.execute("DELETE FROM pass WHERE expires > ?", (now,)).rowcount
        self.connection.execute("DELETE FROM pass")
        return live

    def purge(self, now: float) -> list[str]:
        expired = [
            key for (key,) in self.connection.execute("SELECT key FROM pass WHERE expires <= ?", (now,))
        ]
        self.connection.execute("DELETE FROM pass WHERE expires <= ?", (now,))
        return expired

    def changes(self, now: float) -> dict[str, float] | None:
        """The rows, if another connection committed since the last call (our own commits do not count)."""
        version = self._data_version()
        if version == self.version:
            return None
        self.version = version
        return self.rows(now)

    def close(self) -> None:
        self.connection.close()

    def _data_version(self) -> int:
        return self.connection.execute("PRAGMA data_version").fetchone()[0]


def _load(path: Path) -> tuple[_File, dict[str, float]]:
    with _reporting(path):
        file = _File(path)
        now = time.time()
        file.purge(now)
        return file, file.rows(now)


@contextlib.contextmanager
def _reporting(path: Path) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as error:
        raise StoreError(f"{path}: pass cache: {error}") from None


# -- the command line: the file opened directly, beside a running daemon -----------------------------


def cache_entries(path: str | os.PathLike[str]) -> list[tuple[str, float]]:
    """``greetproxy cache list``: the passes that have not expired, as (key, expires), by key."""
    with _command_line(path) as file:
        return sorted(file.rows(time.time()).items())


def cache_forget(path: str | os.PathLike[str], ip: str, prefix4: int, prefix6: int) -> bool:
    """``greetproxy cache forget IP``: drop the pass of IP's network; True if it had one. A running
    daemon follows within :data:`REFRESH_EVERY` seconds."""
    key = cache_key(ip, prefix4, prefix6)
    with _command_line(path) as file:
        return file.forget(key, time.time())


def cache_clear(path: str | os.PathLike[str]) -> int:
    """``greetproxy cache clear``: drop every pass; how many had not expired. A running daemon
    follows within :data:`REFRESH_EVERY` seconds."""
    with _command_line(path) as file:
        return file.clear(time.time())


@contextlib.contextmanager
def _command_line(path: str | os.PathLike[str]) -> Iterator[_File]:
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: no pass cache here (greetproxy run creates it)")
    with _reporting(path), contextlib.closing(_File(path)) as file:
        yield file
