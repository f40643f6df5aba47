"""Jittered exponential backoff ("full jitter"): retries of many accounts spread out instead of stampeding."""

from __future__ import annotations

import asyncio
import random


class Backoff:
    def __init__(self, base: float = 1.0, cap: float = 300.0, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap, self.base * 2 ** min(self.attempt, 62))
        self.attempt += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def raise_if_cancelled() -> None:
    """Raise the task's cancellation if one was asked for and has not come out as CancelledError: a driver or a
    library's cleanup interrupted by it may raise its own error instead (a cancelled read of the database
    connection), or swallow it, and a retry loop would then go on retrying, losing the supervisor's cancel
    (shutdown, a lost lease). Every retry loop of the sync core calls this before it waits again."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
