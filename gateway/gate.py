"""How many subscribers may be handing an event over at once, so a burst of deliveries leaves the loop to others.

A commit wakes every subscriber of its account in the same loop iteration. Each then runs a chain of small
steps (the shared read, the shared render, its own websocket send), and asyncio runs ready steps first come,
first served: with 200 subscribers, every step of an HTTP request that arrives meanwhile waits behind 200
others, and a 10 ms query took 300 ms at p99 in the soak (BENCHMARKS.md). The gate lets `width` subscribers
through at a time; the rest wait in line (first come, first served), off the ready queue, so a request's step
waits behind at most `width` of theirs. The burst costs the same CPU; it is spread out, and the others get turns.

A subscriber holds its slot from taking its event until it asks for the next one, which includes its socket
send. A slow client would hold a slot for as long as its socket is full, so a slot is taken back after
`hold_seconds` whether or not it was released: by then its holder is waiting on I/O, not using the loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class _Slot:
    __slots__ = ("live", "timer")

    def __init__(self) -> None:
        self.live = True
        self.timer: asyncio.TimerHandle | None = None


class Gate:
    def __init__(self, width: int = 4, hold_seconds: float = 0.05) -> None:
        if width < 1:
            raise ValueError("a gate lets at least one through")
        self.width = width
        self.hold_seconds = hold_seconds
        self._free = width
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.waited = 0  # how many acquisitions had to wait in line (for tests and figures)

    @property
    def held(self) -> int:
        return self.width - self._free

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        held = await self._acquire()
        try:
            yield
        finally:
            self._release(held)

    async def _acquire(self) -> _Slot:
        loop = asyncio.get_running_loop()
        if self._free > 0 and not self._waiters:
            self._free -= 1
        else:
            self.waited += 1
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # _give_back hands its slot over by resolving this
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._give_back()  # handed a slot just as it was cancelled: pass it on
                elif waiter in self._waiters:  # _give_back skips (and drops) cancelled waiters it meets
                    self._waiters.remove(waiter)
                raise
        held = _Slot()
        held.timer = loop.call_later(self.hold_seconds, self._release, held)
        return held

    def _release(self, held: _Slot) -> None:
        if not held.live:
            return  # taken back by its timer already
        held.live = False
        if held.timer is not None:
            held.timer.cancel()
        self._give_back()

    def _give_back(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
