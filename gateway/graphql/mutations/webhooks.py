"""Webhook mutations: create, delete and re-enable hooks.

Scope: every one of these needs a token with the admin scope (`inboxql token create --admin`), because a hook
sends an account's changes to a URL of the caller's choosing and the list shows those URLs. Checked in order:
no token is UNAUTHENTICATED; a token without the admin scope is FORBIDDEN, before any argument is looked at
(so it learns nothing about ids); an admin token manages the hooks of the accounts it grants and no others:
another account's hook, or an account it does not grant, reads exactly like a missing one (NOT_FOUND).
A refused URL is BAD_USER_INPUT.
"""

from __future__ import annotations

import strawberry
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from gateway.delivery import RefusedURL, check_url
from gateway.errors import BadUserInput, not_found
from gateway.graphql.context import Info
from gateway.graphql.types.fields import described
from gateway.graphql.types.webhooks import CreatedWebhook, Webhook
from gateway.ids import webhook_pk
from schema import webhooks
from schema.db import session_factory
from schema.models import Webhook as WebhookRow
from schema.shards import shard_of


async def _own_hook(session: AsyncSession, hook_id: int, accounts: frozenset[int]) -> WebhookRow:
    """The hook, when it belongs to one of these accounts; NOT_FOUND otherwise (another account's hook reads
    like a missing one)."""
    row = await webhooks.get(session, hook_id, accounts)
    if row is None:
        raise not_found("Webhook")
    return row


def _engine(info: Info, hook_id: int) -> AsyncEngine:
    """The engine of the hook's shard (its account's); NOT_FOUND for a shard this deployment does not list."""
    db = info.context.db
    if db.sharded and shard_of(hook_id) not in db.shards:
        raise not_found("Webhook")
    return db.engine_of(shard_of(hook_id))


@strawberry.type
class WebhookMutations:
    @described('Send the account\'s changes to `url` (events: object types, type.op, or "*"). Admin-scoped.')
    async def create_webhook(
        self, info: Info, account_id: strawberry.ID, url: str, events: list[str]
    ) -> CreatedWebhook:
        info.context.admin_accounts()
        pk = info.context.account_pk(account_id)
        if len(url) > 2048:
            raise BadUserInput("the URL is too long")
        try:
            await check_url(url, info.context.services.config)
        except RefusedURL as exc:
            raise BadUserInput(str(exc)) from None
        async with session_factory(info.context.db.engine_of(shard_of(pk)))() as session, session.begin():
            try:
                row, secret = await webhooks.create(session, info.context.services.box, pk, url, events)
            except (webhooks.BadEvents, webhooks.TooManyHooks) as exc:
                raise BadUserInput(str(exc)) from None
            hook = Webhook.of(row)
        return CreatedWebhook(webhook=hook, secret=secret)

    @described("Delete a webhook and its delivery log; true when it existed. Admin-scoped.")
    async def delete_webhook(self, info: Info, id: strawberry.ID) -> bool:
        accounts = info.context.admin_accounts()
        hook_id = webhook_pk(id)
        async with session_factory(_engine(info, hook_id))() as session, session.begin():
            await _own_hook(session, hook_id, accounts)
            return await webhooks.remove(session, hook_id)

    @described("Re-enable a disabled webhook: delivery resumes at its cursor. Admin-scoped.")
    async def enable_webhook(self, info: Info, id: strawberry.ID) -> Webhook:
        accounts = info.context.admin_accounts()
        hook_id = webhook_pk(id)
        async with session_factory(_engine(info, hook_id))() as session, session.begin():
            row = await _own_hook(session, hook_id, accounts)
            await webhooks.enable(session, hook_id)
            await session.refresh(row)
            hook = Webhook.of(row)
        # Events may be waiting on a quiet account: ring, so that deliverers pick the hook up now rather than
        # at their next safety poll.
        await info.context.services.fanout.ring(row.account_id)
        return hook
