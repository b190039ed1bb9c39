"""The fleet's shared state against a real redis-server: leases that run out when an instance
dies, renewals that keep live ones, the rate bucket shared by instances, and Redis away."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Awaitable, Callable

import pytest
from structlog.testing import capture_logs

from greetproxy import shared
from greetproxy.shared import RedisState, SharedAnswer, StateUnavailable
from tests.support.fleet import REDIS_SERVER, RedisSentinel, wait_listening
from tests.support.proxy import free_port
from tests.support.tls import write_pair


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 30))


async def admit(state: RedisState, session: str, ip: str = "192.0.2.1") -> SharedAnswer:
    return await state.admit(session, ip, f"{ip}/32", limits=True, dry_run=False)


def test_leases_of_an_instance_that_died_run_out(fresh_redis, monkeypatch):
    monkeypatch.setattr(shared, "LEASE_TTL", 0.5)

    async def scenario() -> None:
        crashed, survivor = RedisState(fresh_redis.url, 1.0, 2, 600), RedisState(fresh_redis.url, 1.0, 2, 600)
        assert (await admit(crashed, "a")).refused is None
        assert (await admit(crashed, "b")).refused is None
        assert (await admit(survivor, "c")).refused == "client_concurrency"
        await crashed.client.aclose()  # gone without a word: no release, no renewal
        await asyncio.sleep(0.6)
        assert (await admit(survivor, "d")).refused is None
        await survivor.close()

    run(scenario)


def test_renewed_leases_outlive_their_ttl_and_release_frees_at_once(fresh_redis, monkeypatch):
    monkeypatch.setattr(shared, "LEASE_TTL", 0.6)
    monkeypatch.setattr(shared, "RENEW_EVERY", 0.15)

    async def scenario() -> None:
        live, other = RedisState(fresh_redis.url, 1.0, 1, 600), RedisState(fresh_redis.url, 1.0, 1, 600)
        live.start()
        assert (await admit(live, "a")).refused is None
        await asyncio.sleep(1.5)  # over twice the lease: only renewals keep it
        assert (await admit(other, "b")).refused == "client_concurrency"
        live.release("a")
        await asyncio.sleep(shared.TELL_WITHIN + 0.2)  # a release goes with the next call, or soon
        assert (await admit(other, "c")).refused is None
        await live.close()
        await other.close()

    run(scenario)


def test_commands_of_many_connections_share_round_trips_and_keep_their_order(fresh_redis):
    """300 connections at once: every one gets its answer, the limit holds exactly, and a release
    made while its own lease is still on its way never overtakes it (no lease is left behind)."""

    async def scenario() -> None:
        state = RedisState(fresh_redis.url, 2.0, 100, 100_000)
        answers = await asyncio.gather(*(admit(state, f"s{n}") for n in range(300)))
        assert sum(answer.refused is None for answer in answers) == 100
        assert sum(answer.refused == "client_concurrency" for answer in answers) == 200
        for n in range(300):
            state.release(f"s{n}")
        pending = [
            asyncio.ensure_future(
                state.admit(f"t{n}", "192.0.2.7", "192.0.2.7/32", limits=True, dry_run=False)
            )
            for n in range(50)
        ]
        for n in range(50):
            state.release(f"t{n}")  # before its admit has even been sent
        assert all(answer.refused is None for answer in await asyncio.gather(*pending))
        await asyncio.sleep(shared.TELL_WITHIN + 0.2)
        with fresh_redis.client() as direct:
            assert direct.zcard("greetproxy:open:192.0.2.1") == 0
            assert direct.zcard("greetproxy:open:192.0.2.7") == 0
        await state.close()

    run(scenario)


def test_the_rate_bucket_is_shared_and_a_dry_run_counts_but_lets_in(fresh_redis):
    async def scenario() -> None:
        one, two = RedisState(fresh_redis.url, 1.0, 100, 2), RedisState(fresh_redis.url, 1.0, 100, 2)
        assert (await admit(one, "a")).refused is None
        assert (await admit(two, "b")).refused is None
        assert (await admit(one, "c")).refused == "client_rate"
        dry = await one.admit("d", "192.0.2.1", "192.0.2.1/32", limits=True, dry_run=True)
        assert dry.refused == "client_rate" and "d" in one.leases  # counted all the same
        assert (await admit(two, "e", ip="192.0.2.2")).refused is None  # per client
        await one.close()
        await two.close()

    run(scenario)


def test_a_pass_written_by_one_instance_is_read_by_another(fresh_redis):
    async def scenario() -> None:
        one, two = RedisState(fresh_redis.url, 1.0, 10, 60), RedisState(fresh_redis.url, 1.0, 10, 60)
        expires = time.time() + 3600
        one.remember("192.0.2.0/24", expires)
        await asyncio.sleep(0.1)
        answer = await two.admit("s", "192.0.2.9", "192.0.2.0/24", limits=False, dry_run=False)
        assert answer == SharedAnswer(None, pytest.approx(expires))
        assert "s" not in two.leases  # a permitted client takes no lease
        two.forget("192.0.2.0/24")
        await asyncio.sleep(0.1)
        assert (await admit(one, "t", ip="192.0.2.9")).pass_expires is None
        await one.close()
        await two.close()

    run(scenario)


def test_redis_away_is_noticed_once_then_tried_again_until_back(fresh_redis, monkeypatch):
    monkeypatch.setattr(shared, "RETRY_FIRST", 0.2)
    port = free_port()

    async def scenario() -> None:
        state = RedisState(f"redis://127.0.0.1:{port}/0", 0.5, 10, 60)
        with capture_logs() as logs:
            started = time.monotonic()
            with pytest.raises(StateUnavailable):
                await admit(state, "a")
            assert time.monotonic() - started < 1.0
            assert not state.available
            for session in "bcd":  # away: answered at once, without trying
                with pytest.raises(StateUnavailable):
                    await admit(state, session)
            await asyncio.sleep(0.5)  # probes at 0.2 s, then 0.4 s later, both refused
            assert state.failures >= 2
        warnings = [entry for entry in logs if entry["log_level"] == "warning"]
        assert [entry["event"] for entry in warnings] == ["state_unavailable"]
        assert warnings[0]["state"] == f"redis://127.0.0.1:{port}/0"
        await state.close()

    run(scenario)


def test_redis_back_after_an_outage(fresh_redis, monkeypatch):
    monkeypatch.setattr(shared, "RETRY_FIRST", 0.2)

    async def scenario() -> None:
        state = RedisState(fresh_redis.url, 0.5, 10, 60)
        assert (await admit(state, "a")).refused is None
        fresh_redis.kill()
        with capture_logs() as logs:
            with pytest.raises(StateUnavailable):
                await admit(state, "b")
            fresh_redis.start()
            for _ in range(50):
                if state.available:
                    break
                await asyncio.sleep(0.1)
        assert state.available
        back = next(entry for entry in logs if entry["event"] == "state_available")
        assert back["failures"] >= 1
        assert (await admit(state, "c")).refused is None
        await state.close()

    run(scenario)


def test_a_sentinel_url_finds_the_master(fresh_redis, tmp_path):
    sentinel = RedisSentinel(tmp_path, fresh_redis).start()
    try:

        async def scenario() -> None:
            state = RedisState(sentinel.url, 2.0, 1, 600)
            assert (await admit(state, "a")).refused is None
            assert (await admit(state, "b")).refused == "client_concurrency"
            await state.close()

        run(scenario)
    finally:
        sentinel.stop()
    with fresh_redis.client() as direct:  # the lease went to the master the Sentinel named
        assert direct.exists("greetproxy:open:192.0.2.1") == 0  # released by the clean close
        assert direct.exists("greetproxy:rate:192.0.2.1") == 1


def test_rediss_speaks_tls_to_redis_and_checks_its_certificate(fresh_redis, test_ca, tmp_path):
    certs = write_pair(test_ca, tmp_path, "127.0.0.1")
    port = free_port()
    server = subprocess.Popen(
        [REDIS_SERVER, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key)]
        + ["--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "no"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_listening(port, server, "redis-server with TLS")

        async def scenario() -> None:
            trusted = RedisState(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={certs.ca}", 2.0, 5, 600)
            assert (await admit(trusted, "a")).refused is None
            await trusted.close()
            unknown_ca = RedisState(f"rediss://127.0.0.1:{port}/0", 2.0, 5, 600)
            with pytest.raises(StateUnavailable, match="certificate verify failed"):
                await admit(unknown_ca, "b")
            await unknown_ca.close()

        run(scenario)
    finally:
        server.terminate()
        server.wait(10)
