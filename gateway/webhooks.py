"""Webhooks over GraphQL: create, delete and re-enable hooks; list them and their delivery log.

Scope: every one of these needs a token with the admin scope (`inboxql token create --admin`), because a hook
sends an account's changes to a URL of the caller's choosing and the list shows those URLs. Checked in order:
no token is UNAUTHENTICATED; a token without the admin scope is FORBIDDEN, before any argument is looked at
(so it learns nothing about ids); an admin token manages the hooks of the accounts it grants and no others:
another account's hook, or an account it does not grant, reads exactly like a missing one (NOT_FOUND).
A refused URL is BAD_USER_INPUT.
"""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

import strawberry
from sqlalchemy import func, select
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from gateway import pages
from gateway.context import Context
from gateway.delivery import RefusedURL, check_url
from gateway.errors import BadUserInput, Forbidden, not_found
from gateway.fanout import Fanout
from gateway.ids import pk_of, to_global
from gateway.nodes import Connection, connection, described, utc
from schema import webhooks
from schema.crypto import CredentialBox
from schema.db import session_factory
from schema.models import Webhook as WebhookRow
from schema.models import WebhookDelivery as DeliveryRow

Info = strawberry.Info[Context, None]

HOOK_KEYS = (pages.Key(WebhookRow.id, False, "id"),)
DELIVERY_KEYS = (pages.Key(DeliveryRow.id, True, "id"),)
NOT_ADMIN = "managing webhooks needs a token with the admin scope (inboxql token create --admin)"


def _admin_accounts(info: Info) -> frozenset[int]:
    """The accounts whose hooks this request may manage: UNAUTHENTICATED without a token, FORBIDDEN without
    the admin scope. Admin never widens the accounts: they are the token's grant."""
    accounts = info.context.account_ids
    viewer = info.context.viewer
    if viewer is None or not viewer.admin:
        raise Forbidden(NOT_ADMIN)
    return accounts


def _hook_pk(gid: strawberry.ID) -> int:
    """Webhook ids are global ids of their own kind (not Relay nodes: `node(id:)` does not serve them)."""
    try:
        kind, _, number = base64.urlsafe_b64decode(str(gid) + "=" * (-len(gid) % 4)).decode().partition(":")
        pk = int(number)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadUserInput("not a valid webhook id") from None
    if kind != "Webhook" or pk <= 0 or number != str(pk):
        raise BadUserInput("not a valid webhook id")
    return pk


async def _own_hook(session: AsyncSession, hook_id: int, accounts: frozenset[int]) -> WebhookRow:
    """The hook, when it belongs to one of these accounts; NOT_FOUND otherwise (another account's hook reads
    like a missing one)."""
    row = await webhooks.get(session, hook_id, accounts)
    if row is None:
        raise not_found("Webhook")
    return row


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
        _admin_accounts(info)  # only admin paths lead here; the log stays admin-only if one ever does not
        page = pages.PageArgs.of(first, after)
        db = info.context.db
        mine = DeliveryRow.webhook_id == self.pk
        rows = await db.rows(pages.apply(select(DeliveryRow.__table__).where(mine), DELIVERY_KEYS, page))

        async def count() -> int:
            return int(await db.scalar(select(func.count()).where(mine)) or 0)

        return connection(pages.cut(rows, DELIVERY_KEYS, page), WebhookDelivery.of, count)


@strawberry.type
class CreatedWebhook:
    webhook: Webhook
    secret: str = strawberry.field(description="The HMAC-SHA256 signing secret: shown this once, keep it.")


async def list_webhooks(
    info: Info, account_id: strawberry.ID, first: int | None, after: str | None
) -> Connection[Webhook]:
    pk = _account_pk(info, account_id)
    page = pages.PageArgs.of(first, after)
    db = info.context.db
    mine = WebhookRow.account_id == pk
    rows = await db.rows(pages.apply(select(WebhookRow.__table__).where(mine), HOOK_KEYS, page))

    async def count() -> int:
        return int(await db.scalar(select(func.count()).where(mine)) or 0)

    return connection(pages.cut(rows, HOOK_KEYS, page), Webhook.of, count)


def _account_pk(info: Info, account_id: strawberry.ID) -> int:
    accounts = _admin_accounts(info)
    pk = pk_of(account_id, "Account")
    if pk not in accounts:
        raise not_found("Account")
    return pk


def _box(info: Info) -> CredentialBox:
    box: CredentialBox = info.context.request.app.state.box
    return box


@strawberry.type
class Mutation:
    @described('Send the account\'s changes to `url` (events: object types, type.op, or "*"). Admin-scoped.')
    async def create_webhook(
        self, info: Info, account_id: strawberry.ID, url: str, events: list[str]
    ) -> CreatedWebhook:
        pk = _account_pk(info, account_id)
        if len(url) > 2048:
            raise BadUserInput("the URL is too long")
        try:
            await check_url(url, info.context.config)
        except RefusedURL as exc:
            raise BadUserInput(str(exc)) from None
        async with session_factory(info.context.db.engine)() as session, session.begin():
            try:
                row, secret = await webhooks.create(session, _box(info), pk, url, events)
            except (webhooks.BadEvents, webhooks.TooManyHooks) as exc:
                raise BadUserInput(str(exc)) from None
            hook = Webhook.of(row)
        return CreatedWebhook(webhook=hook, secret=secret)

    @described("Delete a webhook and its delivery log; true when it existed. Admin-scoped.")
    async def delete_webhook(self, info: Info, id: strawberry.ID) -> bool:
        accounts = _admin_accounts(info)
        hook_id = _hook_pk(id)
        async with session_factory(info.context.db.engine)() as session, session.begin():
            await _own_hook(session, hook_id, accounts)
            return await webhooks.remove(session, hook_id)

    @described("Re-enable a disabled webhook: delivery resumes at its cursor. Admin-scoped.")
    async def enable_webhook(self, info: Info, id: strawberry.ID) -> Webhook:
        accounts = _admin_accounts(info)
        hook_id = _hook_pk(id)
        async with session_factory(info.context.db.engine)() as session, session.begin():
            row = await _own_hook(session, hook_id, accounts)
            await webhooks.enable(session, hook_id)
            await session.refresh(row)
            hook = Webhook.of(row)
        # Events may be waiting on a quiet account: ring, so that deliverers pick the hook up now rather than
        # at their next safety poll.
        if isinstance(info.context.fanout, Fanout):
            await info.context.fanout.ring(row.account_id)
        return hook
