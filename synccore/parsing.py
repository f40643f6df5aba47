"""Parsing and packing fetched messages, in worker processes when there is a core to spare.

MIME parsing and zlib are the sync core's CPU work besides SQL. In a worker process they run while the event
loop writes the previous batch to MySQL, instead of blocking it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

from mime import ParsedMessage, parse_message
from schema import blobs


@dataclass(frozen=True, slots=True)
class Prepared:
    parsed: ParsedMessage
    digest: bytes
    codec: str
    packed: bytes


def prepare(raw: bytes) -> Prepared:
    codec, packed = blobs.pack(raw)
    return Prepared(parse_message(raw), blobs.digest(raw), codec, packed)


def prepare_many(raws: Sequence[bytes]) -> list[Prepared]:
    return [prepare(raw) for raw in raws]


def _exit_with_parent(parent: int) -> None:
    """In a worker: end this process when the sync process that started it is gone.

    A SIGKILLed parent runs no shutdown, so its workers (and multiprocessing's resource tracker, which lives
    as long as they hold its pipe) would run forever. Reparenting changes getppid(); the check costs nothing.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def default_workers() -> int:
    """One core is left to the event loop (SQL, IMAP); MariaDB often shares the machine too."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


class ParsePool:
    """`await pool.prepare(raws)`: in `workers` processes, or inline when workers is 0."""

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        if workers > 0:
            # spawn, not fork: forking a process that runs an event loop and threads copies their locks.
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )

    async def prepare(self, raws: Sequence[bytes]) -> list[Prepared]:
        if self._pool is None or len(raws) < 8:
            return prepare_many(raws)
        loop = asyncio.get_running_loop()
        step = -(-len(raws) // self.workers)
        parts = [loop.run_in_executor(self._pool, prepare_many, raws[i : i + step]) for i in range(0, len(raws), step)]
        return [p for part in await asyncio.gather(*parts) for p in part]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
