"""What one request carries: who asks (the viewer), its database reader (a connection per shard it reads), its
DataLoaders, and the process's services.

A websocket is not one request: its context is the connection's (the viewer, from connection_init), and each
operation on it runs with a copy that has a database reader and loaders of its own (`PerOperation`), closed
when the operation ends. So an idle socket holds no pooled connection, a query never reads rows cached by an
earlier one, and nothing grows with the socket's age.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import strawberry
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocket
from strawberry.extensions import SchemaExtension

from gateway.auth import Viewer
from gateway.errors import Forbidden, Unauthenticated, not_found
from gateway.graphql.loaders import Loaders, Reader
from gateway.ids import pk_of
from gateway.services import Services

NOT_ADMIN = "managing webhooks needs a token with the admin scope (inboxql token create --admin)"
NOT_OPERATOR = "managing accounts needs an operator token (inboxql token create --operator)"


@dataclass
class Context:
    # The HTTP request, or the websocket of a graphql-transport-ws connection.
    request: HTTPConnection
    viewer: Viewer | None
    db: Reader
    loaders: Loaders
    services: Services
    # The operation's cost as gateway.limits.CostLimiter left it: "event", what each subscription event spends.
    cost: dict[str, int] = field(default_factory=dict)
    # What the operation's `extensions.cost` reports (CostLimiter): a subscription's events written directly
    # (gateway.render.send_direct) carry it as the ones Strawberry sends do.
    cost_report: dict[str, int] | None = None
    # graphql-transport-ws: the payload of connection_init (where a websocket client sends its token).
    connection_params: dict[str, object] | None = None

    @property
    def account_ids(self) -> frozenset[int]:
        """The accounts this request may read; UNAUTHENTICATED without a valid token."""
        if self.viewer is None:
            raise Unauthenticated("a valid API token is required (Authorization: Bearer TOKEN)")
        return self.viewer.account_ids

    def account_pk(self, account_id: str) -> int:
        """The primary key of one of the viewer's accounts: BAD_USER_INPUT for an id that is not an account's,
        UNAUTHENTICATED without a token, NOT_FOUND for an account the token does not grant."""
        pk = pk_of(account_id, "Account")
        if pk not in self.account_ids:
            raise not_found("Account")
        return pk

    def admin_accounts(self) -> frozenset[int]:
        """The accounts whose webhooks this request may manage: UNAUTHENTICATED without a token, FORBIDDEN
        without the admin scope. Admin never widens the accounts: they are the token's grant."""
        accounts = self.account_ids
        if self.viewer is None or not self.viewer.admin:
            raise Forbidden(NOT_ADMIN)
        return accounts

    def operator(self) -> Viewer:
        """The viewer of an operator field (gateway.graphql.operator): UNAUTHENTICATED without a token,
        FORBIDDEN without the operator scope, before any argument is looked at."""
        self.account_ids  # noqa: B018 (raises UNAUTHENTICATED without a token)
        if self.viewer is None or not self.viewer.operator:
            raise Forbidden(NOT_OPERATOR)
        return self.viewer

    @property
    def writer(self) -> Viewer:
        """The viewer of a mutation: UNAUTHENTICATED without a token. (A read-only token never gets this far:
        gateway.graphql.mutations.ReadOnlyTokens refuses its mutations before they run.)"""
        self.account_ids  # noqa: B018 (raises UNAUTHENTICATED without a token)
        assert self.viewer is not None
        return self.viewer

    def written(self) -> None:
        """A mutation committed: what this request reads next must show it, so the loaders (which cache the rows
        they read) start afresh. The connection reads in READ COMMITTED and needs nothing."""
        self.loaders = Loaders(self.db, self.account_ids)

    async def spend_event(self) -> None:
        """A subscription's event runs the subscription's selection again: before it is sent it spends that cost
        from the token's budget, so a long replay (`after:`) or a busy account is paid for like the queries it
        amounts to; RATE_LIMITED ends the subscription once the budget is spent."""
        cost = self.cost.get("event", 0)
        if cost and self.viewer is not None:
            await self.services.limiter.charge(self.viewer.rate_key, cost)

    def for_operation(self) -> Context:
        """A copy for one operation: its own reader (a connection only once it runs a statement) and loaders."""
        db = Reader(self.services.engine, shards=self.services.engines)
        accounts = self.viewer.account_ids if self.viewer is not None else frozenset()
        return replace(self, db=db, loaders=Loaders(db, accounts), cost={}, cost_report=None)

    async def close(self) -> None:
        await self.db.close()


class PerOperation(SchemaExtension):
    """Runs each operation of a websocket with a context of its own (`Context.for_operation`), closed when the
    operation ends (a subscription: when it is completed or its socket closes). HTTP and graphql-sse requests
    already have a context per request and are left alone."""

    async def on_operation(self) -> AsyncIterator[None]:
        ec = self.execution_context
        connection = ec.context
        if not isinstance(connection, Context) or not isinstance(connection.request, WebSocket):
            yield
            return
        ec.context = context = connection.for_operation()
        try:
            yield
        finally:
            await context.close()


Info = strawberry.Info[Context, None]
