"""Folders (IMAP mailboxes) and labels (Gmail labels, IMAP keywords)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy.engine import Row

from gateway.graphql.context import Info
from gateway.graphql.types.accounts import Account
from gateway.graphql.types.fields import described, existing, present, utc
from gateway.graphql.types.relay import Node
from gateway.ids import pk_of, to_global


@strawberry.type(description="A message of a folder that the sync left out, and why; the rest of the folder is synced.")
class SkippedMessage:
    uid: int = strawberry.field(description="Its IMAP UID in the folder.")
    size: int | None = strawberry.field(description="Its size in bytes as the server reported it (RFC822.SIZE).")
    kind: str = strawberry.field(description="too_large (over the size the sync downloads) or unstorable.")
    reason: str
    skipped_at: datetime

    @classmethod
    def of(cls, row: Row[Any]) -> SkippedMessage:
        when = utc(row.skipped_at)
        assert when is not None
        # GraphQL Int is 32 bits; a server may report any size at all.
        size = None if row.size is None else min(row.size, 2**31 - 1)
        return cls(uid=row.uid, size=size, kind=row.kind, reason=row.reason, skipped_at=when)


@strawberry.type(description="An IMAP mailbox.")
class Folder(Node):
    name: str
    role: str | None = strawberry.field(description="inbox, sent, drafts, trash, junk, archive, all, ... or null.")
    delimiter: str | None
    message_count: int
    unread_count: int
    sync_state: str
    sync_error: str | None = strawberry.field(
        description="Why the last sync of this folder failed (the server's answer), or null; the folder is retried "
        "with backoff while the account's other folders sync."
    )
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
            sync_error=row.sync_error,
            account_pk=row.account_id,
        )

    @strawberry.field
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.accounts.load(self.account_pk)
        return Account.of(existing(row))

    @described("Messages the sync left out of this folder, with why (never silently missing).")
    async def skipped_messages(self, info: Info) -> list[SkippedMessage]:
        rows = await info.context.loaders.folder_skipped.load(pk_of(self.id, "Folder"))
        return [SkippedMessage.of(r) for r in rows]


@strawberry.type(description="A Gmail label, or an IMAP keyword on other servers.")
class Label(Node):
    name: str
    kind: str = strawberry.field(description="keyword or gmail.")
    role: str | None = strawberry.field(
        description="A Gmail system label's folder role: inbox (\\Inbox), sent, drafts, flagged (\\Starred), important."
    )
    account_pk: strawberry.Private[int]

    @classmethod
    def of(cls, row: Row[Any]) -> Label:
        c = row._mapping  # as Message.of
        return cls(
            id=strawberry.ID(to_global("Label", c["id"])),
            name=c["name"],
            kind=c["kind"],
            role=c["role"],
            account_pk=c["account_id"],
        )

    @strawberry.field
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.accounts.load(self.account_pk)
        return Account.of(existing(row))


async def folders_of(info: Info, ids: Sequence[int]) -> list[Folder]:
    rows = await present(info.context.loaders.folders.load_many(list(ids)))
    return [Folder.of(r) for r in rows]


async def labels_of(info: Info, ids: Sequence[int]) -> list[Label]:
    rows = await present(info.context.loaders.labels.load_many(list(ids)))
    return [Label.of(r) for r in rows]
