"""Parsing and packing fetched messages, in worker processes when there is a core to spare.

MIME parsing and zlib are the sync core's CPU work besides SQL. In a worker process they run while the event
loop writes the previous batch to MySQL, instead of blocking it.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
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
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))

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
