"""Webhooks and their delivery log, as the admin-scoped `webhooks` query and the webhook mutations show them.

Webhook ids are global ids of their own kind (gateway.ids.webhook_pk): not Relay nodes, `node(id:)` does not
serve them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import func, select
from sqlalchemy.engine import Row

from gateway.graphql import pages
from gateway.graphql.context import Info
from gateway.graphql.types.fields import described, utc
from gateway.graphql.types.relay import Connection, connection
from gateway.ids import to_global
from schema.models import Webhook as WebhookRow
from schema.models import WebhookDelivery as DeliveryRow
from schema.shards import shard_of

HOOK_KEYS = (pages.Key(WebhookRow.id, False, "id"),)
DELIVERY_KEYS = (pages.Key(DeliveryRow.id, True, "id"),)


@strawberry.type(description="One HTTP attempt to deliver change-log events to a webhook.")
class WebhookDelivery:
    id: strawberry.ID
    first_seq: int = strawberry.field(description="The first change-log seq the attempt carried.")
    last_seq: int
    attempt: int = strawberry.field(description="1 for the first attempt at these events, then 2, 3, ...")
    status_code: int | None = strawberry.field(description="The receiver's HTTP status; null when none came.")
    error: str | None
    duration_ms: int
    created_at: datetime

    @classmethod
    def of(cls, row: Row[Any]) -> WebhookDelivery:
        created = utc(row.created_at)
        assert created is not None
        return cls(
            id=strawberry.ID(to_global("WebhookDelivery", row.id)),
            first_seq=row.first_seq,
            last_seq=row.last_seq,
            attempt=row.attempt,
            status_code=row.status_code,
            error=row.error,
            duration_ms=row.duration_ms,
            created_at=created,
        )


@strawberry.type(description="An HTTP endpoint that receives an account's changes, signed (Inboxql-Signature).")
class Webhook:
    id: strawberry.ID
    account_id: strawberry.ID
    url: str
    events: list[str]
    state: str = strawberry.field(description="active or disabled")
    disabled_reason: str | None
    failing_since: datetime | None
    cursor: int = strawberry.field(description="The newest change-log seq delivered (or skipped as not wanted).")
    created_at: datetime
    pk: strawberry.Private[int]

    @classmethod
    def of(cls, row: Row[Any] | WebhookRow) -> Webhook:
        created = utc(row.created_at)
        assert created is not None
        return cls(
            id=strawberry.ID(to_global("Webhook", row.id)),
            account_id=strawberry.ID(to_global("Account", row.account_id)),
            url=row.url,
            events=list(row.events),
            state=row.state,
            disabled_reason=row.disabled_reason,
            failing_since=utc(row.failing_since),
            cursor=row.cursor,
            created_at=created,
            pk=row.id,
        )

    @described("The delivery log, newest attempt first. Admin-scoped.")
    async def deliveries(
        self, info: Info, first: int | None = None, after: str | None = None
    ) -> Connection[WebhookDelivery]:
        info.context.admin_accounts()  # only admin paths lead here; the log stays admin-only if one ever does not
        page = pages.PageArgs.of(first, after)
        db = info.context.db
        mine = DeliveryRow.webhook_id == self.pk
        shard = shard_of(self.pk)
        rows = await db.rows(pages.apply(select(DeliveryRow.__table__).where(mine), DELIVERY_KEYS, page), shard=shard)

        async def count() -> int:
            return int(await db.scalar(select(func.count()).where(mine), shard=shard) or 0)

        return connection(pages.cut(rows, DELIVERY_KEYS, page), WebhookDelivery.of, count)


@strawberry.type
class CreatedWebhook:
    webhook: Webhook
    secret: str = strawberry.field(description="The HMAC-SHA256 signing secret: shown this once, keep it.")
