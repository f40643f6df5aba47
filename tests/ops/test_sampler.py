"""The stack sampler: it catches a known busy function with the account that ran it, marks an idle loop, keeps a
bounded rolling window, and is configured from the environment."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy.util import greenlet_spawn

from ops.flame import parse_collapsed
from ops.sampler import (
    GREENLET,
    IDLE,
    IDLE_STRIDE,
    OTHER,
    TRUNCATED,
    ConfigError,
    ProfilerConfig,
    Sampler,
    labelled,
    sampling,
)

SPIN = "tests.ops.test_sampler:spin_in_a_known_function"


def spin_in_a_known_function(seconds: float) -> int:
    """CPU on the loop's thread, as a blocking call in a handler would use it."""
    end = time.perf_counter() + seconds
    n = 0
    while time.perf_counter() < end:
        n += 1
    return n


def recurse(depth: int, seconds: float) -> int:
    return spin_in_a_known_function(seconds) if depth == 0 else recurse(depth - 1, seconds)


async def account_work(seconds: float) -> None:
    # A task started inside the label inherits it (its context is a copy): the sampler sees the child's stacks
    # under the account too.
    child = asyncio.create_task(asyncio.to_thread(time.sleep, 0))
    spin_in_a_known_function(seconds)
    await child


async def test_the_busy_function_is_in_the_stacks_under_its_account() -> None:
    sampler = Sampler(ProfilerConfig(hz=200))
    sampler.start()
    try:
        with labelled("account:7"):
            await asyncio.create_task(account_work(0.6))
        spin_in_a_known_function(0.3)  # the same function, for no account
        await asyncio.sleep(0.3)  # idle: the loop waits in select()
    finally:
        sampler.stop()
    stacks = sampler.profile().stacks
    spinning = {stack: n for stack, n in stacks.items() if stack[-1] == SPIN}
    under_account = sum(n for stack, n in spinning.items() if stack[0] == "account:7")
    unlabelled = sum(n for stack, n in spinning.items() if not stack[0].startswith("account:"))
    # 200 Hz for 0.6 s and 0.3 s; the sampler thread waits for the GIL, so fewer samples than that.
    assert under_account >= 20, stacks
    assert unlabelled >= 10, stacks
    # Root first, the caller right below the spinning function.
    labelled_stack = next(s for s in spinning if s[0] == "account:7")
    assert labelled_stack[-2] == "tests.ops.test_sampler:account_work"
    assert stacks[(IDLE,)] >= 10
    stats = sampler.stats()
    assert stats.samples == sampler.profile().samples == sum(stacks.values())
    assert stats.cpu_seconds > 0
    assert not stats.running


async def test_deep_stacks_keep_their_innermost_frames() -> None:
    sampler = Sampler(ProfilerConfig(hz=200, max_depth=20))
    sampler.start()
    try:
        recurse(60, 0.3)
    finally:
        sampler.stop()
    deep = [s for s in sampler.profile().stacks if s[-1] == SPIN]
    assert deep
    assert all(s[0] == TRUNCATED and len(s) == 21 for s in deep)


async def test_work_in_a_greenlet_is_rooted_at_greenlet() -> None:
    """SQLAlchemy's asyncio layer runs the ORM so: the greenlet's frames do not link back to the awaiting coroutine."""
    sampler = Sampler(ProfilerConfig(hz=200))
    sampler.start()
    try:
        with labelled("account:5"):
            await greenlet_spawn(spin_in_a_known_function, 0.3)
            spin_in_a_known_function(0.3)
    finally:
        sampler.stop()
    spinning = [s for s in sampler.profile().stacks if s[-1] == SPIN]
    assert [s for s in spinning if s[:3] == ("account:5", GREENLET, SPIN)]
    this_test = "tests.ops.test_sampler:test_work_in_a_greenlet_is_rooted_at_greenlet"
    assert [s for s in spinning if GREENLET not in s and s[-2] == this_test]  # the call outside the greenlet


async def test_the_window_drops_old_buckets_and_caps_distinct_stacks() -> None:
    config = ProfilerConfig(hz=0.001, window_seconds=0.4, bucket_seconds=0.1, max_stacks=3)
    sampler = Sampler(config)
    sampler._loop_thread = 0  # not started: samples are recorded by hand below
    sampler._started = time.monotonic()
    for i in range(5):
        sampler._record([(f"f{i}",)])
    assert set(sampler.profile().stacks) == {("f0",), ("f1",), ("f2",), (OTHER,)}
    assert sampler.profile().stacks[(OTHER,)] == 2
    await asyncio.sleep(0.7)
    sampler._record([("late",)])
    assert set(sampler.profile().stacks) == {("late",)}
    assert sampler.stats().buckets == 1


async def test_the_last_seconds_are_answered_from_recent_buckets() -> None:
    sampler = Sampler(ProfilerConfig(hz=0.001, window_seconds=60, bucket_seconds=0.2))
    sampler._started = time.monotonic()
    sampler._record([("old",)])
    await asyncio.sleep(0.5)
    sampler._record([("new",)])
    assert set(sampler.profile(0.1).stacks) == {("new",)}
    assert set(sampler.profile().stacks) == {("old",), ("new",)}


async def test_hz_zero_is_off_and_a_dump_is_written_on_stop(tmp_path: Path) -> None:
    with sampling(ProfilerConfig(hz=0)) as off:
        spin_in_a_known_function(0.05)
    assert not off.running
    assert off.stats().samples == 0

    dump = tmp_path / "profile.txt"
    with sampling(ProfilerConfig(hz=200, dump=str(dump))) as on:
        assert on.running
        spin_in_a_known_function(0.3)
    stacks = parse_collapsed(dump.read_text())
    assert any(stack[-1] == SPIN for stack in stacks)


def test_all_threads_are_sampled_when_asked() -> None:
    async def main() -> Sampler:
        sampler = Sampler(ProfilerConfig(hz=200, threads="all"))
        sampler.start()
        try:
            await asyncio.to_thread(spin_in_a_known_function, 0.4)
        finally:
            sampler.stop()
        return sampler

    stacks = asyncio.run(main()).profile().stacks
    assert any(s[0].startswith("thread:asyncio_") and s[-1] == SPIN for s in stacks), list(stacks)[:5]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INBOXQL_PROFILE_HZ": "fast"}, "INBOXQL_PROFILE_HZ must be a number"),
        ({"INBOXQL_PROFILE_HZ": "-1"}, "between 0 (off) and 1000"),
        ({"INBOXQL_PROFILE_THREADS": "some"}, "loop or all"),
        ({"INBOXQL_PROFILE_WINDOW_SECONDS": "1"}, "at least 10"),
    ],
)
def test_bad_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ProfilerConfig.from_env(env)


def test_settings_from_the_environment() -> None:
    assert ProfilerConfig.from_env({}) == ProfilerConfig()
    config = ProfilerConfig.from_env(
        {"INBOXQL_PROFILE_HZ": "0", "INBOXQL_PROFILE_THREADS": "ALL", "INBOXQL_PROFILE_DUMP": "/tmp/p.txt"}
    )
    assert (config.hz, config.threads, config.dump) == (0, "all", "/tmp/p.txt")


@pytest.mark.parametrize("command", [["sync", "--once"], ["gateway", "--port", "9"]])
def test_a_bad_setting_stops_the_command_with_its_name(command: list[str], tmp_path: Path) -> None:
    """Before anything connects: the message names the variable, exit 2, no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INBOXQL_")}
    env.update(INBOXQL_PROFILE_HZ="fast", INBOXQL_SECRET_KEY="k" * 43, XDG_CONFIG_HOME=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "inboxql.cli", *command],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "inboxql: INBOXQL_PROFILE_HZ must be a number, not 'fast'"


async def test_an_idle_loop_is_sampled_at_a_stride_and_busy_work_after_it_at_the_full_rate() -> None:
    """Idle, the thread wakes every IDLE_STRIDE-th tick on average (its wake-ups were its cost), each sample counts for
    the ticks it stands for; the first busy sample brings the full rate back."""
    sampler = Sampler(ProfilerConfig(hz=100))
    sampler.start()
    try:
        await asyncio.sleep(2.0)
        idle = sampler.stats()
        spin_in_a_known_function(0.5)
        await asyncio.sleep(0.05)
    finally:
        sampler.stop()
    # 2 s at 100 Hz: 200 ticks, counted by about 10 + 190 / IDLE_STRIDE samples (the thread may fall behind).
    assert idle.taken <= 10 + 200 // IDLE_STRIDE + 5, idle
    assert 150 <= idle.samples <= 210, idle
    stacks = sampler.profile().stacks
    assert stacks[(IDLE,)] >= 150, stacks
    spinning = sum(n for stack, n in stacks.items() if stack[-1] == SPIN)
    # 0.5 s at 100 Hz is 50 ticks; the busy loop is seen within a stride, then at the full rate (the GIL's
    # switch interval lets the sampler in).
    assert spinning >= 25, stacks
    stats = sampler.stats()
    assert stats.samples == sampler.profile().samples == sum(stacks.values())
    assert stats.taken - idle.taken >= 20
