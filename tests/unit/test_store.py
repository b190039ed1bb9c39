"""The pass cache: keys, the SQLite store behind the daemon, and the command line beside it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from greetproxy.store import (
    SqlitePassCache,
    StoreError,
    cache_clear,
    cache_entries,
    cache_forget,
    cache_key,
)

T = TypeVar("T")
HOUR = 3600.0


@pytest.mark.parametrize(
    ("ip", "prefix4", "prefix6", "key"),
    [
        ("192.0.2.77", 24, 64, "192.0.2.0/24"),
        ("192.0.2.77", 32, 128, "192.0.2.77/32"),
        ("192.0.2.77", 0, 64, "0.0.0.0/0"),
        ("::ffff:192.0.2.77", 24, 64, "192.0.2.0/24"),
        ("::ffff:192.0.2.77", 32, 128, "192.0.2.77/32"),
        ("2001:db8:1:2:3::4", 24, 64, "2001:db8:1:2::/64"),
        ("2001:DB8:0:0:0:0:0:1", 32, 128, "2001:db8::1/128"),
        ("fe80::1%eth0", 32, 128, "fe80::1/128"),
    ],
)
def test_cache_key(ip: str, prefix4: int, prefix6: int, key: str) -> None:
    assert cache_key(ip, prefix4, prefix6) == key


@pytest.mark.parametrize(
    ("ip", "prefix4", "prefix6"), [("192.0.2.1", 33, 64), ("::1", 24, 129), ("nobody", 24, 64)]
)
def test_cache_key_refuses_bad_input(ip: str, prefix4: int, prefix6: int) -> None:
    with pytest.raises(ValueError):
        cache_key(ip, prefix4, prefix6)


def with_cache(path: Path, use: Callable[[SqlitePassCache], Awaitable[T]], **options: float) -> T:
    async def scenario() -> T:
        cache = await SqlitePassCache.open(path, **options)
        try:
            return await use(cache)
        finally:
            await cache.close()

    return asyncio.run(scenario())


def rows(path: Path) -> list[tuple[str, float]]:
    with sqlite3.connect(path) as connection:
        return sorted(connection.execute("SELECT key, expires FROM pass"))


def test_put_get_forget_clear_entries(tmp_path: Path) -> None:
    async def use(cache: SqlitePassCache) -> None:
        now = time.time()
        assert await cache.get("192.0.2.0/24") is None
        await cache.put("192.0.2.0/24", now + HOUR)
        await cache.put("198.51.100.0/24", now + 2 * HOUR)
        await cache.put("203.0.113.0/24", now - 1)  # expired already
        assert await cache.get("192.0.2.0/24") == now + HOUR
        assert await cache.get("203.0.113.0/24") is None
        await cache.put("192.0.2.0/24", now + 3 * HOUR)  # a later pass replaces the first
        assert await cache.entries() == [
            ("192.0.2.0/24", now + 3 * HOUR),
            ("198.51.100.0/24", now + 2 * HOUR),
        ]
        assert await cache.forget("192.0.2.0/24") is True
        assert await cache.forget("192.0.2.0/24") is False
        assert await cache.forget("203.0.113.0/24") is False  # expired is as good as gone
        assert await cache.get("192.0.2.0/24") is None
        assert await cache.clear() == 1
        assert await cache.entries() == []

    with_cache(tmp_path / "passes.db", use)
    assert rows(tmp_path / "passes.db") == []


def test_passes_survive_a_restart_and_expired_ones_are_purged_at_open(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deeper" / "passes.db"  # the directories are created
    expires = time.time() + HOUR

    async def first(cache: SqlitePassCache) -> None:
        await cache.put("192.0.2.0/24", expires)
        await cache.put("2001:db8::/64", time.time() - 1)

    with_cache(path, first)
    assert len(rows(path)) == 2

    async def second(cache: SqlitePassCache) -> tuple[float | None, list[tuple[str, float]]]:
        return await cache.get("192.0.2.0/24"), await cache.entries()

    assert with_cache(path, second) == (expires, [("192.0.2.0/24", expires)])
    assert rows(path) == [("192.0.2.0/24", expires)]
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_purge_drops_expired_rows(tmp_path: Path) -> None:
    path = tmp_path / "passes.db"

    async def use(cache: SqlitePassCache) -> tuple[int, int]:
        now = time.time()
        for number in range(5):
            await cache.put(f"192.0.2.{number}/32", now - 1 if number < 3 else now + HOUR)
        purged = await cache.purge()
        return purged, await cache.purge()

    assert with_cache(path, use) == (3, 0)
    assert [key for key, _ in rows(path)] == ["192.0.2.3/32", "192.0.2.4/32"]


def test_a_put_queued_behind_a_purge_renews_the_key(tmp_path: Path) -> None:
    path = tmp_path / "passes.db"
    expires = time.time() + HOUR

    async def use(cache: SqlitePassCache) -> tuple[int, float | None]:
        await cache.put("192.0.2.0/24", time.time() - 1)
        purged, _ = await asyncio.gather(cache.purge(), cache.put("192.0.2.0/24", expires))
        return purged, await cache.get("192.0.2.0/24")

    assert with_cache(path, use) == (1, expires)
    assert rows(path) == [("192.0.2.0/24", expires)]


def test_many_tasks_at_once_leave_memory_and_file_agreeing(tmp_path: Path) -> None:
    path = tmp_path / "passes.db"
    expires = time.time() + HOUR

    async def client(cache: SqlitePassCache, number: int) -> None:
        key = f"192.0.2.{number % 20}/32"
        await cache.put(key, expires + number)
        await cache.get(key)  # may be gone already: another client's forget of the same key
        if number % 20 < 10 and number % 3 == 0:
            await cache.forget(key)

    async def use(cache: SqlitePassCache) -> list[tuple[str, float]]:
        await asyncio.gather(*(client(cache, number) for number in range(300)))
        return await cache.entries()

    in_memory = with_cache(path, use)
    assert [key for key, _ in in_memory] == sorted(f"192.0.2.{number}/32" for number in range(10, 20))
    assert in_memory == rows(path) == with_cache(path, lambda cache: cache.entries())


def test_a_cancelled_put_is_still_written(tmp_path: Path) -> None:
    path = tmp_path / "passes.db"
    expires = time.time() + HOUR

    async def use(cache: SqlitePassCache) -> None:
        release = threading.Event()
        cache._executor.submit(release.wait)  # hold the write thread so that the put stays queued
        put = asyncio.create_task(cache.put("192.0.2.0/24", expires))
        await asyncio.sleep(0)
        put.cancel()
        with pytest.raises(asyncio.CancelledError):
            await put
        release.set()

    with_cache(path, use)
    assert rows(path) == [("192.0.2.0/24", expires)]


def test_the_command_line_works_beside_a_running_daemon(tmp_path: Path) -> None:
    path = tmp_path / "passes.db"
    expires = time.time() + HOUR

    async def use(cache: SqlitePassCache) -> None:
        await cache.put("192.0.2.0/24", expires)
        await cache.put("2001:db8:1:2::/64", expires)
        await cache.put("203.0.113.0/24", time.time() - 1)
        assert await cache.refresh() is False  # the daemon's own writes are no news to it
        assert cache_entries(path) == [("192.0.2.0/24", expires), ("2001:db8:1:2::/64", expires)]
        assert cache_forget(path, "192.0.2.99", 24, 64) is True
        assert cache_forget(path, "192.0.2.99", 24, 64) is False
        assert cache_forget(path, "203.0.113.5", 24, 64) is False
        assert await cache.get("192.0.2.0/24") == expires  # not seen yet
        assert await cache.refresh() is True
        assert await cache.get("192.0.2.0/24") is None
        assert await cache.refresh() is False
        assert cache_clear(path) == 1
        assert await cache.refresh() is True
        assert await cache.entries() == []

    with_cache(path, use)


def test_writes_made_during_a_refresh_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "passes.db"
    expires = time.time() + HOUR

    async def use(cache: SqlitePassCache) -> list[str]:
        for number in (1, 2, 3):
            await cache.put(f"192.0.2.{number}/32", expires)
        assert cache_forget(path, "192.0.2.1", 32, 128)  # an outside change, so that the refresh reloads
        # The refresh is queued first, so its snapshot misses the put and the forget queued after it.
        reloaded, *_ = await asyncio.gather(
            cache.refresh(), cache.put("192.0.2.4/32", expires), cache.forget("192.0.2.2/32")
        )
        assert reloaded is True
        return [key for key, _ in await cache.entries()]

    assert with_cache(path, use) == ["192.0.2.3/32", "192.0.2.4/32"]


def test_the_daemon_follows_the_command_line_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "passes.db"

    async def use(cache: SqlitePassCache) -> float | None:
        await cache.put("192.0.2.0/24", time.time() + HOUR)
        cache_clear(path)
        for _ in range(200):
            if await cache.get("192.0.2.0/24") is None:
                break
            await asyncio.sleep(0.005)
        return await cache.get("192.0.2.0/24")

    assert with_cache(path, use, refresh_every=0.005) is None


def test_closing_twice_is_harmless(tmp_path: Path) -> None:
    async def scenario() -> None:
        cache = await SqlitePassCache.open(tmp_path / "passes.db")
        await cache.close()
        await cache.close()

    asyncio.run(scenario())


def test_a_directory_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the directory should be")
    path = tmp_path / "state" / "passes.db"
    with pytest.raises(StoreError, match=rf"^{path}: cannot create the directory {path.parent}: "):
        asyncio.run(SqlitePassCache.open(path))


def test_a_file_that_is_no_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "passes.db"
    path.write_bytes(b"this is not SQLite" * 100)
    with pytest.raises(StoreError, match=rf"^{path}: pass cache: file is not a database$"):
        asyncio.run(SqlitePassCache.open(path))
    with pytest.raises(StoreError, match=rf"^{path}: pass cache: file is not a database$"):
        cache_entries(path)


def test_the_command_line_does_not_create_a_missing_cache(tmp_path: Path) -> None:
    path = tmp_path / "passes.db"
    for command in (
        lambda: cache_entries(path),
        lambda: cache_clear(path),
        lambda: cache_forget(path, "::1", 24, 64),
    ):
        with pytest.raises(StoreError, match="no pass cache here"):
            command()
    assert not path.exists()
