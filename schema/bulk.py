"""Many rows in one MariaDB bulk command of binary parameters (COM_STMT_BULK_EXECUTE), on a session's transaction.

A multi-row INSERT spells every value into the statement's text: the driver escapes the bytes of blobs and
bodies and the server parses them back, the largest statements of an initial sync (BENCHMARKS.md), and the change
log's states (over 2,000 rows for a mutation of 1,000 flag changes). A prepared statement's bulk command sends
them as they are. Where the driver (asyncmy) or the server cannot, `insert` sends
nothing and says so, and the caller writes the rows as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from asyncmy.errors import Error as DriverError
from asyncmy.errors import NotSupportedError
from sqlalchemy import JSON, Table
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

# From this many rows a bulk command pays for its three round trips (prepare, execute, close) against one
# statement that spells the rows into its text.
MANY = 100


async def insert(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    *,
    ignore: bool = False,
    dumps: Callable[[Any], str] = json.dumps,
    update: Sequence[str] = (),
) -> bool:
    """INSERT (IGNORE) the rows; False, with nothing sent, where no bulk command can carry them.

    Every row must give every column that has a default on SQLAlchemy's side. A column that is None in every row
    is left out (the server's default applies, NULL for a column that can be None), since the bulk command needs a
    type for each column. JSON values are serialized as SQLAlchemy would, or by `dumps`.
    With `update`, rows whose key exists take these columns' values (ON DUPLICATE KEY UPDATE, as schema.db.upsert):
    for rows that all exist, written as an upsert to change many rows to values of their own in one command. As
    SQLAlchemy does for its upsert, the columns with defaults on its side that the rows leave out take their
    defaults in the INSERT half, which the server checks even when no row is inserted.
    A refusal of the server is raised as SQLAlchemy's DBAPIError, like any statement's (schema.retry reads it).
    """
    if not rows:
        return True
    keys = rows[0].keys()
    if any(row.keys() != keys for row in rows):
        return False  # rows of several shapes
    defaulted = [c for c in table.columns if c.default is not None and c.name not in keys]
    if defaulted:
        if not update:
            return False  # a column left to a default only SQLAlchemy knows
        fill = {}
        for c in defaulted:
            default: Any = c.default
            if default.is_scalar:
                fill[c.name] = default.arg
            elif default.is_callable and not default.is_sequence:
                try:
                    fill[c.name] = default.arg(None)  # SQLAlchemy's wrapper of a function of no arguments
                except (AttributeError, TypeError):  # a default that reads its statement's context
                    return False
            else:
                return False
        rows = [{**row, **fill} for row in rows]
    raw = await (await session.connection()).get_raw_connection()
    driver = raw.driver_connection
    if driver is None or not hasattr(driver, "prepare"):  # another driver than asyncmy
        return False
    columns = [c for c in table.columns if any(row.get(c.name) is not None for row in rows)]
    names = [c.name for c in columns]
    as_json = [i for i, c in enumerate(columns) if isinstance(c.type, JSON)]
    values: list[tuple[Any, ...]] = []
    for row in rows:
        cells = list(map(row.get, names))
        for i in as_json:
            if cells[i] is not None:
                cells[i] = dumps(cells[i])
        values.append(tuple(cells))
    sql = (
        f"INSERT {'IGNORE ' if ignore else ''}INTO `{table.name}` ({', '.join(f'`{c.name}`' for c in columns)})"
        f" VALUES ({', '.join('?' * len(columns))})"
    )
    if update:
        sql += f" ON DUPLICATE KEY UPDATE {', '.join(f'`{c}` = VALUES(`{c}`)' for c in update)}"
    try:
        statement = await driver.prepare(sql)
        try:
            await statement.execute_bulk(values)
        finally:
            await statement.close()
    except (NotSupportedError, ValueError):  # raised before anything is sent: no bulk here, or rows unfit for it
        return False
    except DriverError as exc:
        raise DBAPIError.instance(sql, None, exc, DriverError) from exc
    return True
