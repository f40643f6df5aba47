"""Engine factory and database creation."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterable
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Table, event, make_url, text
from sqlalchemy.dialects.mysql import Insert
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import QueuePool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.sqltypes import NullType


@functools.cache
def upsert(table: Table, *columns: str) -> Insert:
    """INSERT ... ON DUPLICATE KEY UPDATE of these columns to the values given, built once per table and columns.

    Built on every call, `inserted` (the VALUES() alias) made a proxy of each of the table's columns: about half a
    millisecond per statement, as much as a round trip, twice in a one-message flag mutation's unit. A statement is
    immutable: the same one serves every execution.
    """
    stmt = mysql_insert(table)
    return stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in columns})


# From this many ids a list is written into the statement's text (ids_in).
MANY_IDS = 100


class _IdsIn(ColumnElement[bool]):
    inherit_cache = False  # the ids are in the text: a statement holding them is compiled each time, not cached
    # Not Boolean: MySQL's compiler writes a Boolean expression that is no comparison as `(...) = 1` in a WHERE,
    # which no index serves (a full scan of the table per statement: 4x slower initial sync at 100,000 messages).
    type = NullType()  # type: ignore[assignment]

    def __init__(self, column: ColumnElement[Any], ids: list[int]) -> None:
        self.column = column
        self.ids = ids


@compiles(_IdsIn)
def _ids_in_text(element: _IdsIn, compiler: SQLCompiler, **kw: Any) -> str:
    return f"{compiler.process(element.column, **kw)} IN ({','.join(map(str, element.ids))})"


def ids_in(column: Any, ids: Iterable[int]) -> ColumnElement[bool]:
    """`column IN (1, 2, ...)` with the ids written into the statement's text as numbers (each is made an int
    first, so nothing else can be written there), where `column.in_(ids)` makes a bound parameter of each: 1,000
    ids were 1,000 parameters coerced, named and rendered, about 2 ms of CPU a list, and a flag change of 1,000
    messages names seven such lists (BENCHMARKS.md, write-back (b)). The statement is compiled anew at each
    execution instead of being taken from SQLAlchemy's cache: a fraction of a millisecond. Fewer than MANY_IDS
    are bound parameters as usual."""
    numbers = [int(i) for i in ids]
    if len(numbers) < MANY_IDS:
        # A few: the statement with its list of parameters is compiled once and cached (compiling it each time
        # would cost a small unit more than its parameters do).
        in_list: ColumnElement[bool] = column.in_(numbers)
        return in_list
    return _IdsIn(column, numbers)


def json_loads(text: str | bytes) -> Any:
    """JSON columns as read: by orjson (a 50-thread GraphQL page decodes ~75 of them: participants, addresses,
    label ids), by json.loads what orjson refuses and json.loads takes (lone surrogate escapes, NaN). The one
    difference left, integers beyond 64 bits read as floats, concerns none of ours: ids, UIDs, MODSEQs (63-bit)
    and Gmail's ids (64-bit) fit, and GraphQL's Int, the only number a client gives, is 32-bit."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def json_dumps(value: Any) -> str:
    """JSON text by orjson (a unit of 1,000 flag changes logs over 2,000 states: schema.changelog), by json.dumps
    what orjson refuses (lone surrogates, integers beyond 64 bits, keys that are not strings). Both read back as
    the same value (json_loads); the text differs (no spaces, no \\u escapes of non-ASCII)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:
        return json.dumps(value)


# A pooled connection that was in use less than this many seconds ago is handed out again without a ping first.
PING_AFTER = 1.0


def create_engine(url: str, *, pool_size: int = 10, echo: bool = False, ping_after: float = PING_AFTER) -> AsyncEngine:
    """An async engine in READ COMMITTED: writers of one account meet only at the change counter's row.

    REPEATABLE READ (InnoDB's default) would add gap locks on the indexes the sync core writes to and turn
    concurrent writers (sync core and gateway mutations) into deadlocks.

    A connection is pinged when it leaves the pool only if it sat there `ping_after` seconds or more
    (_ping_when_idle).
    """
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=3600,
        isolation_level="READ COMMITTED",
        json_deserializer=json_loads,
        echo=echo,
    )
    _ping_when_idle(engine, ping_after)
    return engine


def _ping_when_idle(engine: AsyncEngine, after: float) -> None:
    """Ping a connection as it leaves the pool when it has been idle `after` seconds or more; a dead one is replaced
    by a new connection before anyone uses it (SQLAlchemy's DisconnectionError from a checkout).

    SQLAlchemy's pool_pre_ping pings at every checkout: a round trip to the server before each session's first
    statement, about 20 of the 70 that an IDLE push costs the sync core from its notice to its commit, and one per
    session a gateway request opens. A connection back in the pool less than `after` seconds ago was answering
    then. What a ping would have caught in that window (the server restarted or the connection killed within it)
    fails that statement with a disconnect error instead, as it would have if it had come a moment before the
    ping: the pool then drops its connections (SQLAlchemy invalidates the pool on a disconnect), and the caller's
    retry (the sync's backoff, a client's retry of a 503) finds new ones."""
    dialect = engine.sync_engine.dialect
    pool = engine.sync_engine.pool

    def used(dbapi_connection: Any, record: Any) -> None:
        record.info["used"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        last = record.info.get("used")
        if last is not None and time.monotonic() - last < after:
            return
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as error:
            if dialect.is_disconnect(error, dbapi_connection, None):
                raise DisconnectionError("the pooled connection did not answer a ping") from error
            raise

    event.listen(pool, "connect", used)
    event.listen(pool, "checkin", used)
    event.listen(pool, "checkout", checkout)


def pool_use(engine: AsyncEngine) -> tuple[int, int]:
    """(connections checked out, the most the pool hands out: its size plus overflow), for ops.metrics."""
    pool = engine.sync_engine.pool
    if not isinstance(pool, QueuePool):
        return 0, 0
    return pool.checkedout(), pool.size() + pool._max_overflow


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def create_database(url: str) -> bool:
    """Create the URL's database when it is missing; returns whether it was created."""
    parsed = make_url(url)
    name = parsed.database
    if not name:
        raise ValueError(f"the database URL names no database: {parsed.render_as_string()}")
    server = create_async_engine(parsed.set(database=""), isolation_level="AUTOCOMMIT")
    try:
        async with server.connect() as conn:
            found = await conn.scalar(
                text("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name = :n"),
                {"n": name},
            )
            if found:
                return False
            quoted = name.replace("`", "``")
            await conn.execute(text(f"CREATE DATABASE `{quoted}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"))
            return True
    finally:
        await server.dispose()


async def drop_database(url: str) -> None:
    parsed = make_url(url)
    server = create_async_engine(parsed.set(database=""), isolation_level="AUTOCOMMIT")
    try:
        async with server.connect() as conn:
            quoted = (parsed.database or "").replace("`", "``")
            await conn.execute(text(f"DROP DATABASE IF EXISTS `{quoted}`"))
    finally:
        await server.dispose()
