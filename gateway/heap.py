"""The gateway's long-lived heap, kept out of the cyclic garbage collector's way.

A gateway holding thousands of subscribers keeps hundreds of MiB of long-lived objects (sockets, protocol
handlers, suspended generators). CPython's collector walks every tracked object at each full collection, and
the allocations of a fan-out (one event handed to every subscriber at once) are what set one off: at 10,000
subscribers a full collection took 1-2 s in the middle of the hand-over (BENCHMARKS.md, Change feed).

So `keep` runs beside the fan-out (gateway.fanout starts it):

* every `freeze_seconds` it collects what is not frozen, all generations (cheap: only what was made, or
  promoted by the collector, since the last time; the frozen heap is not walked) and freezes what survived
  (`gc.freeze`): frozen objects are not walked by the collections that allocations set off, so none of those
  grows with the number of subscribers; nor does the tick itself (see `keep`). A cycle that died between two
  ticks is freed by the next one, even after the collector promoted it to the old generation (a tick of the
  young generations only froze such garbage);
* a tick waits while a fan-out runs (a doorbell rang within `busy_seconds`), `max_waits` ticks at most: its
  young collection walks what the hand-over allocates, and at 10,000 subscribers it held the loop for up to
  1.5 s in the middle of one (BENCHMARKS.md, Change feed);
* a mutation's unit of work runs with the automatic collections off (`collector_paused`): a flag change of 1,000
  messages allocates a few hundred thousand objects that reference counting frees, and the collections those
  allocations set off walked them for nothing (6 of 94 ms of CPU: BENCHMARKS.md, write-back (b)); the ticks
  above still collect what became cyclic garbage meanwhile, the collector being off or not;
* **the policy for cyclic garbage**: a cycle that becomes garbage after it was frozen (a closed socket's
  handler, a finished request's frames) is freed only by a sweep: the frozen heap unfrozen and collected in
  full, then frozen again. A sweep comes when the heap has grown by `growth` since the last one, as often as
  CPython's own rule would run a full collection (its 25%), but at a moment when no doorbell has rung for
  `quiet_seconds`, not in the middle of a fan-out; past twice that growth it comes anyway. A first version
  swept on a 10-minute timer only: the 5-minute soak's RSS grew 70% (every request's cycles waited frozen).
  The heap is measured by the allocator's blocks in use (`sys.getallocatedblocks`: a walk of its pools, about
  1 ms at two million blocks), never by `gc.get_freeze_count`, which walks every frozen object (29 ms at 600,000;
  in the soak, under load, it held the loop for 118-165 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)


async def keep(
    last_ring: Callable[[], float],
    *,
    freeze_seconds: float = 2.0,
    growth: float = 0.25,
    quiet_seconds: float = 0.25,
    recount_seconds: float = 10.0,
    busy_seconds: float = 1.0,
    max_waits: int = 5,
) -> None:
    """Freeze the survivors every `freeze_seconds`; sweep once the heap grew by `growth`, preferably when
    `last_ring()` (a time.monotonic() stamp) is at least `quiet_seconds` old. Runs until cancelled; the heap is
    left unfrozen then.

    A tick costs what was allocated since the last one, not the size of the heap. The heap is measured once
    every `recount_seconds` at most, by the allocator's blocks in use; the frozen objects are never counted
    (`gc.get_freeze_count()` walks all of them) nor listed (`gc.get_objects`: the list would hold a reference to
    every object it names, a tuple another thread is still building among them, and that thread's next step
    fails with SystemError; seen in a test process, whose gateway runs in a thread beside the tests)."""
    gc.freeze()  # no collection first: a full one blocks the loop (the first sweep frees start-up's garbage)
    swept_at = sys.getallocatedblocks()
    recounted = time.monotonic()
    waited = 0
    try:
        while True:
            await asyncio.sleep(freeze_seconds)
            if time.monotonic() - last_ring() < busy_seconds and waited < max_waits:
                waited += 1
                continue
            waited = 0
            gc.collect(2)  # the frozen heap is not walked: what is not frozen, all generations
            gc.freeze()
            now = time.monotonic()
            if now - recounted < recount_seconds:
                continue
            quiet = now - last_ring() >= quiet_seconds
            grown = sys.getallocatedblocks() - swept_at
            recounted = now
            if grown > swept_at * growth and (quiet or grown > swept_at * 2 * growth):
                sweep()
                gc.freeze()
                swept_at = sys.getallocatedblocks()
                recounted = time.monotonic()
    finally:
        gc.unfreeze()


def sweep() -> int:
    """Unfreeze and collect everything: the cyclic garbage that was frozen is freed. Returns what it freed."""
    start = time.perf_counter()
    gc.unfreeze()
    freed = gc.collect()
    log.info(
        "heap swept: %d unreachable objects freed in %.0f ms, %d blocks in use",
        freed,
        (time.perf_counter() - start) * 1000,
        sys.getallocatedblocks(),
    )
    return freed


_pause_lock = threading.Lock()
_pauses = 0
_resume = False


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection while the block runs (across its awaits); nested and concurrent blocks (several
    mutations, gateways in threads of one test process) turn it back on when the last one ends, and only if it was
    on when the first began."""
    global _pauses, _resume
    with _pause_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()
