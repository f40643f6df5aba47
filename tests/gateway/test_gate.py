"""gateway.gate: subscribers hand their events over a few at a time, in line, and a slot held too long is taken
back. The loop's fairness is counted in steps, not timed."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from gateway.gate import Gate


@contextlib.asynccontextmanager
async def ungated() -> AsyncIterator[None]:
    yield


async def test_at_most_width_hold_a_slot_and_they_enter_in_arrival_order() -> None:
    gate = Gate(width=3, hold_seconds=10)
    inside = 0
    most = 0
    order: list[int] = []

    async def subscriber(n: int) -> None:
        nonlocal inside, most
        async with gate.slot():
            order.append(n)
            inside += 1
            most = max(most, inside)
            for _ in range(3):
                await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(subscriber(n) for n in range(20)))
    assert most == 3
    assert order == list(range(20))
    assert gate.held == 0
    assert gate.waited == 17


@pytest.mark.parametrize("gated", [True, False])
async def test_a_request_between_a_burst_of_subscribers_waits_behind_a_few_of_them_not_all(gated: bool) -> None:
    gate = Gate(width=4, hold_seconds=10)
    steps = 0

    async def subscriber() -> None:
        nonlocal steps
        async with gate.slot() if gated else ungated():
            for _ in range(5):
                steps += 1
                await asyncio.sleep(0)

    async def request() -> int:
        for _ in range(5):  # e.g. a query's round trips to the database
            await asyncio.sleep(0)
        return steps

    burst = [asyncio.create_task(subscriber()) for _ in range(200)]
    behind = await asyncio.create_task(request())
    await asyncio.gather(*burst)
    if gated:
        assert behind <= 5 * 4 + 4, behind
    else:
        assert behind >= 5 * 200 - 200, behind  # what the gate is for: every subscriber's steps go first


async def test_a_slot_held_past_hold_seconds_is_taken_back() -> None:
    gate = Gate(width=1, hold_seconds=0.05)
    stuck = asyncio.Event()
    release = asyncio.Event()

    async def slow_socket() -> None:
        async with gate.slot():
            stuck.set()
            await release.wait()  # its client stopped reading

    holder = asyncio.create_task(slow_socket())
    await stuck.wait()
    async with asyncio.timeout(1):
        async with gate.slot():
            assert gate.held == 1  # the slow one no longer counts
    release.set()
    await holder
    assert gate.held == 0
    async with gate.slot():  # the late release gave nothing back twice
        assert gate.held == 1
    assert gate.held == 0


async def test_a_subscriber_that_leaves_while_in_line_loses_no_slot() -> None:
    gate = Gate(width=1, hold_seconds=10)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with gate.slot():
            entered.set()
            await release.wait()

    async def in_line() -> None:
        async with gate.slot():
            raise AssertionError("it left before its turn")

    one = asyncio.create_task(first())
    await entered.wait()
    leaving = [asyncio.create_task(in_line()) for _ in range(3)]
    await asyncio.sleep(0)
    for task in leaving:
        task.cancel()
    release.set()  # hands the slot to a waiter that is cancelled: passed on, not lost
    await one
    for task in leaving:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert gate.held == 0
    async with asyncio.timeout(1), gate.slot():
        assert gate.held == 1


async def test_a_waiter_cancelled_just_after_its_turn_came_passes_the_slot_on() -> None:
    gate = Gate(width=1, hold_seconds=10)
    entered = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with gate.slot():
            entered.set()
            await release.wait()

    async def second() -> None:
        async with gate.slot():
            pass

    one = asyncio.create_task(first())
    await entered.wait()
    two = asyncio.create_task(second())
    three = asyncio.create_task(second())
    await asyncio.sleep(0)
    release.set()
    await one  # its release resolved two's turn; two has not run yet
    two.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await two
    async with asyncio.timeout(1):
        await three
    assert gate.held == 0
