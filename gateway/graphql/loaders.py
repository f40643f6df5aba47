"""The request's database connection (`Reader`) and its DataLoaders, built per request: each loader turns
the keys one execution step asks for into one statement.

Over several shards (schema.shards) the reader holds a connection per shard the request reads, and each loader
groups its keys by the shard their ids name: one statement per shard, the same one as on a single server.

Every statement is scoped to the viewer's accounts, so an id of another account loads as None, exactly like
an id that does not exist. The number of statements of a query thus follows its shape (one per loader per
level), never its page size.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import zlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Executable, Select, Text, bindparam, func, select, type_coerce
from sqlalchemy import Label as Labelled
from sqlalchemy.engine import Row
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.elements import KeyedColumnElement
from strawberry.dataloader import DataLoader

from gateway.errors import ShardUnavailable
from gateway.graphql import pages
from schema.db import json_loads
from schema.models import (
    Account,
    Action,
    ActionMessage,
    Attachment,
    Folder,
    Label,
    Message,
    MessageLabel,
    MessagePlace,
    Outbox,
    SkippedMessage,
    Thread,
)
from schema.shards import HOME, shard_of

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")


def _as_text(column: KeyedColumnElement[Any]) -> Labelled[Any]:
    """A JSON column read as its text, under its own name: `decoded` when a field asks for it. A page of threads
    reads the JSON of every row and shows little of it (a message's `from`, not its to, cc, bcc, reply-to)."""
    return type_coerce(column, Text()).label(column.name)


def decoded(value: Any) -> Any:
    """A JSON column's value, read as text by `_as_text` (or already decoded)."""
    return json_loads(value) if isinstance(value, str | bytes) else value


# A message as lists show it: what the API shows of it, without the bodies (which only `textBody`/`htmlBody`
# load) and the columns the API never shows (the search index's addresses, the mirror's identity and
# orphan time); the address lists as text, decoded when asked for.
_NOT_SHOWN = {"text_body", "html_body", "search_addresses", "identity", "orphaned_at"}
_ADDRESSES = {"from_addrs", "to_addrs", "cc_addrs", "bcc_addrs", "reply_to_addrs"}
MESSAGE_COLUMNS = tuple(
    _as_text(c) if c.name in _ADDRESSES else c for c in Message.__table__.c if c.name not in _NOT_SHOWN
)


def message_columns_of(names: frozenset[str] | None, keys: Sequence[pages.Key]) -> tuple[Any, ...]:
    """MESSAGE_COLUMNS narrowed to the `names` a page's selection reads (None: all), with the columns of the
    page's sort `keys` that are message columns (its cursors read them from the row)."""
    if names is None:
        return MESSAGE_COLUMNS
    wanted = names | {k.name for k in keys}
    return tuple(c for c in MESSAGE_COLUMNS if c.name in wanted)


# A thread, its folder ids as text (decoded only by `folders`).
THREAD_COLUMNS = tuple(_as_text(c) if c.name == "folder_ids" else c for c in Thread.__table__.c)
# An account without its sealed secrets: passwords and OAuth2 tokens are never read into a request.
_SECRETS = {"imap_password", "smtp_password", "oauth2_refresh_token", "oauth2_access_token"}
ACCOUNT_COLUMNS = tuple(c for c in Account.__table__.c if c.name not in _SECRETS)
# An outbox entry without the message it holds twice (as delivered and as filed in Sent).
OUTBOX_COLUMNS = tuple(c for c in Outbox.__table__.c if c.name not in {"message", "sent_copy"})
# An action without its payload (what the executor performs and undoes, never shown): a mutation's payload lists
# up to 1,000 actions.
ACTION_COLUMNS = tuple(c for c in Action.__table__.c if c.name != "payload")

# Lists of messages, newest first (by when the server received them).
MESSAGE_KEYS = (pages.Key(Message.received_at, True, "received_at"), pages.Key(Message.id, True, "id"))
# A thread's messages read oldest first, by the same time the thread's aggregates use.
MESSAGE_TIME = func.coalesce(Message.date, Message.received_at)
THREAD_MESSAGE_KEYS = (pages.Key(MESSAGE_TIME, False, "sort_at"), pages.Key(Message.id, False, "id"))
NEWEST = pages.PageArgs(1, True, None, None)  # the last of a thread's messages: its newest


@functools.lru_cache(maxsize=64)
def newest_messages(columns: frozenset[str] | None) -> Select[Any]:
    """Each thread's newest message: the `threads` given, of the `accounts` given (expanding parameters), reading
    the message `columns` (None: all; see message_columns_of). Built once per column set: building it per request
    (a subquery, then its column collection) cost more CPU than running it.

    The window numbers ids only, and the message columns are joined to the winners: a window over every column
    made the server materialize the text columns in an on-disk (Aria) temporary table for each page, and MariaDB
    10.11.19 once crashed dropping such a table (signal 11 in ha_maria::drop_table) under a loaded test run."""
    ranked = (
        select(
            Message.id,
            func.row_number()
            .over(partition_by=Message.thread_id, order_by=pages.ordering(THREAD_MESSAGE_KEYS, NEWEST))
            .label("rn"),
        )
        .where(
            Message.thread_id.in_(bindparam("threads", expanding=True)),
            Message.account_id.in_(bindparam("accounts", expanding=True)),
            Message.orphaned_at.is_(None),
        )
        .subquery("ranked")
    )
    chosen = message_columns_of(columns, ())
    return select(*chosen).join_from(Message, ranked, ranked.c.id == Message.id).where(ranked.c.rn == 1)


@dataclass(frozen=True, slots=True)
class Progress:
    folders: int
    folders_synced: int
    messages: int


@dataclass(frozen=True, slots=True)
class Bodies:
    text: str
    html: str | None


class Reader:
    """One connection per shard per request, each taken on the first statement to its shard and given back when
    the request ends: a request that reads one shard's accounts takes one connection, as with a single server.

    DataLoaders of one request dispatch concurrently; a connection runs one statement at a time, so
    statements to one shard queue on its lock instead of taking more connections from the pool.

    With several shards, a shard whose server cannot be reached fails the statements sent to it with
    SHARD_UNAVAILABLE (gateway.errors.ShardUnavailable); with one, the error is what it always was.
    """

    def __init__(
        self, engine: AsyncEngine, *, hold: bool = True, shards: Mapping[int, AsyncEngine] | None = None
    ) -> None:
        self.engine = engine  # shard 0: the global tables, and the only shard of a single-server deployment
        self.shards: Mapping[int, AsyncEngine] = shards if shards is not None else {HOME: engine}
        # hold=False: a connection per statement, given back at once (a batch of change-log events shared by
        # many subscribers has no request whose end would give it back).
        self.hold = hold
        self._conns: dict[int, AsyncConnection] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    @property
    def sharded(self) -> bool:
        return len(self.shards) > 1

    def engine_of(self, shard: int) -> AsyncEngine:
        """The engine of a shard (the only one on a single server); SHARD_UNAVAILABLE for one not configured."""
        if not self.sharded:
            return self.engine
        found = self.shards.get(shard)
        if found is None:
            raise ShardUnavailable(shard)
        return found

    @contextlib.asynccontextmanager
    async def session(self, shard: int) -> AsyncIterator[AsyncSession]:
        """A session of its own on a shard (the change log's reads), its connection errors SHARD_UNAVAILABLE
        when there are several shards."""
        try:
            async with AsyncSession(self.engine_of(shard)) as session:
                yield session
        except (OperationalError, InterfaceError, OSError) as exc:
            if not self.sharded:
                raise
            log.warning("shard %d unavailable: %s", shard, type(exc).__name__)
            raise ShardUnavailable(shard) from exc

    @contextlib.asynccontextmanager
    async def connection(self, shard: int) -> AsyncIterator[AsyncConnection]:
        """A connection of its own on a shard, as `session`'s."""
        async with self.session(shard) as session:
            yield await session.connection()

    async def rows(
        self, stmt: Executable, params: dict[str, Any] | None = None, *, shard: int = HOME
    ) -> Sequence[Row[Any]]:
        if not self.sharded:
            return await self._rows(stmt, params, HOME)
        if shard not in self.shards:
            return []  # an id of a shard this deployment does not list: nothing is there
        try:
            return await self._rows(stmt, params, shard)
        except (OperationalError, InterfaceError, OSError) as exc:
            log.warning("shard %d unavailable: %s", shard, type(exc).__name__)
            await self._drop(shard)
            raise ShardUnavailable(shard) from exc

    async def _rows(self, stmt: Executable, params: dict[str, Any] | None, shard: int) -> Sequence[Row[Any]]:
        engine = self.shards[shard]
        if not self.hold:
            async with engine.connect() as fresh:
                return (await fresh.execute(stmt, params)).all()
        lock = self._locks.get(shard)
        if lock is None:
            lock = self._locks[shard] = asyncio.Lock()
        async with lock:
            conn = self._conns.get(shard)
            if conn is None:
                conn = self._conns[shard] = await engine.connect()
            result = await conn.execute(stmt, params)
            return result.all()

    async def _drop(self, shard: int) -> None:
        """Give back a connection that failed, so the next statement to its shard takes a fresh one."""
        failed = self._conns.pop(shard, None)
        if failed is not None:
            with contextlib.suppress(Exception):
                await failed.invalidate()

    async def scalar(self, stmt: Executable, params: dict[str, Any] | None = None, *, shard: int = HOME) -> Any:
        found = await self.rows(stmt, params, shard=shard)
        return found[0][0] if found else None

    async def close(self) -> None:
        for shard, lock in list(self._locks.items()):
            async with lock:
                conn = self._conns.pop(shard, None)
                if conn is not None:
                    await conn.close()


def _by_id(rows: Iterable[Row[Any]], keys: Sequence[int], attr: str = "id") -> list[Row[Any] | None]:
    found = {getattr(r, attr): r for r in rows}
    return [found.get(k) for k in keys]


async def batch(loader: DataLoader[K, V], keys: list[K]) -> list[V]:
    """What `loader.load_many(keys)` answers (distinct keys), by one call of its batch function: no future, task
    and cache entry per key. For a list resolver that loads its whole page at once (prefetch_threads): the
    values go to the page's objects, and nothing else of the request asks for these keys again."""
    return await called(loader.load_fn, keys)


async def called(fn: Callable[[list[K]], Awaitable[Sequence[V | BaseException]]], keys: list[K]) -> list[V]:
    """`batch` for a batch function of no loader."""
    if not keys:
        return []
    found: list[V] = []
    for value in await fn(keys):
        if isinstance(value, BaseException):  # as load_many raises the first key's error
            raise value
        found.append(value)
    return found


def _loader(fn: Callable[[list[K]], Any]) -> DataLoader[K, Any]:
    return DataLoader(load_fn=fn, max_batch_size=1000)


def _none(key: object) -> None:
    return None


def _empty(key: object) -> list[Any]:
    return []


def _no_progress(key: object) -> Progress:
    return Progress(0, 0, 0)


def _no_window(key: tuple[int, pages.PageArgs]) -> pages.Window:
    return pages.cut([], THREAD_MESSAGE_KEYS, key[1])


def _first_shard(key: tuple[int, pages.PageArgs]) -> int:
    return shard_of(key[0])


class Loaders:
    """The DataLoaders of one request (or one batch of change-log events), each made on first use.

    Made lazily: a request (or a websocket's operation) uses a few of them, a subscription none.
    """

    def __init__(self, db: Reader, account_ids: frozenset[int]) -> None:
        self.db = db
        self.account_ids = account_ids
        self._on: dict[int, list[int]] = {}

    @cached_property
    def accounts(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._sharded(self._accounts, _none))

    @cached_property
    def folders(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._sharded(self._folders, _none))

    @cached_property
    def labels(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._sharded(self._labels, _none))

    @cached_property
    def threads(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._sharded(self._threads, _none))

    @cached_property
    def messages(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._sharded(self._messages, _none))

    @cached_property
    def attachments(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._sharded(self._attachments, _none))

    @cached_property
    def actions(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._sharded(self._actions, _none))

    @cached_property
    def action_message_ids(self) -> DataLoader[int, list[int]]:
        return _loader(self._sharded(self._action_message_ids, _empty))

    @cached_property
    def outbox(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._sharded(self._outbox, _none))

    @cached_property
    def bodies(self) -> DataLoader[int, Bodies | None]:
        return _loader(self._sharded(self._bodies, _none))

    @cached_property
    def message_folder_ids(self) -> DataLoader[int, list[int]]:
        return _loader(self._sharded(self._message_folder_ids, _empty))

    @cached_property
    def message_label_ids(self) -> DataLoader[int, list[int]]:
        return _loader(self._sharded(self._message_label_ids, _empty))

    @cached_property
    def message_attachments(self) -> DataLoader[int, list[Row[Any]]]:
        return _loader(self._sharded(self._message_attachments, _empty))

    @cached_property
    def folder_skipped(self) -> DataLoader[int, list[Row[Any]]]:
        return _loader(self._sharded(self._folder_skipped, _empty))

    @cached_property
    def thread_messages(self) -> DataLoader[tuple[int, pages.PageArgs], pages.Window]:
        return _loader(self._sharded(self._thread_messages, _no_window, _first_shard))

    @cached_property
    def last_messages(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._sharded(self._last_messages, _none))

    @cached_property
    def progress(self) -> DataLoader[int, Progress]:
        return _loader(self._sharded(self._progress, _no_progress))

    def on(self, shard: int) -> list[int]:
        """The viewer's accounts on this shard (all of them with a single shard), in order."""
        found = self._on.get(shard)
        if found is None:
            found = self._on[shard] = sorted(a for a in self.account_ids if not self.db.sharded or shard_of(a) == shard)
        return found

    def _mine(self, column: QueryableAttribute[int], shard: int) -> ColumnElement[bool]:
        return column.in_(self.on(shard))

    async def _rows(self, shard: int, stmt: Executable, params: dict[str, Any] | None = None) -> Sequence[Row[Any]]:
        return await self.db.rows(stmt, params, shard=shard)

    def _sharded(
        self,
        load: Callable[[int, list[K]], Awaitable[list[V]]],
        missing: Callable[[K], V],
        shard: Callable[[K], int] = shard_of,  # type: ignore[assignment]
    ) -> Callable[[list[K]], Awaitable[list[V | BaseException]]]:
        """A batch function over every shard: the keys grouped by the shard their ids name, one statement per
        shard (concurrently, each on its shard's connection). A key of a shard that is not configured, or that
        holds none of the viewer's accounts, is missing (read nothing); a shard that cannot be reached fails its
        keys alone with SHARD_UNAVAILABLE. A single shard: the one statement, as it always was."""

        async def batch(keys: list[K]) -> list[V | BaseException]:
            if not self.db.sharded:
                return list(await load(HOME, keys))
            groups: dict[int, list[int]] = defaultdict(list)
            for i, key in enumerate(keys):
                groups[shard(key)].append(i)
            found: list[V | BaseException] = [missing(k) for k in keys]

            async def one(number: int, places: list[int]) -> None:
                if number not in self.db.shards or not self.on(number):
                    return
                values: Sequence[V | BaseException]
                try:
                    values = await load(number, [keys[i] for i in places])
                except ShardUnavailable as exc:
                    values = [exc] * len(places)
                for i, value in zip(places, values, strict=True):
                    found[i] = value

            await asyncio.gather(*(one(n, places) for n, places in groups.items()))
            return found

        return batch

    async def _accounts(self, shard: int, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self._rows(
            shard, select(*ACCOUNT_COLUMNS).where(Account.id.in_(keys), self._mine(Account.id, shard))
        )
        return _by_id(rows, keys)

    async def _folders(self, shard: int, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self._rows(
            shard, select(Folder.__table__).where(Folder.id.in_(keys), self._mine(Folder.account_id, shard))
        )
        return _by_id(rows, keys)

    async def _labels(self, shard: int, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self._rows(
            shard, select(Label.__table__).where(Label.id.in_(keys), self._mine(Label.account_id, shard))
        )
        return _by_id(rows, keys)

    async def _threads(self, shard: int, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self._rows(
            shard, select(*THREAD_COLUMNS).where(Thread.id.in_(keys), self._mine(Thread.account_id, shard))
        )
        return _by_id(rows, keys)

    async def _messages(self, shard: int, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self._rows(
            shard, select(*MESSAGE_COLUMNS).where(Message.id.in_(keys), self._mine(Message.account_id, shard))
        )
        return _by_id(rows, keys)

    async def _attachments(self, shard: int, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self._rows(
            shard,
            select(Attachment.__table__, Message.account_id)
            .join(Message, Message.id == Attachment.message_id)
            .where(Attachment.id.in_(keys), self._mine(Message.account_id, shard)),
        )
        return _by_id(rows, keys)

    async def _actions(self, shard: int, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self._rows(
            shard, select(*ACTION_COLUMNS).where(Action.id.in_(keys), self._mine(Action.account_id, shard))
        )
        return _by_id(rows, keys)

    async def _action_message_ids(self, shard: int, keys: list[int]) -> list[list[int]]:
        """The messages of actions that name several (schema.actions.set_flags), by message id."""
        rows = await self._rows(
            shard,
            select(ActionMessage.action_id, ActionMessage.message_id)
            .join(Action, Action.id == ActionMessage.action_id)
            .where(ActionMessage.action_id.in_(keys), self._mine(Action.account_id, shard))
            .order_by(ActionMessage.action_id, ActionMessage.message_id),
        )
        found: dict[int, list[int]] = defaultdict(list)
        for r in rows:
            found[r.action_id].append(r.message_id)
        return [found.get(k, []) for k in keys]

    async def _outbox(self, shard: int, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self._rows(
            shard, select(*OUTBOX_COLUMNS).where(Outbox.id.in_(keys), self._mine(Outbox.account_id, shard))
        )
        return _by_id(rows, keys)

    async def _bodies(self, shard: int, keys: list[int]) -> list[Bodies | None]:
        rows = await self._rows(
            shard,
            select(Message.id, Message.text_body, Message.html_body).where(
                Message.id.in_(keys), self._mine(Message.account_id, shard)
            ),
        )
        found = {
            r.id: Bodies(
                r.text_body or "", zlib.decompress(r.html_body).decode("utf-8", "replace") if r.html_body else None
            )
            for r in rows
        }
        return [found.get(k) for k in keys]

    async def _message_folder_ids(self, shard: int, keys: list[int]) -> list[list[int]]:
        rows = await self._rows(
            shard,
            select(MessagePlace.message_id, MessagePlace.folder_id)
            .where(MessagePlace.message_id.in_(keys), self._mine(MessagePlace.account_id, shard))
            .distinct()
            .order_by(MessagePlace.message_id, MessagePlace.folder_id),
        )
        found: dict[int, list[int]] = defaultdict(list)
        for r in rows:
            found[r.message_id].append(r.folder_id)
        return [found.get(k, []) for k in keys]

    async def _message_label_ids(self, shard: int, keys: list[int]) -> list[list[int]]:
        rows = await self._rows(
            shard,
            select(MessageLabel.message_id, MessageLabel.label_id)
            .join(Message, Message.id == MessageLabel.message_id)
            .where(MessageLabel.message_id.in_(keys), self._mine(Message.account_id, shard))
            .order_by(MessageLabel.message_id, MessageLabel.label_id),
        )
        found: dict[int, list[int]] = defaultdict(list)
        for r in rows:
            found[r.message_id].append(r.label_id)
        return [found.get(k, []) for k in keys]

    async def _message_attachments(self, shard: int, keys: list[int]) -> list[list[Row[Any]]]:
        rows = await self._rows(
            shard,
            select(Attachment.__table__, Message.account_id)
            .join(Message, Message.id == Attachment.message_id)
            .where(Attachment.message_id.in_(keys), self._mine(Message.account_id, shard))
            .order_by(Attachment.message_id, Attachment.id),
        )
        found: dict[int, list[Row[Any]]] = defaultdict(list)
        for r in rows:
            found[r.message_id].append(r)
        return [found.get(k, []) for k in keys]

    async def _folder_skipped(self, shard: int, keys: list[int]) -> list[list[Row[Any]]]:
        """The messages the sync left out of each folder, under the folder's current UIDVALIDITY."""
        rows = await self._rows(
            shard,
            select(SkippedMessage.__table__)
            .join(Folder, Folder.id == SkippedMessage.folder_id)
            .where(
                SkippedMessage.folder_id.in_(keys),
                SkippedMessage.uidvalidity == Folder.uidvalidity,
                self._mine(SkippedMessage.account_id, shard),
            )
            .order_by(SkippedMessage.folder_id, SkippedMessage.uid),
        )
        found: dict[int, list[Row[Any]]] = defaultdict(list)
        for r in rows:
            found[r.folder_id].append(r)
        return [found.get(k, []) for k in keys]

    async def _thread_messages(self, shard: int, keys: list[tuple[int, pages.PageArgs]]) -> list[pages.Window]:
        """Pages of messages of many threads: one windowed statement per distinct page argument."""
        groups: dict[pages.PageArgs, list[int]] = defaultdict(list)
        for thread_id, page in keys:
            groups[page].append(thread_id)
        found: dict[tuple[int, pages.PageArgs], pages.Window] = {}
        for page, thread_ids in groups.items():
            # Ids numbered, the columns joined to those kept (see newest_messages).
            numbered = (
                select(
                    Message.id,
                    func.row_number()
                    .over(partition_by=Message.thread_id, order_by=pages.ordering(THREAD_MESSAGE_KEYS, page))
                    .label("rn"),
                )
                .where(
                    Message.thread_id.in_(thread_ids),
                    self._mine(Message.account_id, shard),
                    Message.orphaned_at.is_(None),
                    *pages.conditions(THREAD_MESSAGE_KEYS, page),
                )
                .subquery("numbered")
            )
            rows = await self._rows(
                shard,
                select(*MESSAGE_COLUMNS, MESSAGE_TIME.label("sort_at"), numbered.c.rn)
                .join_from(Message, numbered, numbered.c.id == Message.id)
                .where(numbered.c.rn <= page.size + 1)
                .order_by(Message.thread_id, numbered.c.rn),
            )
            per_thread: dict[int, list[Row[Any]]] = defaultdict(list)
            for r in rows:
                per_thread[r.thread_id].append(r)
            for thread_id in thread_ids:
                found[(thread_id, page)] = pages.cut(per_thread.get(thread_id, []), THREAD_MESSAGE_KEYS, page)
        return [found[k] for k in keys]

    async def _last_messages(
        self, shard: int, keys: list[int], columns: frozenset[str] | None = None
    ) -> list[Row[Any] | None]:
        """Each thread's newest message (a thread's messages in reverse), or None: one row per thread, where a
        page of one (thread_messages) reads two to tell whether more follow, and makes a cursor."""
        rows = await self._rows(shard, newest_messages(columns), {"threads": keys, "accounts": self.on(shard)})
        return _by_id(rows, keys, "thread_id")

    async def newest_of(self, thread_ids: list[int], columns: frozenset[str] | None) -> list[Row[Any] | None]:
        """What `batch(self.last_messages, thread_ids)` answers, reading only the message `columns` (None: all):
        for a page of threads whose selection of `lastMessage` is known (prefetch_threads)."""

        async def load(shard: int, keys: list[int]) -> list[Row[Any] | None]:
            return await self._last_messages(shard, keys, columns)

        sharded = self._sharded(load, _none)
        return await called(sharded, thread_ids)

    async def _progress(self, shard: int, keys: list[int]) -> list[Progress]:
        rows = await self._rows(
            shard,
            select(
                Folder.account_id,
                func.count().label("folders"),
                func.sum(func.if_(Folder.sync_state == "follow", 1, 0)).label("synced"),
                func.sum(Folder.total_count).label("messages"),
            )
            .where(Folder.account_id.in_(keys), self._mine(Folder.account_id, shard))
            .group_by(Folder.account_id),
        )
        found = {r.account_id: Progress(int(r.folders), int(r.synced or 0), int(r.messages or 0)) for r in rows}
        return [found.get(k, Progress(0, 0, 0)) for k in keys]
