"""Relay's shapes: the Node interface (global ids, `node(id:)`) and keyset connections (edges, page info)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import strawberry
from sqlalchemy.engine import Row

from gateway.graphql import pages
from gateway.graphql.types.fields import described

T = TypeVar("T")


@strawberry.interface(description="An object with a global id, fetchable with `node(id:)`.")
class Node:
    id: strawberry.ID = strawberry.field(description="Opaque global id: compare and pass back, never parse.")


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[T]):
    cursor: str
    node: T


@strawberry.type(description="A page of a list, read by keyset cursors (first/after or last/before, 1 to 100).")
class Connection(Generic[T]):
    edges: list[Edge[T]]
    page_info: PageInfo
    count: strawberry.Private[Callable[[], Awaitable[int]]]

    @described("How many items the whole list holds (counted only when asked for).")
    async def total_count(self) -> int:
        return await self.count()

    @described("The items of this page, without cursors.")
    def nodes(self) -> list[T]:
        return [edge.node for edge in self.edges]


def connection(
    window: pages.Window, make: Callable[[Row[Any]], T], count: Callable[[], Awaitable[int]]
) -> Connection[T]:
    edges = [Edge(cursor=c, node=make(r)) for r, c in zip(window.rows, window.cursors, strict=True)]
    info = PageInfo(
        has_next_page=window.has_next,
        has_previous_page=window.has_previous,
        start_cursor=window.cursors[0] if window.cursors else None,
        end_cursor=window.cursors[-1] if window.cursors else None,
    )
    return Connection(edges=edges, page_info=info, count=count)
