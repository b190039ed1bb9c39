"""The backend pool's parts that need no socket: pacing and the first-come-first-served limit."""

from __future__ import annotations

import asyncio

import pytest

from greetproxy.pool import BackendSlots, ConnectPacer


def test_unlimited_pacer_never_waits() -> None:
    pacer = ConnectPacer(None)
    assert [pacer.reserve(10.0) for _ in range(5)] == [0.0] * 5


def test_pacer_spaces_a_burst_evenly() -> None:
    pacer = ConnectPacer(4.0)
    assert [pacer.reserve(10.0) for _ in range(4)] == pytest.approx([0.0, 0.25, 0.5, 0.75])


def test_pacer_after_a_quiet_spell_does_not_save_up_a_burst() -> None:
    pacer = ConnectPacer(2.0)
    pacer.reserve(0.0)
    assert pacer.reserve(100.0) == 0.0
    assert pacer.reserve(100.0) == pytest.approx(0.5)


def run(coroutine):
    return asyncio.run(coroutine)


def test_slots_are_handed_on_in_arrival_order() -> None:
    async def scenario() -> list[int]:
        slots = BackendSlots(1)
        first = await slots.acquire(1)
        served: list[int] = []

        async def waiter(number: int) -> None:
            slot = await slots.acquire(5)
            served.append(number)
            slot.release()

        tasks = [asyncio.create_task(waiter(number)) for number in range(5)]
        await asyncio.sleep(0)
        assert slots.queued == 5
        first.release()
        await asyncio.gather(*tasks)
        assert slots.in_use == 0
        return served

    assert run(scenario()) == [0, 1, 2, 3, 4]


def test_limit_is_never_exceeded() -> None:
    async def scenario() -> int:
        slots = BackendSlots(3)
        peak = 0

        async def user() -> None:
            nonlocal peak
            slot = await slots.acquire(5)
            peak = max(peak, slots.in_use)
            await asyncio.sleep(0)
            slot.release()

        await asyncio.gather(*(user() for _ in range(50)))
        assert slots.in_use == 0
        return peak

    assert run(scenario()) == 3


def test_a_waiter_that_times_out_leaves_the_queue() -> None:
    async def scenario() -> None:
        slots = BackendSlots(1)
        held = await slots.acquire(1)
        with pytest.raises(TimeoutError):
            await slots.acquire(0.01)
        assert slots.queued == 0
        held.release()
        assert slots.in_use == 0

    run(scenario())


def test_a_cancelled_waiter_gives_up_its_place_and_the_next_is_served() -> None:
    async def scenario() -> None:
        slots = BackendSlots(1)
        held = await slots.acquire(1)
        leaving = asyncio.create_task(slots.acquire(5))
        staying = asyncio.create_task(slots.acquire(5))
        await asyncio.sleep(0)
        leaving.cancel()
        await asyncio.sleep(0)
        assert slots.queued == 1
        held.release()
        slot = await staying
        assert slots.in_use == 1
        slot.release()
        slot.release()  # a second release changes nothing
        assert slots.in_use == 0

    run(scenario())


def test_a_waiter_cancelled_while_its_slot_is_handed_on_leaves_cleanly():
    """Found by 10,000 slowloris clients: hand_on pops a cancelled waiter before that waiter's own
    clean-up runs; the clean-up must not fail, and the slot goes to the next in line."""

    async def main() -> None:
        slots = BackendSlots(1)
        held = await slots.acquire(1)
        first = asyncio.ensure_future(slots.acquire(5))
        second = asyncio.ensure_future(slots.acquire(5))
        await asyncio.sleep(0)  # both wait
        first.cancel()  # its waiter is cancelled now; its clean-up runs at its next step
        held.release()  # hands on: pops the cancelled waiter, gives the slot to the second
        with pytest.raises(asyncio.CancelledError):
            await first
        slot = await second
        assert slots.in_use == 1 and slots.queued == 0
        slot.release()
        assert slots.in_use == 0

    asyncio.run(main())
