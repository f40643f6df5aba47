"""One run of a query for every caller that asks the same thing while it runs (single flight).

Thousands of subscribers (re)connecting together, or re-checking one token when its cached grant expires, would
otherwise each take a pooled connection for the same answer, and those at the back of the queue time out. The
query runs in a task of its own: a caller that gives up does not cancel it for the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


class Shared(Generic[K, T]):
    def __init__(self) -> None:
        self._pending: dict[K, asyncio.Future[T]] = {}

    async def run(self, key: K, query: Callable[[], Awaitable[T]]) -> T:
        """`query()`'s answer, run once for every caller asking with `key` meanwhile."""
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = asyncio.ensure_future(query())
            pending.add_done_callback(self._forget(key))
        return await asyncio.shield(pending)

    def _forget(self, key: K) -> Callable[[asyncio.Future[T]], None]:
        def done(future: asyncio.Future[T]) -> None:
            if self._pending.get(key) is future:
                del self._pending[key]

        return done
