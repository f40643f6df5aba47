"""Folders (IMAP mailboxes) and labels (Gmail labels, IMAP keywords)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import strawberry
from sqlalchemy.engine import Row

from gateway.graphql.context import Info
from gateway.graphql.types.accounts import Account
from gateway.graphql.types.fields import existing, present
from gateway.graphql.types.relay import Node
from gateway.ids import to_global


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
        return Account.of(existing(row))


async def folders_of(info: Info, ids: Sequence[int]) -> list[Folder]:
    rows = await present(info.context.loaders.folders.load_many(list(ids)))
    return [Folder.of(r) for r in rows]


async def labels_of(info: Info, ids: Sequence[int]) -> list[Label]:
    rows = await present(info.context.loaders.labels.load_many(list(ids)))
    return [Label.of(r) for r in rows]
