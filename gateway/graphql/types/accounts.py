"""Accounts and their sync progress."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import strawberry
from sqlalchemy.engine import Row

from gateway.graphql.context import Info
from gateway.graphql.types.fields import utc
from gateway.graphql.types.relay import Node
from gateway.ids import to_global


@strawberry.type(description="How far the initial sync of an account has come.")
class SyncProgress:
    folders: int
    folders_synced: int = strawberry.field(description="Folders whose history is mirrored (following changes).")
    messages: int = strawberry.field(description="Messages mirrored, counted per folder.")


@strawberry.type(description="A mailbox account being mirrored.")
class Account(Node):
    address: str
    sync_state: str = strawberry.field(
        description="pending, syncing, ready, error (retrying with backoff; see syncError), auth_failed (the "
        "server refused the credentials: waiting for new ones) or needs_consent (an OAuth2 account whose grant "
        "the provider refused, e.g. revoked: waiting for the user to consent again; see syncError)."
    )
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
