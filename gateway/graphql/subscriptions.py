"""Subscriptions (graphql-transport-ws on /graphql): the change feed, live, and thin filters over it.

`changes(accountId:, after:)` replays the log after the cursor, then follows it live. Every event carries its
cursor, so a client that reconnects with the last cursor it saw gets every change exactly once. The
convenience subscriptions (`messageAdded`, `threadUpdated`, `folderCountsChanged`, `syncProgress`) read the
same feed and carry a cursor too (resume them with `after` like `changes`).

Each subscriber waits on its account's doorbell (gateway.fanout) and re-reads the log from its own cursor.
Subscribers at the same cursor share the read and its event objects; the convenience events are built once
per change (`derived`), and every event is rendered once per distinct subscription (gateway.render). Over a
websocket, each resolver writes its events to the socket itself (gateway.render.send_direct) and yields only
those that must take graphql-core's and Strawberry's path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from functools import partial
from typing import Any, TypeVar, cast

import strawberry
from sqlalchemy import select

from gateway.graphql.changes import expired
from gateway.graphql.context import Info
from gateway.graphql.types.accounts import Account, SyncProgress
from gateway.graphql.types.changes import Change
from gateway.graphql.types.folders import Folder
from gateway.graphql.types.messages import Message, Thread
from gateway.ids import decode_change_cursor, pk_of, to_global
from gateway.render import send_direct
from schema.changelog import ObjectType, Op
from schema.models import Folder as FolderRow
from schema.shards import shard_of

F = TypeVar("F", bound=Callable[..., Any])
E = TypeVar("E")


def subscribed(description: str) -> Callable[[F], F]:
    """`@strawberry.subscription(description=...)`, typed."""
    return cast("Callable[[F], F]", strawberry.subscription(description=description))


async def follow(
    info: Info, account_id: int, after: str | None, wants: Callable[[Change], bool] | None = None
) -> AsyncGenerator[Change, None]:
    """Every change after the cursor (or, without one, from now on), in order, each once; never ends. With
    `wants`, those it accepts at least (the fan-out lets a subscriber sleep through rings whose changes it
    accepts none of: gateway.fanout._Gate).

    The events are the batch's (gateway.fanout.Batch), shared with every subscriber that read the same batch,
    and loaded through the batch's loaders: a long-lived subscription never serves a stale cached row, and
    holds no database connection while it waits.
    """
    fanout = info.context.services.fanout
    async with fanout.listen(account_id):
        if after is None:
            seq = await fanout.newest(account_id)
        else:
            seq = decode_change_cursor(after, account_id)
            if not await fanout.cursor_valid(account_id, seq):
                raise expired()
        while True:
            batch = await fanout.read(account_id, seq)
            if not batch.changes:
                seq = await fanout.wait(account_id, batch.mark, seq, wants) or seq
                continue
            if batch.changes[0].seq != seq + 1 and not await fanout.cursor_valid(account_id, seq):
                raise expired()  # expired while the subscriber lagged behind
            for change in batch.changes:
                seq = change.seq
                yield change
            if batch.complete:  # at once if a ring came since the read began
                seq = await fanout.wait(account_id, batch.mark, seq, wants) or seq


async def derived(change: Change, name: str, build: Callable[[], Awaitable[E | None]]) -> E | None:
    """The event `name` made from this change, built once for all the subscribers handed the change."""
    key = ("event", name)
    found = change.renders.get(key)
    if found is None:
        found = change.renders[key] = asyncio.ensure_future(build())
    return cast("E | None", await asyncio.shield(found))


@strawberry.type(description="A message arrived in the account (or in the folder asked for).")
class MessageAdded:
    cursor: str
    message: Message
    renders: strawberry.Private[dict[Any, Any]]


@strawberry.type(description="A thread was created, changed (flags, new messages) or deleted.")
class ThreadUpdated:
    cursor: str
    operation: Op
    thread_id: strawberry.ID
    renders: strawberry.Private[dict[Any, Any]]
    thread: Thread | None = strawberry.field(description="The thread now; null once deleted.")


@strawberry.type(description="A folder's message or unread count changed.")
class FolderCountsChanged:
    cursor: str
    folder: Folder
    renders: strawberry.Private[dict[Any, Any]]


@strawberry.type(description="The account's sync made progress (an account's or a folder's sync state changed).")
class SyncProgressChanged:
    cursor: str
    account: Account
    progress: SyncProgress
    renders: strawberry.Private[dict[Any, Any]]


def _of_type(*types: ObjectType) -> Callable[[Change], bool]:
    """The changes of these object types (what a convenience subscription looks at, a superset of what it sends)."""
    wanted = frozenset(types)
    return lambda change: change.object_type in wanted


def _folder_matches(state: dict[str, Any] | None, folder_ids: set[int] | None) -> bool:
    if folder_ids is None:
        return True
    found = (state or {}).get("folder_ids")
    return isinstance(found, list) and any(f in folder_ids for f in found)


async def _role_folders(info: Info, account_id: int, role: str) -> set[int]:
    rows = await info.context.db.rows(
        select(FolderRow.id).where(FolderRow.account_id == account_id, FolderRow.role == role),
        shard=shard_of(account_id),
    )
    await info.context.db.close()
    return {r.id for r in rows}


@strawberry.type
class Subscription:
    @subscribed(
        "The account's changes after `after` (without it: from now on), then live; each once, in order. With "
        "`types`, only changes of those kinds (e.g. [OUTBOX] to follow sends, [ACTION] to follow mutations)."
    )
    async def changes(
        self,
        info: Info,
        account_id: strawberry.ID,
        after: str | None = None,
        types: list[ObjectType] | None = None,
    ) -> AsyncGenerator[Change, None]:
        pk = info.context.account_pk(account_id)
        wanted = frozenset(types or ())

        def wants(change: Change) -> bool:
            return not wanted or change.object_type in wanted

        async with aclosing(follow(info, pk, after, wants if wanted else None)) as feed:
            async for change in feed:
                if wants(change):
                    await info.context.spend_event()
                    if not await send_direct(info.context, change):
                        yield change

    @subscribed("New messages of the account, or of one folder (by id or by role).")
    async def message_added(
        self,
        info: Info,
        account_id: strawberry.ID,
        folder_id: strawberry.ID | None = None,
        role: str | None = None,
        after: str | None = None,
    ) -> AsyncGenerator[MessageAdded, None]:
        pk = info.context.account_pk(account_id)
        folders: set[int] | None = None
        if folder_id is not None:
            folders = {pk_of(folder_id, "Folder")}
        if role is not None:
            by_role = await _role_folders(info, pk, role)
            folders = by_role if folders is None else folders & by_role

        def wants(change: Change) -> bool:
            new = change.object_type is ObjectType.MESSAGE and change.operation is Op.CREATE
            return new and _folder_matches(change.data, folders)

        async with aclosing(follow(info, pk, after, wants)) as feed:
            async for change in feed:
                if wants(change):
                    event = await derived(change, "messageAdded", partial(_message_added, change))
                    if event is not None:
                        await info.context.spend_event()
                        if not await send_direct(info.context, event):
                            yield event

    @subscribed("Threads of the account created, changed or deleted.")
    async def thread_updated(
        self, info: Info, account_id: strawberry.ID, after: str | None = None
    ) -> AsyncGenerator[ThreadUpdated, None]:
        pk = info.context.account_pk(account_id)
        async with aclosing(follow(info, pk, after, _of_type(ObjectType.THREAD))) as feed:
            async for change in feed:
                if change.object_type is ObjectType.THREAD:
                    event = await derived(change, "threadUpdated", partial(_thread_updated, change))
                    if event is not None:
                        await info.context.spend_event()
                        if not await send_direct(info.context, event):
                            yield event

    @subscribed("Folders of the account whose message or unread counts changed.")
    async def folder_counts_changed(
        self, info: Info, account_id: strawberry.ID, after: str | None = None
    ) -> AsyncGenerator[FolderCountsChanged, None]:
        pk = info.context.account_pk(account_id)
        counts: dict[int, tuple[object, object]] = {}
        async with aclosing(follow(info, pk, after, _of_type(ObjectType.FOLDER))) as feed:
            async for change in feed:
                if change.object_type is not ObjectType.FOLDER or change.data is None:
                    continue
                now = (change.data.get("total_count"), change.data.get("unread_count"))
                if counts.get(change.pk) == now:
                    continue
                counts[change.pk] = now
                event = await derived(change, "folderCountsChanged", partial(_folder_counts_changed, change))
                if event is not None:
                    await info.context.spend_event()
                    if not await send_direct(info.context, event):
                        yield event

    @subscribed("The account's sync progress, whenever an account or folder sync state moves.")
    async def sync_progress(
        self, info: Info, account_id: strawberry.ID, after: str | None = None
    ) -> AsyncGenerator[SyncProgressChanged, None]:
        pk = info.context.account_pk(account_id)
        async with aclosing(follow(info, pk, after, _of_type(ObjectType.ACCOUNT, ObjectType.FOLDER))) as feed:
            async for change in feed:
                if change.object_type in (ObjectType.ACCOUNT, ObjectType.FOLDER):
                    event = await derived(change, "syncProgress", partial(_sync_progress, change, pk))
                    if event is not None:
                        await info.context.spend_event()
                        if not await send_direct(info.context, event):
                            yield event


# The events of the convenience subscriptions, each built once per change (see `derived`).


async def _message_added(change: Change) -> MessageAdded | None:
    row = await change.loaders.messages.load(change.pk)
    return None if row is None else MessageAdded(cursor=change.cursor, message=Message.of(row), renders={})


async def _thread_updated(change: Change) -> ThreadUpdated:
    row = None
    if change.operation is not Op.DELETE:
        row = await change.loaders.threads.load(change.pk)
    return ThreadUpdated(
        cursor=change.cursor,
        operation=change.operation,
        thread_id=strawberry.ID(to_global("Thread", change.pk)),
        thread=None if row is None else Thread.of(row),
        renders={},
    )


async def _folder_counts_changed(change: Change) -> FolderCountsChanged | None:
    row = await change.loaders.folders.load(change.pk)
    return None if row is None else FolderCountsChanged(cursor=change.cursor, folder=Folder.of(row), renders={})


async def _sync_progress(change: Change, account_id: int) -> SyncProgressChanged | None:
    row = await change.loaders.accounts.load(account_id)
    if row is None:
        return None
    p = await change.loaders.progress.load(account_id)
    progress = SyncProgress(folders=p.folders, folders_synced=p.folders_synced, messages=p.messages)
    return SyncProgressChanged(cursor=change.cursor, account=Account.of(row), progress=progress, renders={})
