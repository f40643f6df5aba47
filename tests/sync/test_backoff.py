"""Jittered exponential backoff: grows, stays under the cap, jitters within [ceiling/2, ceiling], resets."""

from __future__ import annotations

import random

from synccore.backoff import Backoff


def test_delays_stay_within_half_to_full_ceiling() -> None:
    backoff = Backoff(base=1.0, cap=300.0, rng=random.Random(7))
    for attempt in range(15):
        ceiling = min(300.0, 1.0 * 2**attempt)
        delay = backoff.next()
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay)


def test_delays_grow_until_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=60.0, rng=random.Random(1))
    delays = [backoff.next() for _ in range(8)]  # ceilings 0.5 .. 64 -> the last is capped at 60
    assert delays == sorted(delays)
    assert delays[-1] > 16 * delays[0]


def test_delays_are_bounded_by_the_cap() -> None:
    backoff = Backoff(base=2.0, cap=30.0, rng=random.Random(3))
    delays = [backoff.next() for _ in range(200)]
    assert max(delays) <= 30.0
    assert min(delays[10:]) >= 15.0


def test_delays_stay_bounded_after_a_long_outage() -> None:
    # An account that fails for days keeps retrying: thousands of attempts must not break the arithmetic.
    backoff = Backoff(base=1.0, cap=300.0, rng=random.Random(5))
    delays = [backoff.next() for _ in range(5000)]
    assert all(150.0 <= d <= 300.0 for d in delays[20:])


def test_jitter_spreads_over_the_whole_half_to_full_range() -> None:
    rng = random.Random(11)
    delays = []
    for _ in range(400):
        backoff = Backoff(base=10.0, cap=10.0, rng=rng)
        delays.append(backoff.next())
    assert all(5.0 <= d <= 10.0 for d in delays)
    assert min(delays) < 5.5
    assert max(delays) > 9.5
    assert len(set(delays)) > 300


def test_reset_starts_over_from_the_base() -> None:
    backoff = Backoff(base=1.0, cap=300.0, rng=random.Random(2))
    for _ in range(10):
        backoff.next()
    backoff.reset()
    assert 0.5 <= backoff.next() <= 1.0
    assert 1.0 <= backoff.next() <= 2.0
