"""The GraphQL object types: thin, typed, built from rows; relations go through the request's loaders."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast

import strawberry
from sqlalchemy.engine import Row
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField

from gateway import pages
from gateway.context import Context
from gateway.errors import INTERNAL_MESSAGE
from gateway.ids import to_global

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
Info = strawberry.Info[Context, None]


def described(description: str) -> Callable[[F], F]:
    """`@strawberry.field(description=...)`, typed (Strawberry's overload for it returns Any)."""
    return cast("Callable[[F], F]", strawberry.field(description=description))


def field_of(graphql_type: Any, description: str | None = None) -> Callable[[F], F]:
    """A field whose resolver may answer at once or later (an awaitable): a plain value spares an asyncio task
    per object, which on a page of 50 threads without labels is most of what the field costs."""
    return cast("Callable[[F], F]", strawberry.field(graphql_type=graphql_type, description=description))


class _NotLoaded:
    """Marks a relation no parent resolver prefetched."""


NOT_LOADED = _NotLoaded()
LAST_ONE = pages.PageArgs(1, True, None, None)


def utc(value: datetime | None) -> datetime | None:
    """Stored times are naive UTC; the API says so."""
    return None if value is None else value.replace(tzinfo=UTC)


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


@strawberry.type
class Address:
    name: str
    address: str


def addresses(values: Sequence[dict[str, str]] | None) -> list[Address]:
    return [Address(name=v.get("name") or "", address=v.get("address") or "") for v in values or ()]


@strawberry.type(description="How far the initial sync of an account has come.")
class SyncProgress:
    folders: int
    folders_synced: int = strawberry.field(description="Folders whose history is mirrored (following changes).")
    messages: int = strawberry.field(description="Messages mirrored, counted per folder.")


async def _present(loads: Awaitable[list[Any]]) -> list[Any]:
    return [x for x in await loads if x is not None]


@strawberry.type(description="A mailbox account being mirrored.")
class Account(Node):
    address: str
    sync_state: str = strawberry.field(description="pending, syncing, ready or auth_failed.")
    sync_error: str | None
    created_at: datetime
    pk: strawberry.Private[int]

    @classmethod
    def of(cls, row: Row[Any]) -> Account:
        return cls(
            id=strawberry.ID(to_global("Account", row.id)),
            address=row.address,
            sync_state=row.sync_state,
            sync_error=row.sync_error,
            created_at=utc(row.created_at) or datetime.now(UTC),
            pk=row.id,
        )

    @strawberry.field
    async def progress(self, info: Info) -> SyncProgress:
        p = await info.context.loaders.progress.load(self.pk)
        return SyncProgress(folders=p.folders, folders_synced=p.folders_synced, messages=p.messages)


@strawberry.type(description="An IMAP mailbox.")
class Folder(Node):
    name: str
    role: str | None = strawberry.field(description="inbox, sent, drafts, trash, junk, archive, all, ... or null.")
    delimiter: str | None
    message_count: int
    unread_count: int
    sync_state: str
    account_pk: strawberry.Private[int]

    @classmethod
    def of(cls, row: Row[Any]) -> Folder:
        return cls(
            id=strawberry.ID(to_global("Folder", row.id)),
            name=row.name,
            role=row.role,
            delimiter=row.delimiter,
            message_count=row.total_count,
            unread_count=row.unread_count,
            sync_state=row.sync_state,
            account_pk=row.account_id,
        )

    @strawberry.field
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.accounts.load(self.account_pk)
        return Account.of(_exists(row))


@strawberry.type(description="A Gmail label, or an IMAP keyword on other servers.")
class Label(Node):
    name: str
    kind: str = strawberry.field(description="keyword or gmail.")
    account_pk: strawberry.Private[int]

    @classmethod
    def of(cls, row: Row[Any]) -> Label:
        return cls(
            id=strawberry.ID(to_global("Label", row.id)),
            name=row.name,
            kind=row.kind,
            account_pk=row.account_id,
        )

    @strawberry.field
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.accounts.load(self.account_pk)
        return Account.of(_exists(row))


def _exists(row: Row[Any] | None) -> Row[Any]:
    # A parent the viewer could read has children it can read: a miss here is a bug, not a NOT_FOUND.
    if row is None:
        raise RuntimeError(INTERNAL_MESSAGE)
    return row


async def _folders(info: Info, ids: Sequence[int]) -> list[Folder]:
    rows = await _present(info.context.loaders.folders.load_many(list(ids)))
    return [Folder.of(r) for r in rows]


async def _labels(info: Info, ids: Sequence[int]) -> list[Label]:
    rows = await _present(info.context.loaders.labels.load_many(list(ids)))
    return [Label.of(r) for r in rows]


@strawberry.type(description="A file attached to (or inlined in) a message.")
class Attachment(Node):
    filename: str | None
    content_type: str
    size: int = strawberry.field(description="Size of the encoded part in the raw message, in bytes.")
    content_id: str | None
    inline: bool
    part_id: str = strawberry.field(description="The IMAP section number of the part (RFC 3501 §6.4.5).")
    row: strawberry.Private[Row[Any]]

    @classmethod
    def of(cls, row: Row[Any]) -> Attachment:
        return cls(
            id=strawberry.ID(to_global("Attachment", row.id)),
            filename=row.filename,
            content_type=row.content_type,
            size=row.size,
            content_id=row.content_id,
            inline=bool(row.inline),
            part_id=row.part_id,
            row=row,
        )

    @described("Where the decoded bytes stream from: a signed link, valid for a while.")
    def download_url(self, info: Info) -> str:
        return download_url(info, f"/attachments/{self.id}")

    @strawberry.field
    async def message(self, info: Info) -> Message:
        row = await info.context.loaders.messages.load(self.row.message_id)
        return Message.of(_exists(row))


def download_url(info: Info, path: str) -> str:
    ctx = info.context
    token_id = ctx.viewer.token_id if ctx.viewer is not None else 0
    base = str(ctx.request.base_url).rstrip("/") if ctx.request is not None else ""
    return base + ctx.signer.sign(path, token_id)


@strawberry.type(description="One message, whatever folders hold it.")
class Message(Node):
    subject: str
    from_: list[Address] = strawberry.field(name="from")
    to: list[Address]
    cc: list[Address]
    bcc: list[Address]
    reply_to: list[Address]
    date: datetime | None = strawberry.field(description="The Date header, in UTC (null when missing or unreadable).")
    received_at: datetime = strawberry.field(description="When the server received it (INTERNALDATE), in UTC.")
    unread: bool
    starred: bool
    answered: bool
    draft: bool
    snippet: str
    size: int
    message_id_header: str | None = strawberry.field(description="The Message-ID header.")
    in_reply_to: str | None
    references: list[str]
    has_attachments: bool
    malformed: bool = strawberry.field(description="The MIME structure is broken; fields are a best effort.")
    defects: list[str]
    row: strawberry.Private[Row[Any]]

    @classmethod
    def of(cls, row: Row[Any]) -> Message:
        return cls(
            id=strawberry.ID(to_global("Message", row.id)),
            subject=row.subject,
            from_=addresses(row.from_addrs),
            to=addresses(row.to_addrs),
            cc=addresses(row.cc_addrs),
            bcc=addresses(row.bcc_addrs),
            reply_to=addresses(row.reply_to_addrs),
            date=utc(row.date),
            received_at=utc(row.received_at) or datetime.now(UTC),
            unread=bool(row.unread),
            starred=bool(row.starred),
            answered=bool(row.answered),
            draft=bool(row.draft),
            snippet=row.snippet,
            size=row.size,
            message_id_header=row.message_id_header,
            in_reply_to=row.in_reply_to,
            references=(row.references or "").split(),
            has_attachments=bool(row.has_attachments),
            malformed=bool(row.malformed),
            defects=(row.defects or "").split(),
            row=row,
        )

    @strawberry.field
    async def text_body(self, info: Info) -> str:
        bodies = await info.context.loaders.bodies.load(self.row.id)
        return bodies.text if bodies is not None else ""

    @described("The HTML body as sent (not sanitized: render it in a sandbox).")
    async def html_body(self, info: Info) -> str | None:
        bodies = await info.context.loaders.bodies.load(self.row.id)
        return bodies.html if bodies is not None else None

    @strawberry.field
    async def attachments(self, info: Info) -> list[Attachment]:
        rows = await info.context.loaders.message_attachments.load(self.row.id)
        return [Attachment.of(r) for r in rows]

    @described("Folders holding the message (none while it is being moved).")
    async def folders(self, info: Info) -> list[Folder]:
        return await _folders(info, await info.context.loaders.message_folder_ids.load(self.row.id))

    @strawberry.field
    async def labels(self, info: Info) -> list[Label]:
        return await _labels(info, await info.context.loaders.message_label_ids.load(self.row.id))

    @strawberry.field
    async def thread(self, info: Info) -> Thread:
        row = await info.context.loaders.threads.load(self.row.thread_id)
        return Thread.of(_exists(row))

    @strawberry.field
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.accounts.load(self.row.account_id)
        return Account.of(_exists(row))

    @described("Where the raw RFC 5322 bytes stream from: a signed link, valid for a while.")
    def raw_url(self, info: Info) -> str:
        return download_url(info, f"/messages/{self.id}/raw")


@strawberry.type(description="A conversation.")
class Thread(Node):
    subject: str
    snippet: str
    participants: list[Address]
    message_count: int
    unread_count: int
    unread: bool
    starred: bool
    first_message_at: datetime | None
    last_message_at: datetime | None
    row: strawberry.Private[Row[Any]]
    # Filled by a list resolver that loaded them for the whole page at once (see prefetch_threads).
    last: strawberry.Private[Message | _NotLoaded | None] = NOT_LOADED
    label_list: strawberry.Private[list[Label] | _NotLoaded] = NOT_LOADED

    @classmethod
    def of(cls, row: Row[Any]) -> Thread:
        return cls(
            id=strawberry.ID(to_global("Thread", row.id)),
            subject=row.subject,
            snippet=row.snippet,
            participants=addresses(row.participants),
            message_count=row.message_count,
            unread_count=row.unread_count,
            unread=row.unread_count > 0,
            starred=bool(row.starred),
            first_message_at=utc(row.first_message_at),
            last_message_at=utc(row.last_message_at),
            row=row,
        )

    @field_of(list[Folder])
    def folders(self, info: Info) -> list[Folder] | Awaitable[list[Folder]]:
        ids = self.row.folder_ids
        return _folders(info, ids) if ids else []

    @field_of(list[Label])
    def labels(self, info: Info) -> list[Label] | Awaitable[list[Label]]:
        if not isinstance(self.label_list, _NotLoaded):
            return self.label_list
        ids = self.row.label_ids
        return _labels(info, ids) if ids else []

    @described("The thread's messages, oldest first.")
    async def messages(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Message]:
        page = pages.PageArgs.of(first, after, last, before)
        window = await info.context.loaders.thread_messages.load((self.row.id, page))
        total = self.row.message_count

        async def count() -> int:
            return int(total)

        return connection(window, Message.of, count)

    @field_of(Message | None, "The newest message of the thread.")
    def last_message(self, info: Info) -> Message | Awaitable[Message | None] | None:
        if not isinstance(self.last, _NotLoaded):
            return self.last
        return self._load_last(info)

    async def _load_last(self, info: Info) -> Message | None:
        window = await info.context.loaders.thread_messages.load((self.row.id, LAST_ONE))
        return Message.of(window.rows[-1]) if window.rows else None

    @strawberry.field
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.accounts.load(self.row.account_id)
        return Account.of(_exists(row))


def _selects(selections: Sequence[Any], path: Sequence[str]) -> bool:
    """Whether a selection set (with its fragments) selects the field path, e.g. ("edges", "node", "labels")."""
    if not path:
        return True
    for sel in selections:
        if isinstance(sel, InlineFragment | FragmentSpread):
            if _selects(sel.selections, path):
                return True
        elif isinstance(sel, SelectedField) and sel.name == path[0] and _selects(sel.selections, path[1:]):
            return True
    return False


async def prefetch_threads(info: Info, threads: Sequence[Thread]) -> None:
    """Load a page's last messages and labels in the list resolver, so the fields answer synchronously: the
    same statements as the loaders would run, minus two coroutines and tasks per thread."""
    fields = info.selected_fields[0].selections if info.selected_fields else []

    def wanted(name: str) -> bool:
        return _selects(fields, ("edges", "node", name)) or _selects(fields, ("nodes", name))

    loaders = info.context.loaders
    if threads and wanted("lastMessage"):
        windows = await loaders.thread_messages.load_many([(t.row.id, LAST_ONE) for t in threads])
        for thread, window in zip(threads, windows, strict=True):
            thread.last = Message.of(window.rows[-1]) if window.rows else None
    if threads and wanted("labels"):
        ids = sorted({lid for t in threads for lid in t.row.label_ids or ()})
        rows = {r.id: r for r in await _present(loaders.labels.load_many(ids))} if ids else {}
        for thread in threads:
            thread.label_list = [Label.of(rows[i]) for i in thread.row.label_ids or () if i in rows]


NODE_CLASSES: dict[str, Callable[[Row[Any]], Node]] = {
    "Account": Account.of,
    "Folder": Folder.of,
    "Label": Label.of,
    "Thread": Thread.of,
    "Message": Message.of,
    "Attachment": Attachment.of,
}
