"""Small helpers every type module uses: typed field decorators, times, and rows that must exist."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import strawberry
from sqlalchemy.engine import Row

from gateway.errors import INTERNAL_MESSAGE
from gateway.graphql.executor import PREFETCHED

F = TypeVar("F", bound=Callable[..., Any])


def described(description: str) -> Callable[[F], F]:
    """`@strawberry.field(description=...)`, typed (Strawberry's overload for it returns Any)."""
    return cast("Callable[[F], F]", strawberry.field(description=description))


def field_of(
    graphql_type: Any, description: str | None = None, prefetched: tuple[str, object] | None = None
) -> Callable[[F], F]:
    """A field whose resolver may answer at once or later (an awaitable): a plain value spares an asyncio task
    per object, which on a page of 50 threads without labels is most of what the field costs.

    `prefetched` is (attribute, sentinel): the object's attribute holds the field's answer when a list resolver
    loaded it for the whole page, the sentinel otherwise; the resolver must answer with that value when it is
    there. The executor (gateway.graphql.executor) then reads it as a plain field, without calling the resolver.
    """
    metadata = {PREFETCHED: prefetched} if prefetched is not None else None
    field = strawberry.field(graphql_type=graphql_type, description=description, metadata=metadata)
    return cast("Callable[[F], F]", field)


def utc(value: datetime | None) -> datetime | None:
    """Stored times are naive UTC; the API says so."""
    return None if value is None else value.replace(tzinfo=UTC)


async def present(loads: Awaitable[list[Any]]) -> list[Any]:
    """What a load_many found (misses left out)."""
    return [x for x in await loads if x is not None]


def existing(row: Row[Any] | None) -> Row[Any]:
    # A parent the viewer could read has children it can read: a miss here is a bug, not a NOT_FOUND.
    if row is None:
        raise RuntimeError(INTERNAL_MESSAGE)
    return row
