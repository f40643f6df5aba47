"""The schema root: Query, Mutation and Subscription, and the extensions every operation runs through."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import strawberry
from graphql import ASTValidationRule, FieldNode, GraphQLError, ValidationRule
from graphql import ExecutionResult as GraphQLExecutionResult
from strawberry.extensions import (
    AddValidationRules,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.extensions.max_aliases import create_validator as alias_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.types import ExecutionContext
from strawberry.types.execution import ExecutionResult, StreamExecutionResult

from gateway.config import GatewayConfig
from gateway.errors import FORBIDDEN, coded
from gateway.graphql.context import PerOperation
from gateway.graphql.mutations import Mutation, ReadOnlyTokens
from gateway.graphql.query import Query
from gateway.graphql.subscriptions import Subscription
from gateway.graphql.types.accounts import Account
from gateway.graphql.types.actions import Action
from gateway.graphql.types.folders import Folder, Label
from gateway.graphql.types.messages import Attachment, Message, Thread
from gateway.graphql.types.outbox import OutboxEntry
from gateway.limits import CostLimiter, RateLimiter, SubscriptionCap
from gateway.metrics import OperationMetrics
from gateway.render import SharedEventExecutor


class ErrorCodes(SchemaExtension):
    """Give every error its extensions.code and mask the unexpected ones (runs outermost, so last)."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if isinstance(result, GraphQLExecutionResult | ExecutionResult) and result.errors:
            result.errors = [coded(e) for e in result.errors]

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        """Operations over websockets stream their results: each gets its codes before it is sent."""
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = [coded(e) for e in errors]  # type: ignore[union-attr]
        yield


class NoIntrospection(ValidationRule):
    """Introspection switched off (production): asking for the schema is FORBIDDEN, not a malformed query."""

    def enter_field(self, node: FieldNode, *_args: Any) -> None:
        if node.name.value in ("__schema", "__type"):
            self.report_error(
                GraphQLError("introspection is switched off on this server", node, extensions={"code": FORBIDDEN})
            )


class GatewaySchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Strawberry logs every error with its traceback; we log only the unexpected ones (see errors.coded)."""


def build_schema(
    config: GatewayConfig | None = None, limiter: RateLimiter | None = None, per_address: RateLimiter | None = None
) -> strawberry.Schema:
    config = config or GatewayConfig()
    limiter = limiter or RateLimiter(None, config.rate_limit_points, config.rate_limit_window_seconds)
    # The rules are built once: the validation cache keys on them, and a rule class made per request (as
    # QueryDepthLimiter and MaxAliasesLimiter do when instantiated) would miss it every time.
    rules: list[type[ASTValidationRule]] = [depth_rule(config.max_depth, None), alias_rule(config.max_aliases)]
    if not config.introspection:
        rules.append(NoIntrospection)
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        ErrorCodes,
        # Outside the others: it times the whole operation, and counts one refused by any of them as an error.
        OperationMetrics,
        # Before every other: a websocket's operation runs with its own reader and loaders from the start.
        PerOperation,
        # Clients send the same few documents again and again: parse and validate each once.
        partial(ParserCache, maxsize=256),
        partial(MaxTokensLimiter, max_token_count=config.max_tokens),
        partial(AddValidationRules, rules),
        partial(ValidationCache, maxsize=256),
        # Before the cost limiter: a refused mutation spends nothing.
        ReadOnlyTokens,
        partial(CostLimiter, config=config, limiter=limiter, per_address=per_address),
        # After the cost limiter: a refused subscription holds no slot.
        SubscriptionCap,
    ]
    types: list[Any] = [Account, Folder, Label, Thread, Message, Attachment, Action, OutboxEntry]
    return GatewaySchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=types,
        extensions=extensions,
        execution_context_class=SharedEventExecutor,
    )
