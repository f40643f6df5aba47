"""The gateway's long-lived heap, kept out of the cyclic garbage collector's way.

A gateway holding thousands of subscribers keeps hundreds of MiB of long-lived objects (sockets, protocol
handlers, suspended generators). CPython's collector walks every tracked object at each full collection, and
the allocations of a fan-out (one event handed to every subscriber at once) are what set one off: at 10,000
subscribers a full collection took 1-2 s in the middle of the hand-over (BENCHMARKS.md, Change feed).

So `keep` runs beside the fan-out (gateway.fanout starts it):

* every `freeze_seconds` it collects the young generations (cheap: only what was made since the last time)
  and freezes what survived (`gc.freeze`): frozen objects are never walked again, so no collection grows with
  the number of subscribers;
* **the policy for cyclic garbage**: a cycle that becomes garbage after it was frozen (e.g. a closed socket's
  handler and its tasks) would stay forever, so every `sweep_seconds` the frozen heap is unfrozen and collected
  in full, once, then frozen again. The sweep waits (at most `sweep_seconds` more) for a moment when no
  doorbell has rung for `quiet_seconds`, so it rarely lands in a fan-out. Its time and what it freed are logged.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


async def keep(
    last_ring: Callable[[], float],
    *,
    freeze_seconds: float = 2.0,
    sweep_seconds: float = 600.0,
    quiet_seconds: float = 1.0,
) -> None:
    """Freeze the survivors every `freeze_seconds`; sweep the frozen heap every `sweep_seconds`, preferably when
    `last_ring()` (a time.monotonic() stamp) is at least `quiet_seconds` old. Runs until cancelled; the heap is
    left unfrozen then."""
    gc.freeze()  # no collection first: a full one blocks the loop (the first sweep frees start-up's garbage)
    swept = time.monotonic()
    try:
        while True:
            await asyncio.sleep(freeze_seconds)
            now = time.monotonic()
            due = now - swept >= sweep_seconds
            quiet = now - last_ring() >= quiet_seconds
            if due and (quiet or now - swept >= 2 * sweep_seconds):
                sweep()
                swept = time.monotonic()
            else:
                gc.collect(1)
            gc.freeze()
    finally:
        gc.unfreeze()


def sweep() -> int:
    """Unfreeze and collect everything: the cyclic garbage that was frozen is freed. Returns what it freed."""
    frozen = gc.get_freeze_count()
    start = time.perf_counter()
    gc.unfreeze()
    freed = gc.collect()
    log.info(
        "heap swept: %d unreachable objects freed of %d frozen in %.0f ms",
        freed,
        frozen,
        (time.perf_counter() - start) * 1000,
    )
    return freed
