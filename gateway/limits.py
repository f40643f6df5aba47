"""Query cost, computed from the document before execution, and a per-token budget of cost in Redis.

The cost model is Shopify's, on our connections:

* a scalar or enum field costs 0; an object, or a plain list of objects, costs 1 plus its selections;
* a connection costs 2, plus its page size (first/last, 20 when absent) times the cost of one node;
  ``totalCount`` costs 1 (it is a COUNT query); ``nodes(ids:)`` costs 1 per id plus selections;
* a mutation costs 10 (a write transaction), plus 1 per id in its ``input.ids`` (1 without ids) times 1 plus
  its payload's selections: a payload lists what each id touched.

Fragments are added up whatever their type condition, so the figure is an upper bound. A query above
`max_cost` is refused before it runs. Each token spends its queries' costs from a budget per fixed window
(GitHub's points per hour, in small): Redis counts, one INCRBY and EXPIRE in one round trip, bounded by a
short timeout and the client's circuit breaker (schema.redisconn). Without Redis the gateway serves
unthrottled and says so in its log (Redis holds no data of ours), or, with `rate_limit_fail_open` off, refuses
with RATE_LIMITED.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    is_leaf_type,
    value_from_ast_untyped,
)
from redis.asyncio import Redis
from strawberry.extensions import SchemaExtension

from gateway.config import GatewayConfig
from gateway.errors import CostExceeded, RateLimited
from gateway.graphql.pages import DEFAULT_PAGE, MAX_PAGE
from schema.redisconn import COOLDOWN, RedisUnavailable, guarded

log = logging.getLogger(__name__)

MUTATION_COST = 10


class _Costing:
    def __init__(self, schema: GraphQLSchema, fragments: Mapping[str, FragmentDefinitionNode], variables: Any) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables or {}
        self.seen_fragments: list[str] = []

    def _argument(self, node: FieldNode, name: str) -> Any:
        for arg in node.arguments or ():
            if arg.name.value == name:
                return value_from_ast_untyped(arg.value, self.variables)
        return None

    def _page_size(self, node: FieldNode) -> int:
        for name in ("first", "last"):
            value = self._argument(node, name)
            if isinstance(value, int) and not isinstance(value, bool):
                return max(0, min(value, MAX_PAGE))
        return DEFAULT_PAGE

    def selections(self, parent: GraphQLNamedType, selection_set: SelectionSetNode | None, size: int) -> int:
        if selection_set is None:
            return 0
        total = 0
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                total += self.field(parent, sel, size)
            elif isinstance(sel, InlineFragmentNode):
                cond = self.schema.get_type(sel.type_condition.name.value) if sel.type_condition else parent
                total += self.selections(cond or parent, sel.selection_set, size)
            elif isinstance(sel, FragmentSpreadNode):
                name = sel.name.value
                fragment = self.fragments.get(name)
                if fragment is None or self.seen_fragments.count(name) > 8:
                    continue  # validation reports unknown or cyclic fragments
                self.seen_fragments.append(name)
                cond = self.schema.get_type(fragment.type_condition.name.value)
                total += self.selections(cond or parent, fragment.selection_set, size)
                self.seen_fragments.pop()
        return total

    def field(self, parent: GraphQLNamedType, node: FieldNode, size: int) -> int:
        name = node.name.value
        if name.startswith("__") or not isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            return 0
        definition = parent.fields.get(name)
        if definition is None:
            return 0
        named = get_named_type(definition.type)
        if parent.name.endswith("Connection"):
            if name == "totalCount":
                return 1
            if name == "edges":
                return size * self.selections(named, node.selection_set, size)
            if name == "nodes":
                return size * (1 + self.selections(named, node.selection_set, size))
            if name == "pageInfo":
                return 0
        if parent.name.endswith("Edge") and name == "node":
            return 1 + self.selections(named, node.selection_set, size)
        if is_leaf_type(named):
            return 0
        if named.name.endswith("Connection"):
            inner = self._page_size(node)
            return 2 + self.selections(named, node.selection_set, inner)
        if parent is self.schema.mutation_type:
            given = self._argument(node, "input")
            ids = given.get("ids") if isinstance(given, dict) else None
            count = len(ids) if isinstance(ids, list) else 1
            return MUTATION_COST + count * (1 + self.selections(named, node.selection_set, size))
        if name == "nodes" and parent is self.schema.query_type:
            ids = self._argument(node, "ids")
            count = len(ids) if isinstance(ids, list) else 1
            return count * (1 + self.selections(named, node.selection_set, size))
        return 1 + self.selections(named, node.selection_set, size)


def _operation(document: DocumentNode, operation_name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name is not None and o.name.value == operation_name), None)


def query_cost(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None, variables: Any) -> int:
    operation = _operation(document, operation_name)
    if operation is None:
        return 0
    root = schema.get_root_type(operation.operation)
    if root is None:
        return 0
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    return _Costing(schema, fragments, variables).selections(root, operation.selection_set, DEFAULT_PAGE)


class RateLimiter:
    """Fixed windows of `window` seconds; each token may spend `points` per window."""

    def __init__(self, redis: Redis | None, points: int, window: int, *, fail_open: bool = True) -> None:
        self.redis = redis
        self.points = points
        self.window = window
        self.fail_open = fail_open
        self._warned_at = 0.0

    async def spend(self, rate_key: str, cost: int, now: float | None = None) -> tuple[int, int] | None:
        """(points left, seconds until the window resets) after spending; None when Redis is out of reach and
        the limiter fails open (RateLimited when it fails closed)."""
        redis = self.redis
        if redis is None:
            return None
        now = time.time() if now is None else now
        window = int(now // self.window)
        key = f"inboxql:ratelimit:{rate_key}:{window}"

        async def count() -> int:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.incrby(key, cost)
                pipe.expire(key, self.window + 5)
                spent, _ = await pipe.execute()
                return int(spent)

        try:
            spent = await guarded(redis, count)
        except RedisUnavailable as exc:
            if now - self._warned_at > 60:
                self._warned_at = now
                outcome = "not enforced" if self.fail_open else "refusing requests"
                log.warning("rate limit %s: %s", outcome, exc)
            if self.fail_open:
                return None
            raise RateLimited(
                "the rate limit cannot be checked now: try again shortly", retryAfter=int(COOLDOWN)
            ) from None
        reset = int((window + 1) * self.window - now) + 1
        return self.points - spent, reset


class StreamSlots:
    """The long-lived streams (websockets and graphql-sse streams together) each token holds open in this
    process: at most `per_token`, so one token cannot hold every socket and task of the process."""

    def __init__(self, per_token: int) -> None:
        self.per_token = per_token
        self._open: dict[int, int] = {}

    def take(self, token_id: int) -> bool:
        held = self._open.get(token_id, 0)
        if held >= self.per_token:
            return False
        self._open[token_id] = held + 1
        return True

    def give(self, token_id: int) -> None:
        held = self._open.get(token_id, 0) - 1
        if held > 0:
            self._open[token_id] = held
        else:
            self._open.pop(token_id, None)


class CostLimiter(SchemaExtension):
    """Refuses too costly queries, spends the token's budget, and reports both in ``extensions.cost``."""

    def __init__(self, config: GatewayConfig, limiter: RateLimiter) -> None:
        self.config = config
        self.limiter = limiter
        self.report: dict[str, int] | None = None

    def _refuse(self, error: Exception) -> NoReturn:
        # Raised, not set as the result: Strawberry's subscription path ignores a result set in on_execute.
        raise error

    async def on_execute(self) -> AsyncIterator[None]:
        ec = self.execution_context
        if ec.graphql_document is not None and ec.result is None:
            cost = query_cost(ec.schema._schema, ec.graphql_document, ec.operation_name, ec.variables)
            self.report = {"requested": cost, "maximum": self.config.max_cost}
            viewer = getattr(ec.context, "viewer", None)
            if cost > self.config.max_cost:
                self._refuse(CostExceeded(f"query cost {cost} is above the maximum of {self.config.max_cost}"))
            elif viewer is not None:
                spent = await self.limiter.spend(viewer.rate_key, max(cost, 1))
                if spent is not None:
                    remaining, reset = spent
                    self.report.update(
                        {"limit": self.limiter.points, "remaining": max(remaining, 0), "resetInSeconds": reset}
                    )
                    if remaining < 0:
                        self._refuse(RateLimited(f"rate limit exceeded: try again in {reset} s", retryAfter=reset))
        yield

    def get_results(self) -> dict[str, Any]:
        return {"cost": self.report} if self.report is not None else {}
