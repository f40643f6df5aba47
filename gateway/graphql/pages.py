"""Keyset pagination: a page is the rows strictly after (or before) a cursor in a fixed total order.

Every order ends in the primary key, so it is total and a cursor names exactly one position. The cursor
condition is spelled out as ``a < x OR (a = x AND id < y)`` rather than a row comparison, which InnoDB turns
into a range on the index the order follows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, bindparam, false, func, or_, select
from sqlalchemy.engine import Row
from sqlalchemy.orm import QueryableAttribute

from gateway.errors import BadUserInput
from gateway.ids import decode_page_cursor, encode_page_cursor

MAX_PAGE = 100
DEFAULT_PAGE = 20
# The delta feed's pages (gateway.graphql.changes): larger, since a change is one log row.
MAX_CHANGES = 500
DEFAULT_CHANGES = 100


@dataclass(frozen=True, slots=True)
class PageArgs:
    """A validated first/after/last/before: `size` rows, forward unless `backward`."""

    size: int
    backward: bool
    after: str | None
    before: str | None

    @classmethod
    def of(
        cls, first: int | None = None, after: str | None = None, last: int | None = None, before: str | None = None
    ) -> PageArgs:
        if first is not None and last is not None:
            raise BadUserInput("pass first or last, not both")
        for name, value in (("first", first), ("last", last)):
            if value is not None and not 1 <= value <= MAX_PAGE:
                raise BadUserInput(f"{name} must be between 1 and {MAX_PAGE}")
        if last is not None:
            return cls(last, True, after, before)
        return cls(first if first is not None else DEFAULT_PAGE, False, after, before)


@dataclass(frozen=True, slots=True)
class Key:
    """One column of a sort order: the SQL expression, its direction, and the result column holding it."""

    expr: ColumnElement[Any] | QueryableAttribute[Any]
    descending: bool
    name: str


def _beyond(keys: Sequence[Key], values: Sequence[Any], forward: bool) -> ColumnElement[bool]:
    """Rows that come after `values` in the order of `keys` (before them when not `forward`)."""
    clauses: list[ColumnElement[bool]] = []
    for i, key in enumerate(keys):
        later = key.expr < values[i] if key.descending == forward else key.expr > values[i]
        equal = [keys[j].expr == values[j] for j in range(i)]
        clauses.append(and_(*equal, later) if equal else later)
    return or_(*clauses) if clauses else false()


def conditions(keys: Sequence[Key], page: PageArgs) -> list[ColumnElement[bool]]:
    """The cursor conditions of a page (none for a first page)."""
    found = []
    if page.after is not None:
        found.append(_beyond(keys, decode_page_cursor(page.after, len(keys)), True))
    if page.before is not None:
        found.append(_beyond(keys, decode_page_cursor(page.before, len(keys)), False))
    return found


def bound_conditions(keys: Sequence[Key], page: PageArgs) -> list[ColumnElement[bool]]:
    """The cursor conditions of a page as `conditions` makes them, with the cursor's values as bound parameters
    (`after_0`, `after_1`, ... and `before_0`, ...) whose values `cursor_values` reads: for a statement built once
    for every page of its shape."""
    found = []
    if page.after is not None:
        found.append(_beyond(keys, [bindparam(f"after_{i}") for i in range(len(keys))], True))
    if page.before is not None:
        found.append(_beyond(keys, [bindparam(f"before_{i}") for i in range(len(keys))], False))
    return found


def cursor_values(keys: Sequence[Key], page: PageArgs) -> dict[str, Any]:
    """The values of `bound_conditions`' parameters: the page's cursors, decoded (BAD_USER_INPUT when one is not
    a cursor of this order)."""
    values: dict[str, Any] = {}
    for side, cursor in (("after", page.after), ("before", page.before)):
        if cursor is not None:
            values.update((f"{side}_{i}", v) for i, v in enumerate(decode_page_cursor(cursor, len(keys))))
    return values


def ordering(keys: Sequence[Key], page: PageArgs) -> list[ColumnElement[Any]]:
    """The order to read a page in: the sort order, reversed for a backward page."""
    return [k.expr.desc() if k.descending != page.backward else k.expr.asc() for k in keys]


def apply(stmt: Select[Any], keys: Sequence[Key], page: PageArgs) -> Select[Any]:
    """Add the cursor conditions, the order and a limit of size + 1 (the extra row tells hasNext/hasPrevious)."""
    return stmt.where(*conditions(keys, page)).order_by(*ordering(keys, page)).limit(page.size + 1)


# A page's shape, as far as its statement goes: its size, whether it reads backward, whether it has an after and
# a before cursor (their values are bound parameters: `cursor_values`).
Shape = tuple[int, bool, bool, bool]


def shape_of(page: PageArgs) -> Shape:
    return (page.size, page.backward, page.after is not None, page.before is not None)


@dataclass(frozen=True, slots=True)
class KeptPage:
    """A list's page as SQL, built once for every account and page of its shape (`kept_page`): the account
    (`account`) and the page's cursor (`cursor_values`) are bound parameters, so a request builds no statement,
    and SQLAlchemy's key for its compiled form is made once."""

    rows: Select[Any]
    counted: Select[Any]  # how many rows all pages hold (totalCount), bound by `account` too
    keys: tuple[Key, ...]


def kept_page(stmt: Select[Any], keys: Sequence[Key], shape: Shape) -> KeptPage:
    """`apply` for a statement built once for every page of its shape: the cursors' values are the bound
    parameters of `bound_conditions`, given at each execution by `cursor_values`."""
    size, backward, after, before = shape
    page = PageArgs(size, backward, "" if after else None, "" if before else None)
    rows = stmt.where(*bound_conditions(keys, page)).order_by(*ordering(keys, page)).limit(size + 1)
    return KeptPage(rows, select(func.count()).select_from(stmt.subquery()), tuple(keys))


@dataclass(frozen=True, slots=True)
class Window:
    """The rows of one page in display order, their cursors, and whether more lie beyond either end."""

    rows: list[Any]
    cursors: list[str]
    has_next: bool
    has_previous: bool


def _key_values(rows: Sequence[Row[Any]], keys: Sequence[Key]) -> list[list[Any]]:
    """Each row's values of the sort keys, read by position, found once per page: a row's attribute is looked up
    only after the class's own attributes failed, and its mapping is an object made anew at each access."""
    if not rows:
        return []
    positions = [rows[0]._fields.index(k.name) for k in keys]
    return [[r[p] for p in positions] for r in rows]


def cut(rows: Sequence[Row[Any]], keys: Sequence[Key], page: PageArgs) -> Window:
    more = len(rows) > page.size
    kept = list(rows[: page.size])
    if page.backward:
        kept.reverse()
    cursors = [encode_page_cursor(values) for values in _key_values(kept, keys)]
    if page.backward:
        return Window(kept, cursors, has_next=page.before is not None, has_previous=more)
    return Window(kept, cursors, has_next=more, has_previous=page.after is not None)
