"""The root Query: lists of one account's objects (keyset connections), search, and node lookups."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import strawberry
from sqlalchemy import ColumnElement, Select, bindparam, func, select
from sqlalchemy.engine import Row
from strawberry.dataloader import DataLoader

from gateway.errors import BadUserInput, not_found
from gateway.graphql import changes as feed
from gateway.graphql import pages
from gateway.graphql import search as searching
from gateway.graphql.context import Info
from gateway.graphql.filters import FilterKey, MessageFilter, ThreadFilter, message_conditions, thread_conditions
from gateway.graphql.loaders import (
    ACCOUNT_COLUMNS,
    MESSAGE_KEYS,
    OUTBOX_COLUMNS,
    THREAD_COLUMNS,
    message_columns_of,
)
from gateway.graphql.types.accounts import Account
from gateway.graphql.types.actions import Action
from gateway.graphql.types.changes import ChangePage
from gateway.graphql.types.fields import described
from gateway.graphql.types.folders import Folder, Label
from gateway.graphql.types.messages import Message, Thread, message_columns, prefetch_threads
from gateway.graphql.types.nodes import NODE_CLASSES
from gateway.graphql.types.operator import MANAGED_KEYS, ManagedAccount
from gateway.graphql.types.outbox import OutboxConnection, outbox_connection
from gateway.graphql.types.relay import Connection, Node, connection
from gateway.graphql.types.webhooks import HOOK_KEYS, Webhook
from gateway.ids import from_global, pk_of
from schema.actions import ActionState
from schema.changelog import ObjectType
from schema.models import Account as AccountRow
from schema.models import Action as ActionRow
from schema.models import Folder as FolderRow
from schema.models import Label as LabelRow
from schema.models import Message as MessageRow
from schema.models import Outbox as OutboxRow
from schema.models import Thread as ThreadRow
from schema.models import Webhook as WebhookRow
from schema.outbox import OutboxState
from schema.shards import HOME, shard_of

T = TypeVar("T")
MAX_NODES = 100

ACCOUNT_KEYS = (pages.Key(AccountRow.id, False, "id"),)
FOLDER_KEYS = (pages.Key(FolderRow.name, False, "name"), pages.Key(FolderRow.id, False, "id"))
LABEL_KEYS = (pages.Key(LabelRow.name, False, "name"), pages.Key(LabelRow.id, False, "id"))
THREAD_KEYS = (pages.Key(ThreadRow.last_message_at, True, "last_message_at"), pages.Key(ThreadRow.id, True, "id"))
ACTION_KEYS = (pages.Key(ActionRow.id, True, "id"),)
OUTBOX_KEYS = (pages.Key(OutboxRow.id, True, "id"),)


async def _page(
    info: Info,
    stmt: Select[Any],
    conditions: Sequence[ColumnElement[bool]],
    keys: Sequence[pages.Key],
    page: pages.PageArgs,
    make: Callable[[Row[Any]], T],
    shard: int = HOME,
) -> Connection[T]:
    """A page of one shard's rows (an account's objects live on its shard)."""
    db = info.context.db
    rows = await db.rows(pages.apply(stmt.where(*conditions), keys, page), shard=shard)

    async def count() -> int:
        subquery = stmt.where(*conditions).subquery()
        return int(await db.scalar(select(func.count()).select_from(subquery), shard=shard) or 0)

    return connection(pages.cut(rows, keys, page), make, count)


async def _kept_page(
    info: Info, kept: pages.KeptPage, pk: int, page: pages.PageArgs, make: Callable[[Row[Any]], T]
) -> Connection[T]:
    """A page of an account's rows by a kept statement (its account's shard)."""
    db = info.context.db
    shard = shard_of(pk)
    rows = await db.rows(kept.rows, {"account": pk, **pages.cursor_values(kept.keys, page)}, shard=shard)

    async def count() -> int:
        return int(await db.scalar(kept.counted, {"account": pk}, shard=shard) or 0)

    return connection(pages.cut(rows, kept.keys, page), make, count)


@functools.lru_cache(maxsize=256)
def _kept_messages(
    filter: FilterKey[MessageFilter], shape: pages.Shape, columns: frozenset[str] | None
) -> pages.KeptPage:
    """`messages`' page, per filter, page shape and the columns its selection reads (256 kept); BAD_USER_INPUT
    for a filter's bad id."""
    account = MessageRow.account_id == bindparam("account")
    base = select(*message_columns_of(columns, MESSAGE_KEYS))
    base = base.where(account, MessageRow.orphaned_at.is_(None), *message_conditions(filter.filter))
    return pages.kept_page(base, MESSAGE_KEYS, shape)


@functools.lru_cache(maxsize=256)
def _kept_threads(filter: FilterKey[ThreadFilter], shape: pages.Shape) -> pages.KeptPage:
    """`threads`' page, per filter and page shape (256 kept); BAD_USER_INPUT for a filter's bad id."""
    conditions = [
        ThreadRow.account_id == bindparam("account"),
        ThreadRow.message_count > 0,
        ThreadRow.last_message_at.is_not(None),
        *thread_conditions(filter.filter),
    ]
    return pages.kept_page(select(*THREAD_COLUMNS).where(*conditions), THREAD_KEYS, shape)


async def _merged_page(
    info: Info,
    stmt: Select[Any],
    conditions: Callable[[int], Sequence[ColumnElement[bool]] | None],
    keys: Sequence[pages.Key],
    page: pages.PageArgs,
    make: Callable[[Row[Any]], T],
) -> Connection[T]:
    """A page of rows of every shard, in one order: each shard reads its page (`conditions(shard)`: None for a
    shard with nothing to read), and the pages merge, the same rows and cursors as one database would give.
    Only for orders of numbers (ids): strings would sort by the server's collation, not Python's. With a single
    shard, the one statement of `_page`."""
    db = info.context.db
    if not db.sharded:
        only = conditions(HOME)
        assert only is not None
        return await _page(info, stmt, only, keys, page, make)
    wanted = {n: c for n in sorted(db.shards) if (c := conditions(n)) is not None}

    async def read(shard: int, where: Sequence[ColumnElement[bool]]) -> Sequence[Row[Any]]:
        return await db.rows(pages.apply(stmt.where(*where), keys, page), shard=shard)

    found = await asyncio.gather(*(read(n, c) for n, c in wanted.items()))
    # Each shard's rows come in the page's reading order; merged in that same order.
    rows = sorted(
        (r for part in found for r in part),
        key=lambda r: tuple(-getattr(r, k.name) if k.descending else getattr(r, k.name) for k in keys),
        reverse=page.backward,
    )

    async def count() -> int:
        counts = [
            await db.scalar(select(func.count()).select_from(stmt.where(*c).subquery()), shard=n)
            for n, c in wanted.items()
        ]
        return sum(int(c or 0) for c in counts)

    return connection(pages.cut(rows[: page.size + 1], keys, page), make, count)


@strawberry.type
class Query:
    @described("The accounts the token may read.")
    async def accounts(
        self,
        info: Info,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Account]:
        page = pages.PageArgs.of(first, after, last, before)
        info.context.account_ids  # noqa: B018 (raises UNAUTHENTICATED without a token)
        loaders = info.context.loaders

        def mine(shard: int) -> list[ColumnElement[bool]] | None:
            on = loaders.on(shard)
            return [AccountRow.id.in_(on)] if on or not loaders.db.sharded else None

        return await _merged_page(info, select(*ACCOUNT_COLUMNS), mine, ACCOUNT_KEYS, page, Account.of)

    @described("An account's folders, by name.")
    async def folders(
        self,
        info: Info,
        account_id: strawberry.ID,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Folder]:
        page = pages.PageArgs.of(first, after, last, before)
        pk = info.context.account_pk(account_id)
        stmt = select(FolderRow.__table__)
        return await _page(info, stmt, [FolderRow.account_id == pk], FOLDER_KEYS, page, Folder.of, shard_of(pk))

    @described("An account's labels (or IMAP keywords), by name.")
    async def labels(
        self,
        info: Info,
        account_id: strawberry.ID,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Label]:
        page = pages.PageArgs.of(first, after, last, before)
        pk = info.context.account_pk(account_id)
        stmt = select(LabelRow.__table__)
        return await _page(info, stmt, [LabelRow.account_id == pk], LABEL_KEYS, page, Label.of, shard_of(pk))

    @described("An account's threads, newest activity first.")
    async def threads(
        self,
        info: Info,
        account_id: strawberry.ID,
        filter: ThreadFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Thread]:
        page = pages.PageArgs.of(first, after, last, before)
        pk = info.context.account_pk(account_id)
        kept = _kept_threads(FilterKey.of(filter), pages.shape_of(page))
        found = await _kept_page(info, kept, pk, page, Thread.of)
        await prefetch_threads(info, [edge.node for edge in found.edges])
        return found

    @described("An account's messages, newest first (messages being moved are left out).")
    async def messages(
        self,
        info: Info,
        account_id: strawberry.ID,
        filter: MessageFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Message]:
        page = pages.PageArgs.of(first, after, last, before)
        pk = info.context.account_pk(account_id)
        kept = _kept_messages(FilterKey.of(filter), pages.shape_of(page), message_columns(info))
        return await _kept_page(info, kept, pk, page, Message.of)

    @described(
        "Search the account's mail (the local mirror) as a mail user types it. Words: all required, each matching"
        " the start of a word in the subject, addresses or body text; words too common or too short for the"
        ' full-text index (the, of, a, ...) are left out. "a phrase": its words next to each other. `OR` (in'
        " capitals) between terms: either one; it binds tighter than the space. `-term`: not this. `( )`: a group."
        " Operators (a value with spaces in quotes): from:, to: (To, Cc or Bcc), cc:, bcc: (`me` is the account's"
        " own address), subject:, in: (a folder's role or name: in:inbox, in:sent, in:Archive), label:,"
        " has:attachment, is:unread, is:read, is:starred. Best match first; with only operators or exclusions,"
        " newest first. A search that does not parse fails with BAD_USER_INPUT, whose extensions name a `reason`"
        " (UNKNOWN_OPERATOR, UNBALANCED_QUOTE, ...) and the `position` in the query where it lies."
    )
    async def search(
        self,
        info: Info,
        account_id: strawberry.ID,
        query: str,
        filter: MessageFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> Connection[Message]:
        page = pages.PageArgs.of(first, after, last, before)
        pk = info.context.account_pk(account_id)
        loaders = info.context.loaders

        async def address() -> str:
            account = await loaders.accounts.load(pk)
            if account is None:  # removed since the token was checked
                raise not_found("Account")
            return str(account.address)

        # The account's row is read only when the search names `me`, or when it finds nothing or fails (a removed
        # account is NOT_FOUND, as it always was: its messages went with it, so a search that finds one had it).
        shard = shard_of(pk)
        vocabulary = await info.context.services.vocabulary.get(shard, lambda: info.context.db.connection(shard))
        me: str | None = None
        try:
            searching.checked(query, vocabulary)
        except searching.NeedsMe:
            me = await address()
        except Exception:
            await address()
            raise
        found = searching.statement(query, vocabulary, me, filter, page, message_columns(info))
        results = await _kept_page(info, found, pk, page, Message.of)
        if not results.edges:
            await address()
        return results

    @described(
        "An account's changes after a cursor, oldest first (the delta feed). Without `after`: from the oldest kept."
        " A cursor older than the log keeps fails with CURSOR_EXPIRED: re-read, then start from changesCursor."
    )
    async def changes(
        self,
        info: Info,
        account_id: strawberry.ID,
        after: str | None = None,
        first: int | None = None,
        types: list[ObjectType] | None = None,
    ) -> ChangePage:
        return await feed.read_page(info, info.context.account_pk(account_id), after, first, types)

    @described("The account's newest change cursor: read the current state, then follow changes from here.")
    async def changes_cursor(self, info: Info, account_id: strawberry.ID) -> str:
        return await feed.current_cursor(info, info.context.account_pk(account_id))

    @described("An account's actions (what mutations queued for the mail server), newest first: poll their state here.")
    async def actions(
        self,
        info: Info,
        account_id: strawberry.ID,
        ids: list[strawberry.ID] | None = None,
        state: ActionState | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[Action]:
        page = pages.PageArgs.of(first, after)
        pk = info.context.account_pk(account_id)
        conditions = [ActionRow.account_id == pk]
        if ids is not None:
            if len(ids) > MAX_NODES:
                raise BadUserInput(f"at most {MAX_NODES} ids")
            conditions.append(ActionRow.id.in_([pk_of(gid, "Action") for gid in ids]))
        if state is not None:
            conditions.append(ActionRow.state == state.value)
        return await _page(info, select(ActionRow.__table__), conditions, ACTION_KEYS, page, Action.of, shard_of(pk))

    @described("An account's outbox (what sendMessage queued, and what became of it), newest first.")
    async def outbox(
        self,
        info: Info,
        account_id: strawberry.ID,
        states: list[OutboxState] | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> OutboxConnection:
        page = pages.PageArgs.of(first, after)
        pk = info.context.account_pk(account_id)
        conditions = [OutboxRow.account_id == pk]
        if states:
            conditions.append(OutboxRow.state.in_([state.value for state in states]))
        db = info.context.db
        stmt = select(*OUTBOX_COLUMNS).where(*conditions)
        shard = shard_of(pk)
        rows = await db.rows(pages.apply(stmt, OUTBOX_KEYS, page), shard=shard)

        async def count() -> int:
            return int(await db.scalar(select(func.count()).select_from(stmt.subquery()), shard=shard) or 0)

        return outbox_connection(pages.cut(rows, OUTBOX_KEYS, page), count)

    @described("An account's webhooks, oldest first (needs a token with the admin scope).")
    async def webhooks(
        self, info: Info, account_id: strawberry.ID, first: int | None = None, after: str | None = None
    ) -> Connection[Webhook]:
        info.context.admin_accounts()
        pk = info.context.account_pk(account_id)
        page = pages.PageArgs.of(first, after)
        db = info.context.db
        mine = WebhookRow.account_id == pk
        shard = shard_of(pk)
        rows = await db.rows(pages.apply(select(WebhookRow.__table__).where(mine), HOOK_KEYS, page), shard=shard)

        async def count() -> int:
            return int(await db.scalar(select(func.count()).where(mine), shard=shard) or 0)

        return connection(pages.cut(rows, HOOK_KEYS, page), Webhook.of, count)

    @described(
        "Every account (not only the token's), by id, with its servers and sync state; filter by sync state. "
        "Operator-scoped."
    )
    async def managed_accounts(
        self,
        info: Info,
        sync_states: list[str] | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[ManagedAccount]:
        info.context.operator()
        page = pages.PageArgs.of(first, after)
        conditions = []
        if sync_states:
            if len(sync_states) > 10:
                raise BadUserInput("at most 10 sync states")
            conditions.append(AccountRow.sync_state.in_(sync_states))
        return await _merged_page(
            info, select(*ACCOUNT_COLUMNS), lambda shard: conditions, MANAGED_KEYS, page, ManagedAccount.of
        )

    @described("Any object by its global id; null when it does not exist or is not yours.")
    async def node(self, info: Info, id: strawberry.ID) -> Node | None:
        found = await _nodes(info, [id])
        return found[0]

    @described(f"Objects by global id (at most {MAX_NODES}), in the order asked; null for misses.")
    async def nodes(self, info: Info, ids: list[strawberry.ID]) -> list[Node | None]:
        if len(ids) > MAX_NODES:
            raise BadUserInput(f"at most {MAX_NODES} ids")
        if info.context.db.sharded:
            # Each item completed on its own: an id of a shard that is down is null with SHARD_UNAVAILABLE at its
            # index, and the others answer (GraphQL completes awaitable list items one by one).
            return cast("list[Node | None]", [_node(info, kind, pk) for kind, pk in _decoded(info, ids)])
        return await _nodes(info, ids)


def _decoded(info: Info, ids: Sequence[strawberry.ID]) -> list[tuple[str, int]]:
    info.context.account_ids  # noqa: B018 (raises UNAUTHENTICATED without a token)
    return [from_global(gid) for gid in ids]


async def _node(info: Info, kind: str, pk: int) -> Node | None:
    row = await _loader(info, kind).load(pk)
    return None if row is None else NODE_CLASSES[kind](row)


NODE_LOADERS = {
    "Account": "accounts",
    "Folder": "folders",
    "Label": "labels",
    "Thread": "threads",
    "Message": "messages",
    "Attachment": "attachments",
    "Action": "actions",
    "OutboxEntry": "outbox",
}


def _loader(info: Info, kind: str) -> DataLoader[int, Row[Any] | None]:
    found: DataLoader[int, Row[Any] | None] = getattr(info.context.loaders, NODE_LOADERS[kind])
    return found


async def _nodes(info: Info, ids: Sequence[strawberry.ID]) -> list[Node | None]:
    decoded = _decoded(info, ids)
    rows = [_loader(info, kind).load(pk) for kind, pk in decoded]
    found: list[Node | None] = []
    for (kind, _), pending in zip(decoded, rows, strict=True):
        row = await pending
        found.append(None if row is None else NODE_CLASSES[kind](row))
    return found
