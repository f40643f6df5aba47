"""The request's database connection (`Reader`) and its DataLoaders, built per request: each loader turns
the keys one execution step asks for into one statement.

Every statement is scoped to the viewer's accounts, so an id of another account loads as None, exactly like
an id that does not exist. The number of statements of a query thus follows its shape (one per loader per
level), never its page size.
"""

from __future__ import annotations

import asyncio
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Executable, Select, bindparam, func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import QueryableAttribute
from strawberry.dataloader import DataLoader

from gateway.graphql import pages
from schema.models import (
    Account,
    Action,
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

K = TypeVar("K")
V = TypeVar("V")

# A message as lists show it: everything but the bodies, which only `textBody`/`htmlBody` load.
MESSAGE_COLUMNS = tuple(c for c in Message.__table__.c if c.name not in {"text_body", "html_body"})
# An account without its sealed secrets: passwords and OAuth2 tokens are never read into a request.
_SECRETS = {"imap_password", "smtp_password", "oauth2_refresh_token", "oauth2_access_token"}
ACCOUNT_COLUMNS = tuple(c for c in Account.__table__.c if c.name not in _SECRETS)
# An outbox entry without the message it holds twice (as delivered and as filed in Sent).
OUTBOX_COLUMNS = tuple(c for c in Outbox.__table__.c if c.name not in {"message", "sent_copy"})
# An action without its payload (what the executor performs and undoes, never shown): a mutation's payload lists
# up to 1,000 actions.
ACTION_COLUMNS = tuple(c for c in Action.__table__.c if c.name != "payload")

# A thread's messages read oldest first, by the same time the thread's aggregates use.
MESSAGE_TIME = func.coalesce(Message.date, Message.received_at)
THREAD_MESSAGE_KEYS = (pages.Key(MESSAGE_TIME, False, "sort_at"), pages.Key(Message.id, False, "id"))
NEWEST = pages.PageArgs(1, True, None, None)  # the last of a thread's messages: its newest


def _newest_messages() -> Select[Any]:
    """Each thread's newest message: the `threads` given, of the `accounts` given (expanding parameters). Built
    once: building it per request (a subquery of every message column, then its column collection) cost more
    CPU than running it."""
    newest = (
        select(
            *MESSAGE_COLUMNS,
            func.row_number()
            .over(partition_by=Message.thread_id, order_by=pages.ordering(THREAD_MESSAGE_KEYS, NEWEST))
            .label("rn"),
        )
        .where(
            Message.thread_id.in_(bindparam("threads", expanding=True)),
            Message.account_id.in_(bindparam("accounts", expanding=True)),
            Message.orphaned_at.is_(None),
        )
        .subquery()
    )
    return select(newest).where(newest.c.rn == 1)


NEWEST_MESSAGES = _newest_messages()


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
    """One connection per request, taken on the first statement and given back when the request ends.

    DataLoaders of one request dispatch concurrently; a connection runs one statement at a time, so
    statements queue on a lock instead of taking more connections from the pool.
    """

    def __init__(self, engine: AsyncEngine, *, hold: bool = True) -> None:
        self.engine = engine
        # hold=False: a connection per statement, given back at once (a batch of change-log events shared by
        # many subscribers has no request whose end would give it back).
        self.hold = hold
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def rows(self, stmt: Executable, params: dict[str, Any] | None = None) -> Sequence[Row[Any]]:
        if not self.hold:
            async with self.engine.connect() as conn:
                return (await conn.execute(stmt, params)).all()
        async with self._lock:
            if self._conn is None:
                self._conn = await self.engine.connect()
            result = await self._conn.execute(stmt, params)
            return result.all()

    async def scalar(self, stmt: Executable) -> Any:
        found = await self.rows(stmt)
        return found[0][0] if found else None

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await conn.close()


def _by_id(rows: Iterable[Row[Any]], keys: Sequence[int], attr: str = "id") -> list[Row[Any] | None]:
    found = {getattr(r, attr): r for r in rows}
    return [found.get(k) for k in keys]


def _loader(fn: Callable[[list[K]], Any]) -> DataLoader[K, Any]:
    return DataLoader(load_fn=fn, max_batch_size=1000)


class Loaders:
    """The DataLoaders of one request (or one batch of change-log events), each made on first use.

    Made lazily: a request (or a websocket's operation) uses a few of them, a subscription none.
    """

    def __init__(self, db: Reader, account_ids: frozenset[int]) -> None:
        self.db = db
        self.account_ids = account_ids

    @cached_property
    def accounts(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._accounts)

    @cached_property
    def folders(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._folders)

    @cached_property
    def labels(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._labels)

    @cached_property
    def threads(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._threads)

    @cached_property
    def messages(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._messages)

    @cached_property
    def attachments(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._attachments)

    @cached_property
    def actions(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._actions)

    @cached_property
    def outbox(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._outbox)

    @cached_property
    def bodies(self) -> DataLoader[int, Bodies | None]:
        return _loader(self._bodies)

    @cached_property
    def message_folder_ids(self) -> DataLoader[int, list[int]]:
        return _loader(self._message_folder_ids)

    @cached_property
    def message_label_ids(self) -> DataLoader[int, list[int]]:
        return _loader(self._message_label_ids)

    @cached_property
    def message_attachments(self) -> DataLoader[int, list[Row[Any]]]:
        return _loader(self._message_attachments)

    @cached_property
    def folder_skipped(self) -> DataLoader[int, list[Row[Any]]]:
        return _loader(self._folder_skipped)

    @cached_property
    def thread_messages(self) -> DataLoader[tuple[int, pages.PageArgs], pages.Window]:
        return _loader(self._thread_messages)

    @cached_property
    def last_messages(self) -> DataLoader[int, Row[Any] | None]:
        return _loader(self._last_messages)

    @cached_property
    def progress(self) -> DataLoader[int, Progress]:
        return _loader(self._progress)

    def _mine(self, column: QueryableAttribute[int]) -> ColumnElement[bool]:
        return column.in_(sorted(self.account_ids))

    async def _accounts(self, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self.db.rows(select(*ACCOUNT_COLUMNS).where(Account.id.in_(keys), self._mine(Account.id)))
        return _by_id(rows, keys)

    async def _folders(self, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self.db.rows(select(Folder.__table__).where(Folder.id.in_(keys), self._mine(Folder.account_id)))
        return _by_id(rows, keys)

    async def _labels(self, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self.db.rows(select(Label.__table__).where(Label.id.in_(keys), self._mine(Label.account_id)))
        return _by_id(rows, keys)

    async def _threads(self, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self.db.rows(select(Thread.__table__).where(Thread.id.in_(keys), self._mine(Thread.account_id)))
        return _by_id(rows, keys)

    async def _messages(self, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self.db.rows(select(*MESSAGE_COLUMNS).where(Message.id.in_(keys), self._mine(Message.account_id)))
        return _by_id(rows, keys)

    async def _attachments(self, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self.db.rows(
            select(Attachment.__table__, Message.account_id)
            .join(Message, Message.id == Attachment.message_id)
            .where(Attachment.id.in_(keys), self._mine(Message.account_id))
        )
        return _by_id(rows, keys)

    async def _actions(self, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self.db.rows(select(*ACTION_COLUMNS).where(Action.id.in_(keys), self._mine(Action.account_id)))
        return _by_id(rows, keys)

    async def _outbox(self, keys: list[int]) -> list[Row[Any] | None]:
        rows = await self.db.rows(select(*OUTBOX_COLUMNS).where(Outbox.id.in_(keys), self._mine(Outbox.account_id)))
        return _by_id(rows, keys)

    async def _bodies(self, keys: list[int]) -> list[Bodies | None]:
        rows = await self.db.rows(
            select(Message.id, Message.text_body, Message.html_body).where(
                Message.id.in_(keys), self._mine(Message.account_id)
            )
        )
        found = {
            r.id: Bodies(
                r.text_body or "", zlib.decompress(r.html_body).decode("utf-8", "replace") if r.html_body else None
            )
            for r in rows
        }
        return [found.get(k) for k in keys]

    async def _message_folder_ids(self, keys: list[int]) -> list[list[int]]:
        rows = await self.db.rows(
            select(MessagePlace.message_id, MessagePlace.folder_id)
            .where(MessagePlace.message_id.in_(keys), self._mine(MessagePlace.account_id))
            .distinct()
            .order_by(MessagePlace.message_id, MessagePlace.folder_id)
        )
        found: dict[int, list[int]] = defaultdict(list)
        for r in rows:
            found[r.message_id].append(r.folder_id)
        return [found.get(k, []) for k in keys]

    async def _message_label_ids(self, keys: list[int]) -> list[list[int]]:
        rows = await self.db.rows(
            select(MessageLabel.message_id, MessageLabel.label_id)
            .join(Message, Message.id == MessageLabel.message_id)
            .where(MessageLabel.message_id.in_(keys), self._mine(Message.account_id))
            .order_by(MessageLabel.message_id, MessageLabel.label_id)
        )
        found: dict[int, list[int]] = defaultdict(list)
        for r in rows:
            found[r.message_id].append(r.label_id)
        return [found.get(k, []) for k in keys]

    async def _message_attachments(self, keys: list[int]) -> list[list[Row[Any]]]:
        rows = await self.db.rows(
            select(Attachment.__table__, Message.account_id)
            .join(Message, Message.id == Attachment.message_id)
            .where(Attachment.message_id.in_(keys), self._mine(Message.account_id))
            .order_by(Attachment.message_id, Attachment.id)
        )
        found: dict[int, list[Row[Any]]] = defaultdict(list)
        for r in rows:
            found[r.message_id].append(r)
        return [found.get(k, []) for k in keys]

    async def _folder_skipped(self, keys: list[int]) -> list[list[Row[Any]]]:
        """The messages the sync left out of each folder, under the folder's current UIDVALIDITY."""
        rows = await self.db.rows(
            select(SkippedMessage.__table__)
            .join(Folder, Folder.id == SkippedMessage.folder_id)
            .where(
                SkippedMessage.folder_id.in_(keys),
                SkippedMessage.uidvalidity == Folder.uidvalidity,
                self._mine(SkippedMessage.account_id),
            )
            .order_by(SkippedMessage.folder_id, SkippedMessage.uid)
        )
        found: dict[int, list[Row[Any]]] = defaultdict(list)
        for r in rows:
            found[r.folder_id].append(r)
        return [found.get(k, []) for k in keys]

    async def _thread_messages(self, keys: list[tuple[int, pages.PageArgs]]) -> list[pages.Window]:
        """Pages of messages of many threads: one windowed statement per distinct page argument."""
        groups: dict[pages.PageArgs, list[int]] = defaultdict(list)
        for thread_id, page in keys:
            groups[page].append(thread_id)
        found: dict[tuple[int, pages.PageArgs], pages.Window] = {}
        for page, thread_ids in groups.items():
            numbered = (
                select(
                    *MESSAGE_COLUMNS,
                    MESSAGE_TIME.label("sort_at"),
                    func.row_number()
                    .over(partition_by=Message.thread_id, order_by=pages.ordering(THREAD_MESSAGE_KEYS, page))
                    .label("rn"),
                )
                .where(
                    Message.thread_id.in_(thread_ids),
                    self._mine(Message.account_id),
                    Message.orphaned_at.is_(None),
                    *pages.conditions(THREAD_MESSAGE_KEYS, page),
                )
                .subquery()
            )
            rows = await self.db.rows(
                select(numbered).where(numbered.c.rn <= page.size + 1).order_by(numbered.c.thread_id, numbered.c.rn)
            )
            per_thread: dict[int, list[Row[Any]]] = defaultdict(list)
            for r in rows:
                per_thread[r.thread_id].append(r)
            for thread_id in thread_ids:
                found[(thread_id, page)] = pages.cut(per_thread.get(thread_id, []), THREAD_MESSAGE_KEYS, page)
        return [found[k] for k in keys]

    async def _last_messages(self, keys: list[int]) -> list[Row[Any] | None]:
        """Each thread's newest message (a thread's messages in reverse), or None: one row per thread, where a
        page of one (thread_messages) reads two to tell whether more follow, and makes a cursor."""
        rows = await self.db.rows(NEWEST_MESSAGES, {"threads": keys, "accounts": sorted(self.account_ids)})
        return _by_id(rows, keys, "thread_id")

    async def _progress(self, keys: list[int]) -> list[Progress]:
        rows = await self.db.rows(
            select(
                Folder.account_id,
                func.count().label("folders"),
                func.sum(func.if_(Folder.sync_state == "follow", 1, 0)).label("synced"),
                func.sum(Folder.total_count).label("messages"),
            )
            .where(Folder.account_id.in_(keys), self._mine(Folder.account_id))
            .group_by(Folder.account_id)
        )
        found = {r.account_id: Progress(int(r.folders), int(r.synced or 0), int(r.messages or 0)) for r in rows}
        return [found.get(k, Progress(0, 0, 0)) for k in keys]
