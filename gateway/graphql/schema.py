"""The schema root: Query, Mutation and Subscription, and the extensions every operation runs through."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
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
from strawberry.extensions.context import (
    ExecutingContextManager,
    ExtensionContextManagerBase,
    OperationContextManager,
    ParsingContextManager,
    StreamResultContextManager,
    ValidationContextManager,
    WrappedHook,
)
from strawberry.extensions.max_aliases import create_validator as alias_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_rule
from strawberry.extensions.runner import SchemaExtensionsRunner
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


# Per extension class and hook name: what makes the hook's context manager for an extension, and whether it is
# async; None where the class does not define the hook.
HookMaker = tuple[Callable[[SchemaExtension], Any], bool]
_HOOKS: dict[tuple[type[SchemaExtension], str], HookMaker | None] = {}


def _hook_maker(cls: type[SchemaExtension], name: str) -> HookMaker | None:
    """What Strawberry's `ExtensionContextManagerBase.get_hook` works out for every extension of every request
    (whether the class overrides the hook, and of which kind), worked out once per class: a generator is wrapped
    once as a context manager function, a plain or async function once in one that calls it. (A stream
    result's hooks take the result too: the made context manager passes on what it is called with.)"""
    hook = getattr(cls, name)
    if hook is getattr(SchemaExtension, name):
        return None
    if inspect.isgeneratorfunction(hook):
        return contextlib.contextmanager(hook), False
    if inspect.isasyncgenfunction(hook):
        return contextlib.asynccontextmanager(hook), True
    if inspect.iscoroutinefunction(hook):

        @contextlib.asynccontextmanager
        async def awaited(extension: SchemaExtension, *args: Any) -> AsyncIterator[None]:
            await hook(extension, *args)
            yield

        return awaited, True
    if callable(hook):

        @contextlib.contextmanager
        def called(extension: SchemaExtension, *args: Any) -> Iterator[None]:
            hook(extension, *args)
            yield

        return called, False
    raise ValueError(f"Hook {name} on {cls} must be callable, received {hook!r}")


class _KeptHooks(ExtensionContextManagerBase):
    """Strawberry's context manager of one stage, with each class's hooks worked out once: per request (and per
    subscription event) it wrapped every hook of every extension anew (`contextlib.contextmanager` and its
    `functools.wraps`, and the `inspect` checks: 7% of `{ __typename }`'s CPU)."""

    __slots__ = ()

    def get_hook(self, extension: SchemaExtension) -> WrappedHook | None:
        key = (type(extension), self.HOOK_NAME)
        try:
            made = _HOOKS[key]
        except KeyError:
            made = _HOOKS[key] = _hook_maker(type(extension), self.HOOK_NAME)
        if made is None:
            return None
        maker, is_async = made
        return WrappedHook(extension=extension, hook=partial(maker, extension), is_async=is_async)


class _Operation(_KeptHooks, OperationContextManager):
    __slots__ = ()


class _Validation(_KeptHooks, ValidationContextManager):
    __slots__ = ()


class _Parsing(_KeptHooks, ParsingContextManager):
    __slots__ = ()


class _Executing(_KeptHooks, ExecutingContextManager):
    __slots__ = ()


class _StreamResult(_KeptHooks, StreamResultContextManager):
    __slots__ = ()


class _Runner(SchemaExtensionsRunner):
    """Strawberry's runner with the stages' hooks kept per class (`_KeptHooks`): a subscription's every event
    goes through the stream result's stage."""

    def operation(self) -> OperationContextManager:
        return _Operation(self.extensions)

    def validation(self) -> ValidationContextManager:
        return _Validation(self.extensions)

    def parsing(self) -> ParsingContextManager:
        return _Parsing(self.extensions)

    def executing(self) -> ExecutingContextManager:
        return _Executing(self.extensions)

    def on_stream_result(self, result: StreamExecutionResult) -> StreamResultContextManager:
        return _StreamResult(self.extensions, result)


class GatewaySchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        """Strawberry logs every error with its traceback; we log only the unexpected ones (see errors.coded)."""

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        return _Runner(execution_context=execution_context, extensions=extensions)


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
