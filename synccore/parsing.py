"""Parsing and packing fetched messages, in worker processes when there is a core to spare.

MIME parsing and zlib are the sync core's CPU work besides SQL. In a worker process they run while the event
loop writes the previous batch to MySQL, instead of blocking it.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import logging
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from synccore.prepare import Prepared, prepare_many, worker_started

log = logging.getLogger(__name__)


def default_workers() -> int:
    """One core is left to the event loop (SQL, IMAP); MariaDB often shares the machine too."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class WorkerCrashed(RuntimeError):
    """A batch broke its worker process again after the pool was rebuilt (e.g. a message that exhausts memory)."""


# Batches smaller than both are parsed on the event loop (see ParsePool.prepare).
INLINE_COUNT = 8
INLINE_BYTES = 512 * 1024
# A message at least this large is parsed in a thread of this process: sent to a worker, its raw bytes were
# pickled, piped and unpickled and its packed bytes the same way back, four more copies of it at once (a 68 MiB
# message raised the peak RSS of the sync and its worker by 5.7 bytes per byte; BENCHMARKS.md). The GIL is let go
# in zlib and sha256 and taken back between the parser's steps, so the event loop goes on meanwhile.
THREAD_BYTES = 8 << 20


def _children_skip_main() -> None:
    """Keep multiprocessing from re-running the main script in each worker. A child it starts (spawn or forkserver)
    runs the parent's `__main__` again when that is a script (`spawn._fixup_main_from_path`): for `inboxql sync`,
    the console script, whose `from inboxql.cli import main` imported SQLAlchemy, redis and the CLI in every parse
    worker (a worker of a script like it: 68 MiB of RSS, 25 without; BENCHMARKS.md). A main module known by a spec
    named `__main__` is left alone (`spawn._fixup_main_from_name`). The workers need nothing of it: what they run
    (synccore.prepare) is imported by name. A main module run with `-m` has its spec already."""
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__spec__", None) is None:
        main.__spec__ = importlib.machinery.ModuleSpec("__main__", None)


class ParsePool:
    """`await pool.prepare(raws)`: in `workers` processes, or inline when workers is 0; one large message in a
    thread.

    A worker that dies (the kernel's OOM killer, a SIGKILL) breaks the whole executor: every later call would
    raise BrokenProcessPool, for every account, until the process restarts. The broken executor is replaced by a
    new one and the batch runs again once; a batch that breaks the new one too raises WorkerCrashed (its folder
    is retried later), and the pool is rebuilt for the others.
    """

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = self._start() if workers > 0 else None
        self.rebuilds = 0

    def _start(self) -> ProcessPoolExecutor:
        # Not fork: forking a process that runs an event loop and threads copies their locks. A fork server,
        # started clean (a new interpreter) and preloading synccore.prepare only, forks the workers: each starts
        # with the parser imported and nothing else (spawn ran the `inboxql` script's imports in every worker).
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["synccore.prepare"])
        _children_skip_main()
        return ProcessPoolExecutor(
            self.workers, mp_context=context, initializer=worker_started, initargs=(os.getpid(),)
        )

    async def prepare(self, raws: Sequence[bytes]) -> list[Prepared]:
        # A few small messages parse faster here than the trip to a worker costs; a large one (batches are sized
        # by bytes, so a 20 MiB message comes alone) would hold the event loop for seconds: a worker takes it.
        size = sum(map(len, raws))
        if self._pool is None or (len(raws) < INLINE_COUNT and size < INLINE_BYTES):
            return prepare_many(raws)
        if len(raws) == 1 and size >= THREAD_BYTES:
            return await asyncio.to_thread(prepare_many, raws)
        attempts = 2
        for attempt in range(1, attempts + 1):
            pool = self._pool
            try:
                return await self._run(pool, raws)
            except BrokenProcessPool as exc:
                self._rebuild(pool)
                if attempt == attempts:
                    raise WorkerCrashed(f"a parse worker died twice on a batch of {len(raws)} messages") from exc
        raise AssertionError("unreachable")

    async def _run(self, pool: ProcessPoolExecutor, raws: Sequence[bytes]) -> list[Prepared]:
        loop = asyncio.get_running_loop()
        step = -(-len(raws) // self.workers)
        parts: list[asyncio.Future[list[Prepared]]] = []
        try:
            for i in range(0, len(raws), step):  # a pool broken while idle refuses at once, here
                parts.append(loop.run_in_executor(pool, prepare_many, raws[i : i + step]))
        finally:
            # Every part is awaited to its end, so none is left running or with an unread exception.
            done = await asyncio.gather(*parts, return_exceptions=True)
        failures = [d for d in done if isinstance(d, BaseException)]
        if failures:
            raise next((f for f in failures if isinstance(f, BrokenProcessPool)), failures[0])
        return [p for part in done if not isinstance(part, BaseException) for p in part]

    def _rebuild(self, broken: ProcessPoolExecutor | None) -> None:
        """Replace the broken executor, unless another batch has done so already."""
        if broken is None or broken is not self._pool:
            return
        log.warning("a parse worker process died; starting a new pool")
        broken.shutdown(wait=False, cancel_futures=True)
        self._pool = self._start()
        self.rebuilds += 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
