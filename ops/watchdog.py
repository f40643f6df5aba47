"""The blocking detector: tells when an asyncio loop is held by one call, and what that call is.

One blocking call on the loop (a parse, a bcrypt, a synchronous socket, a big JSON dump) stops every account's
sync and every client's request at once, and leaves no trace in any log: the loop is merely slow. So:

```
 loop thread                                  watchdog thread (wakes when the heartbeat would be late)
 heartbeat, every `tick` (call_later):        due = when the next heartbeat should run
   lag = now - due ──► inboxql_loop_lag_seconds  now - due > threshold? ──► stalled: take the loop thread's
   lag > threshold ──► inboxql_loop_stalls_total   stack now (sys._current_frames), while the call still runs
                       and (due, lag) to the thread  a stall ended (from the heartbeat) ──► log it ONCE: its
   due = now + tick                                  duration, the stack taken while it lasted, and how much of
                                                     it the loop thread spent on the CPU (a computation) or not
                                                     (a blocking wait, or a machine too busy to run it)
```

A stall's duration is how late the heartbeat ran: the blocking call's length less up to one tick (50 ms), since
the call may have started just after a heartbeat. The loop counts each stall (the heartbeat's lag); the thread
only looks at the stack, so a stall that ends before the thread looks is logged without one. The thread sleeps
until the heartbeat due when it last looked would be late by the threshold: a healthy loop has beaten meanwhile, so
the thread wakes about once a threshold (10 times a second at 100 ms), and a stall is seen as soon as it passes the
threshold; while a stall lasts it looks every threshold / 2. (It looked every threshold / 2 throughout: 20 wake-ups
a second, 0.14% of a core of an idle sync process on its own; bench.empty_idle_bench.) The heartbeat costs the
loop one timer callback per tick; the thread reads two floats, and a stack only when the loop is stalled. A stall
that lasts past LONG_STALL is logged then, stack included, because the loop may never come back (a deadlock); its
end is then one more line, without the stack.

Limits: the thread needs the GIL to look; a C call that holds the GIL throughout is seen only once it lets go,
and the stack taken then may already be past the culprit. A pure-Python loop, `time.sleep`, or blocking I/O are
caught in the act.

`watching()` starts the watchdog of the running loop for the length of a block (nested or repeated uses share
one); `INBOXQL_STALL_MS` sets the threshold (100 ms by default; 0 switches the detector off).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from ops import metrics

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.1
# A stall this long is logged while it lasts: the loop may never come back.
LONG_STALL = 5.0
ENV = "INBOXQL_STALL_MS"


def threshold_from_env(default: float = DEFAULT_THRESHOLD) -> float:
    """The threshold in seconds from INBOXQL_STALL_MS (0: off); `default` when unset or unreadable."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return default
    try:
        value = float(text) / 1000
    except ValueError:
        log.warning("%s=%r is not a number of milliseconds; using %d ms", ENV, text, default * 1000)
        return default
    return max(0.0, value)


def _cpu_clock(thread_id: int) -> Callable[[], float] | None:
    """A reader of a thread's CPU time (Linux and most Unixes), or None where there is none."""
    try:
        clock = time.pthread_getcpuclockid(thread_id)
        time.clock_gettime(clock)
    except (AttributeError, OSError):
        return None
    return lambda: time.clock_gettime(clock)


@dataclass(slots=True)
class Stall:
    """A stall the thread saw while it lasted: when the loop should have come back, and its stack then."""

    due: float
    stack: str
    seen_at: float  # time.monotonic() when the stack was taken
    cpu_at: float | None  # the loop thread's CPU time then
    logged: bool = False


class Watchdog:
    """Watches one loop from a thread of its own. Start and stop it on the loop's thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, threshold: float = DEFAULT_THRESHOLD) -> None:
        if threshold <= 0:
            raise ValueError("the stall threshold must be positive")
        self.loop = loop
        self.threshold = threshold
        # The heartbeat's period and the thread's: a stall's stack is taken at most threshold + tick + check after
        # it began. Each wakes 20 times a second at the default threshold.
        self.tick = min(threshold / 2, 0.05)
        self.check = threshold / 2
        self.stalls = 0  # stalls counted, for tests and the curious
        self.beats = 0  # heartbeats run (the metrics are the process's: other loops may beat there too)
        self.looks = 0  # times the thread looked
        self._loop_thread = threading.get_ident()
        self._cpu: Callable[[], float] | None = None
        self._due = 0.0  # written by the loop, read by the thread (a float: one atomic store under the GIL)
        self._ended: collections.deque[tuple[float, float]] = collections.deque()  # (due, lag) of each stall
        self._handle: asyncio.TimerHandle | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the loop's side ---------------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop_thread = threading.get_ident()
        self._cpu = _cpu_clock(self._loop_thread)
        self._due = time.monotonic() + self.tick
        self._handle = self.loop.call_later(self.tick, self._beat)
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="inboxql-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _beat(self) -> None:
        now = time.monotonic()
        due = self._due
        lag = max(0.0, now - due)
        self.beats += 1
        metrics.LOOP_LAG.observe(lag)
        if lag > self.threshold:
            self.stalls += 1
            metrics.LOOP_STALLS.inc()
            self._ended.append((due, lag))
        self._due = now + self.tick
        self._handle = self.loop.call_later(self.tick, self._beat)

    # -- the thread's side -------------------------------------------------------------------------------------
    def _watch(self) -> None:
        stall: Stall | None = None
        while not self._stop.wait(self._until_next_look(stall)):
            stall = self._look(stall)
        stall = self._look(stall)
        if stall is not None and not stall.logged:  # the loop came back only to stop its heartbeat: count it here
            self.stalls += 1
            metrics.LOOP_STALLS.inc()
            self._log_end(stall, time.monotonic() - stall.due)

    def _until_next_look(self, stall: Stall | None) -> float:
        """Seconds to sleep: every check while a stall lasts or one that ended is to be logged, else until the
        heartbeat due now would be late by the threshold (a millisecond past it, so that it is late when looked)."""
        if stall is not None or self._ended:
            return self.check
        late = self._due + self.threshold + 0.001 - time.monotonic()
        return min(max(late, 0.001), self.threshold + self.tick)

    def _look(self, stall: Stall | None) -> Stall | None:
        self.looks += 1
        while self._ended:
            due, lag = self._ended.popleft()
            if stall is not None and stall.due == due:
                self._log_end(stall, lag)
                stall = None
            else:
                log.warning(
                    "event loop blocked for %d ms (threshold %d ms); it ended before its stack could be taken",
                    lag * 1000,
                    self.threshold * 1000,
                )
        due = self._due
        now = time.monotonic()
        if stall is None and now - due > self.threshold:
            stall = Stall(due, self._stack(), now, self._cpu() if self._cpu else None)
        elif stall is not None and not stall.logged and now - stall.due > LONG_STALL:
            stall.logged = True
            log.warning(
                "event loop blocked for over %.1f s so far (threshold %d ms)%s; the loop thread's stack:\n%s",
                now - stall.due,
                self.threshold * 1000,
                self._cpu_share(stall),
                stall.stack,
            )
        return stall

    def _log_end(self, stall: Stall, seconds: float) -> None:
        if stall.logged:
            log.warning("event loop stall ended after %d ms", seconds * 1000)
            return
        log.warning(
            "event loop blocked for %d ms (threshold %d ms)%s; the loop thread's stack while it was blocked:\n%s",
            seconds * 1000,
            self.threshold * 1000,
            self._cpu_share(stall),
            stall.stack,
        )

    def _cpu_share(self, stall: Stall) -> str:
        """How much of the watched part of the stall the loop thread ran on the CPU: near 100% is a computation,
        near 0% a wait (blocking I/O, a sleep, a lock) or a machine too busy to run the process."""
        if self._cpu is None or stall.cpu_at is None:
            return ""
        wall = time.monotonic() - stall.seen_at
        if wall <= 0:
            return ""
        return f", on the CPU {min(1.0, (self._cpu() - stall.cpu_at) / wall):.0%} of it"

    def _stack(self) -> str:
        frame = sys._current_frames().get(self._loop_thread)
        if frame is None:
            return "  (the loop thread is gone)\n"
        return "".join(traceback.format_stack(frame))


_running: dict[asyncio.AbstractEventLoop, tuple[Watchdog, int]] = {}


@contextlib.asynccontextmanager
async def watching(threshold: float | None = None) -> AsyncIterator[Watchdog | None]:
    """The running loop watched for the length of the block, the thread stopped (and joined) at its end.

    `threshold` in seconds; None: INBOXQL_STALL_MS, else 100 ms. A threshold of 0 watches nothing (yields None).
    A loop already watched (the demo runs the sync core and the gateway on one loop) keeps its one watchdog.
    """
    limit = threshold_from_env() if threshold is None else threshold
    if limit <= 0:
        yield None
        return
    loop = asyncio.get_running_loop()
    found = _running.get(loop)
    if found is None:
        dog = Watchdog(loop, limit)
        dog.start()
        _running[loop] = (dog, 1)
    else:
        dog = found[0]
        _running[loop] = (dog, found[1] + 1)
    try:
        yield dog
    finally:
        held = _running[loop][1] - 1
        if held:
            _running[loop] = (dog, held)
        else:
            del _running[loop]
            dog.stop()
