"""The blocking detector in this process: a stall is noticed, logged once with the blocking frame, and counted."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time

import pytest
from prometheus_client import REGISTRY

from ops.watchdog import Watchdog, threshold_from_env, watching


def hash_passwords_on_the_loop(seconds: float) -> int:
    """A CPU-heavy call made on the event loop: what the watchdog is for."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def _stalls_counted() -> float:
    return REGISTRY.get_sample_value("inboxql_loop_stalls_total") or 0.0


def _watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "inboxql-watchdog"]


def _blocked_records(
    caplog: pytest.LogCaptureFixture, culprit: str = "hash_passwords_on_the_loop"
) -> list[logging.LogRecord]:
    """This test's stalls: another loop of the process (a test server's thread) may stall meanwhile too."""
    return [
        r
        for r in caplog.records
        if r.name == "ops.watchdog" and "blocked" in r.getMessage() and culprit in r.getMessage()
    ]


async def test_a_300_ms_block_is_logged_once_with_its_frame_and_duration(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="ops.watchdog")
    counted = _stalls_counted()
    async with watching(0.1) as dog:
        assert dog is not None
        await asyncio.sleep(0.2)
        hash_passwords_on_the_loop(0.3)
        await asyncio.sleep(0.3)  # the loop is back: the thread sees it and logs
        # Short blocks and a busy loop under the threshold are not stalls.
        for _ in range(10):
            hash_passwords_on_the_loop(0.02)
            await asyncio.sleep(0)
        await asyncio.sleep(0.2)
    records = _blocked_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert "in hash_passwords_on_the_loop" in message
    assert "test_a_300_ms_block_is_logged_once" in message  # the caller's frame too: where to look
    duration = re.search(r"blocked for (\d+) ms", message)
    assert duration is not None, message
    assert 200 <= int(duration.group(1)) < 1000, message  # 300 ms, less up to one heartbeat (50 ms)
    assert dog.stalls == 1
    assert _stalls_counted() - counted >= 1  # the process's count (other loops may stall meanwhile too)


async def test_the_watchdog_thread_ends_with_the_block() -> None:
    before = len(_watchdog_threads())
    async with watching(0.1):
        assert len(_watchdog_threads()) == before + 1
        async with watching(0.1):  # a loop already watched keeps its one watchdog
            assert len(_watchdog_threads()) == before + 1
        assert len(_watchdog_threads()) == before + 1
    assert len(_watchdog_threads()) == before


async def test_loop_lag_is_observed_by_the_heartbeat() -> None:
    seen = REGISTRY.get_sample_value("inboxql_loop_lag_seconds_count") or 0.0
    async with watching(0.1) as dog:
        assert dog is not None
        await asyncio.sleep(0.3)
    assert 3 <= dog.beats <= 8  # a heartbeat every 50 ms
    # Observed in the process's metrics (where other loops of this process, e.g. a test server's, beat too).
    assert (REGISTRY.get_sample_value("inboxql_loop_lag_seconds_count") or 0.0) - seen >= dog.beats


async def test_the_thread_of_an_idle_loop_wakes_about_once_a_threshold() -> None:
    """It sleeps until the heartbeat would be late, not a fixed half threshold: 10 looks a second, not 20."""
    async with watching(0.1) as dog:
        assert dog is not None
        await asyncio.sleep(1.0)
    assert 5 <= dog.looks <= 13, dog.looks
    assert dog.stalls == 0


async def test_a_loop_that_never_comes_back_is_logged_while_it_lasts(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stall past LONG_STALL is logged before it ends (it may never end: a deadlock), its end in one line."""
    monkeypatch.setattr("ops.watchdog.LONG_STALL", 0.3)
    caplog.set_level(logging.WARNING, logger="ops.watchdog")
    async with watching(0.1):
        await asyncio.sleep(0.1)
        hash_passwords_on_the_loop(0.6)
        await asyncio.sleep(0.2)
    messages = [r.getMessage() for r in caplog.records if r.name == "ops.watchdog"]
    assert len(messages) == 2, messages
    assert "blocked for over" in messages[0]
    assert "in hash_passwords_on_the_loop" in messages[0]
    assert messages[1].startswith("event loop stall ended after")
    assert "\n" not in messages[1]


@pytest.mark.parametrize(("value", "expected"), [("", 0.1), ("250", 0.25), ("0", 0.0), ("soon", 0.1)])
def test_the_threshold_comes_from_inboxql_stall_ms(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: float
) -> None:
    monkeypatch.setenv("INBOXQL_STALL_MS", value)
    assert threshold_from_env() == expected


async def test_a_threshold_of_zero_watches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INBOXQL_STALL_MS", "0")
    before = len(_watchdog_threads())
    async with watching() as dog:
        assert dog is None
        assert len(_watchdog_threads()) == before


def test_a_watchdog_needs_a_positive_threshold() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="positive"):
            Watchdog(loop, 0)
    finally:
        loop.close()


async def test_a_stall_says_whether_the_loop_computed_or_waited(caplog: pytest.LogCaptureFixture) -> None:
    """A blocking wait (a synchronous sleep, socket or lock) leaves the loop thread off the CPU; a computation keeps
    it on: the log says which, so a reader knows what kind of culprit the stack shows."""
    caplog.set_level(logging.WARNING, logger="ops.watchdog")
    async with watching(0.1):
        await asyncio.sleep(0.1)
        time.sleep(0.4)  # the point: a blocking call on the loop
        await asyncio.sleep(0.2)
    (record,) = _blocked_records(caplog, "test_a_stall_says_whether_the_loop_computed_or_waited")
    share = re.search(r"on the CPU (\d+)% of it", record.getMessage())
    assert share is not None, record.getMessage()
    assert int(share.group(1)) < 50
    assert "in test_a_stall_says_whether_the_loop_computed_or_waited" in record.getMessage()


async def test_a_stall_too_short_for_its_stack_is_still_logged_and_counted(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The heartbeat counts every stall; the thread, which looks only now and then, may miss the stack of a
    short one: it is logged all the same, once, saying so."""
    caplog.set_level(logging.WARNING, logger="ops.watchdog")
    async with watching(0.1) as dog:
        assert dog is not None
        monkeypatch.setattr(dog, "_until_next_look", lambda _stall: 10.0)  # a thread that never looks in time
        await asyncio.sleep(0.2)  # its last wait before that one ends
        hash_passwords_on_the_loop(0.2)
        await asyncio.sleep(0.1)
    assert len(_blocked_records(caplog, "ended before its stack could be taken")) == 1
    assert dog.stalls == 1
