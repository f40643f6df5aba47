"""Retrying a unit of work that lost a deadlock or a lock wait (InnoDB rolls the loser back: run it again).

Every sync step is idempotent, and so is a mutation's unit of work (gateway.graphql.mutations.writes): nothing
of a rolled-back transaction stays.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)
T = TypeVar("T")

# MySQL/MariaDB: 1213 deadlock found, 1205 lock wait timeout.
_RETRYABLE = {1213, 1205}


def _code(exc: DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


async def retry_deadlocks(step: Callable[[], Awaitable[T]], attempts: int = 8) -> T:
    for attempt in range(1, attempts + 1):
        try:
            return await step()
        except DBAPIError as exc:
            if _code(exc) not in _RETRYABLE or attempt == attempts:
                raise
            log.info("retrying after %s (attempt %d)", _code(exc), attempt)
            await asyncio.sleep(random.uniform(0, 0.05 * attempt))
    raise AssertionError("unreachable")
