"""Messages, their attachments and addresses, and threads (a thread lists its messages, a message names its
thread: one family, one module)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import strawberry
from graphql import FieldNode, FragmentDefinitionNode, FragmentSpreadNode, InlineFragmentNode, SelectionNode
from sqlalchemy.engine import Row, RowMapping
from strawberry.types.base import get_object_definition
from strawberry.utils.str_converters import to_camel_case

from gateway.graphql import pages
from gateway.graphql.context import Info
from gateway.graphql.loaders import batch, decoded
from gateway.graphql.types.accounts import Account
from gateway.graphql.types.fields import described, existing, field_of, utc
from gateway.graphql.types.folders import Folder, Label, folders_of, labels_of
from gateway.graphql.types.relay import Connection, Node, connection
from gateway.identity import ByIdentity
from gateway.ids import to_global


class _NotLoaded:
    """Marks a relation no parent resolver prefetched."""


NOT_LOADED = _NotLoaded()


@strawberry.type
class Address:
    name: str
    address: str


def addresses(values: Sequence[dict[str, str]] | None) -> list[Address]:
    return [Address(name=v.get("name") or "", address=v.get("address") or "") for v in values or ()]


def address_list(name: str) -> Callable[[Any], list[Address]]:
    """The resolver of a message's address list: its row's JSON column, as Addresses. It reads only the object,
    so the executor calls it directly (gateway.graphql.executor)."""

    def resolve(self: Any) -> list[Address]:
        return addresses(decoded(self.columns[name]))

    resolve.reads = name  # type: ignore[attr-defined]  # see message_columns
    return resolve


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
        return Message.of(existing(row))


def download_url(info: Info, path: str) -> str:
    ctx = info.context
    token_id = ctx.viewer.token_id if ctx.viewer is not None else 0
    return str(ctx.request.base_url).rstrip("/") + ctx.services.signer.sign(path, token_id)


def column(name: str, convert: Callable[[Any], Any] | None = None) -> Callable[[Any], Any]:
    """The resolver of a message's plain field: its row's column (through `convert`), read only when the field is
    asked for. It reads only the object, so the executor calls it directly (gateway.graphql.executor); a page of
    50 messages showing five fields converts five columns of each, not eighteen (Message.of did, 0.4 ms a page)."""
    if convert is None:

        def read(self: Any) -> Any:
            return self.columns[name]

        read.reads = name  # type: ignore[attr-defined]  # see message_columns
        return read

    def converted(self: Any) -> Any:
        return convert(self.columns[name])

    converted.reads = name  # type: ignore[attr-defined]
    return converted


def _words(value: str | None) -> list[str]:
    return (value or "").split()


def _received(value: datetime | None) -> datetime:
    return utc(value) or datetime.now(UTC)


@strawberry.type(description="One message, whatever folders hold it.")
class Message(Node):
    subject: str = strawberry.field(resolver=column("subject"))

    # Decoded only when asked for (a page of messages usually shows only `from`).
    from_: list[Address] = strawberry.field(name="from", resolver=address_list("from_addrs"))
    to: list[Address] = strawberry.field(resolver=address_list("to_addrs"))
    cc: list[Address] = strawberry.field(resolver=address_list("cc_addrs"))
    bcc: list[Address] = strawberry.field(resolver=address_list("bcc_addrs"))
    reply_to: list[Address] = strawberry.field(resolver=address_list("reply_to_addrs"))
    date: datetime | None = strawberry.field(
        description="The Date header, in UTC (null when missing or unreadable).", resolver=column("date", utc)
    )
    received_at: datetime = strawberry.field(
        description="When the server received it (INTERNALDATE), in UTC.", resolver=column("received_at", _received)
    )
    unread: bool = strawberry.field(resolver=column("unread", bool))
    starred: bool = strawberry.field(resolver=column("starred", bool))
    answered: bool = strawberry.field(resolver=column("answered", bool))
    draft: bool = strawberry.field(resolver=column("draft", bool))
    snippet: str = strawberry.field(resolver=column("snippet"))
    size: int = strawberry.field(resolver=column("size"))
    message_id_header: str | None = strawberry.field(
        description="The Message-ID header.", resolver=column("message_id_header")
    )
    in_reply_to: str | None = strawberry.field(resolver=column("in_reply_to"))
    references: list[str] = strawberry.field(resolver=column("references", _words))
    has_attachments: bool = strawberry.field(resolver=column("has_attachments", bool))
    malformed: bool = strawberry.field(
        description="The MIME structure is broken; fields are a best effort.", resolver=column("malformed", bool)
    )
    defects: list[str] = strawberry.field(resolver=column("defects", _words))
    row: strawberry.Private[Row[Any]]
    # The row's mapping, made once: several times faster to read than the row's attributes.
    columns: strawberry.Private[RowMapping]

    @classmethod
    def of(cls, row: Row[Any]) -> Message:
        columns = row._mapping
        return cls(id=strawberry.ID(to_global("Message", columns["id"])), row=row, columns=columns)

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
        return await folders_of(info, await info.context.loaders.message_folder_ids.load(self.row.id))

    @strawberry.field
    async def labels(self, info: Info) -> list[Label]:
        return await labels_of(info, await info.context.loaders.message_label_ids.load(self.row.id))

    @strawberry.field
    async def thread(self, info: Info) -> Thread:
        row = await info.context.loaders.threads.load(self.row.thread_id)
        return Thread.of(existing(row))

    @strawberry.field
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.accounts.load(self.row.account_id)
        return Account.of(existing(row))

    @described("Where the raw RFC 5322 bytes stream from: a signed link, valid for a while.")
    def raw_url(self, info: Info) -> str:
        return download_url(info, f"/messages/{self.id}/raw")


# What a message's fields read of its row besides these three, which every message reads: its id (the global
# id), its account and its thread (the relations' resolvers, and the loaders of its bodies, attachments, folders
# and labels, read by its id).
ALWAYS_READ = frozenset({"id", "account_id", "thread_id"})
# Fields that read nothing more (their resolvers read only the three above).
_READS_NOTHING_MORE = {
    "text_body",
    "html_body",
    "attachments",
    "folders",
    "labels",
    "thread",
    "account",
    "raw_url",
    "id",
}


def _field_columns() -> dict[str, frozenset[str]]:
    """Per GraphQL field of Message, the row's columns it reads (with ALWAYS_READ): a plain field's is named by
    its resolver (`column`, `address_list`). A field that is neither (one added later) is left out, so a
    selection that asks for it reads every column (message_columns)."""
    found = {}
    for field in get_object_definition(Message, strict=True).fields:
        resolver = field.base_resolver
        reads = getattr(resolver.wrapped_func, "reads", None) if resolver is not None else None
        name = field.graphql_name or to_camel_case(field.python_name)
        if reads is not None:
            found[name] = ALWAYS_READ | {reads}
        elif field.python_name in _READS_NOTHING_MORE:
            found[name] = ALWAYS_READ
    found["__typename"] = ALWAYS_READ
    return found


FIELD_COLUMNS = _field_columns()
# Per list field's nodes in a parsed document (gateway.identity): the columns its messages' selection reads.
_SELECTIONS: ByIdentity[FieldNode, frozenset[str] | None] = ByIdentity()


def message_columns(info: Info) -> frozenset[str] | None:
    """The columns of `messages` that a connection of messages' selection reads (its edges' nodes and its
    nodes, through fragments), or None for every column: a field of Message that FIELD_COLUMNS does not know.
    Directives are not read (a field under @skip counts): the set is made once per list field of a parsed
    document and kept while the document lives (Strawberry's parser cache hands the same nodes back)."""
    raw = info._raw_info

    def make() -> frozenset[str] | None:
        return _columns_of(_page_nodes(raw.field_nodes, raw.fragments), raw.fragments)

    return _SELECTIONS.kept(raw.field_nodes[0], make)


def _fields(selections: Sequence[SelectionNode], fragments: dict[str, FragmentDefinitionNode]) -> list[FieldNode]:
    """The fields of a selection set, through inline fragments and fragment spreads."""
    found: list[FieldNode] = []
    for selection in selections:
        if isinstance(selection, FieldNode):
            found.append(selection)
        elif isinstance(selection, InlineFragmentNode):
            found.extend(_fields(selection.selection_set.selections, fragments))
        elif isinstance(selection, FragmentSpreadNode) and selection.name.value in fragments:
            found.extend(_fields(fragments[selection.name.value].selection_set.selections, fragments))
    return found


def _below(
    parents: Sequence[FieldNode], path: Sequence[str], fragments: dict[str, FragmentDefinitionNode]
) -> list[FieldNode]:
    """The fields at `path` below the `parents` (each step: the fields of that name among the selections)."""
    found = list(parents)
    for name in path:
        found = [
            child
            for parent in found
            if parent.selection_set is not None
            for child in _fields(parent.selection_set.selections, fragments)
            if child.name.value == name
        ]
    return found


def _page_nodes(connection: Sequence[FieldNode], fragments: dict[str, FragmentDefinitionNode]) -> list[FieldNode]:
    """A connection field's objects: its edges' nodes and its nodes."""
    return [*_below(connection, ("edges", "node"), fragments), *_below(connection, ("nodes",), fragments)]


def _columns_of(messages: Sequence[FieldNode], fragments: dict[str, FragmentDefinitionNode]) -> frozenset[str] | None:
    """The columns the selections of these message fields read; None when one names a field FIELD_COLUMNS does
    not know."""
    columns = set(ALWAYS_READ)
    for message in messages:
        if message.selection_set is None:
            continue
        for field in _fields(message.selection_set.selections, fragments):
            reads = FIELD_COLUMNS.get(field.name.value)
            if reads is None:
                return None
            columns |= reads
    return frozenset(columns)


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
        c = row._mapping  # as Message.of
        unread_count = c["unread_count"]
        return cls(
            id=strawberry.ID(to_global("Thread", c["id"])),
            subject=c["subject"],
            snippet=c["snippet"],
            participants=addresses(c["participants"]),
            message_count=c["message_count"],
            unread_count=unread_count,
            unread=unread_count > 0,
            starred=bool(c["starred"]),
            first_message_at=utc(c["first_message_at"]),
            last_message_at=utc(c["last_message_at"]),
            row=row,
        )

    @field_of(list[Folder])
    def folders(self, info: Info) -> list[Folder] | Awaitable[list[Folder]]:
        ids = decoded(self.row.folder_ids)
        return folders_of(info, ids) if ids else []

    @field_of(list[Label], prefetched=("label_list", NOT_LOADED))
    def labels(self, info: Info) -> list[Label] | Awaitable[list[Label]]:
        if not isinstance(self.label_list, _NotLoaded):
            return self.label_list
        ids = self.row.label_ids
        return labels_of(info, ids) if ids else []

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

    @field_of(Message | None, "The newest message of the thread.", prefetched=("last", NOT_LOADED))
    def last_message(self, info: Info) -> Message | Awaitable[Message | None] | None:
        if not isinstance(self.last, _NotLoaded):
            return self.last
        return self._load_last(info)

    async def _load_last(self, info: Info) -> Message | None:
        row = await info.context.loaders.last_messages.load(self.row.id)
        return Message.of(row) if row is not None else None

    @strawberry.field
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.accounts.load(self.row.account_id)
        return Account.of(existing(row))


class _ThreadPage(NamedTuple):
    """What a connection of threads' selection asks of its threads that a list resolver loads beforehand."""

    last_message: bool
    labels: bool
    last_message_columns: frozenset[str] | None  # as message_columns, for its `lastMessage`


# Per list field's nodes in a parsed document (gateway.identity), as _SELECTIONS.
_THREAD_PAGES: ByIdentity[FieldNode, _ThreadPage] = ByIdentity()


def _thread_page(info: Info) -> _ThreadPage:
    raw = info._raw_info

    def make() -> _ThreadPage:
        threads = _page_nodes(raw.field_nodes, raw.fragments)
        last = _below(threads, ("lastMessage",), raw.fragments)
        labels = _below(threads, ("labels",), raw.fragments)
        return _ThreadPage(bool(last), bool(labels), _columns_of(last, raw.fragments))

    return _THREAD_PAGES.kept(raw.field_nodes[0], make)


async def prefetch_threads(info: Info, threads: Sequence[Thread]) -> None:
    """Load a page's last messages and labels in the list resolver, so the fields answer synchronously: the
    same statements as the loaders would run, by their batch functions called directly (no future or task per
    thread); the last messages read only the columns their selection asks for. What the selection asks is
    found once per parsed document (_thread_page)."""
    wanted = _thread_page(info)
    loaders = info.context.loaders
    if threads and wanted.last_message:
        newest = await loaders.newest_of([t.row.id for t in threads], wanted.last_message_columns)
        for thread, row in zip(threads, newest, strict=True):
            thread.last = Message.of(row) if row is not None else None
    if threads and wanted.labels:
        ids = sorted({lid for t in threads for lid in t.row.label_ids or ()})
        rows = {r.id: r for r in await batch(loaders.labels, ids) if r is not None}
        for thread in threads:
            thread.label_list = [Label.of(rows[i]) for i in thread.row.label_ids or () if i in rows]
