"""Query cost, computed from the document before execution, and a per-token budget of cost in Redis.

The cost model is Shopify's, on our connections:

* a scalar or enum field costs 0; an object costs 1 plus its selections;
* a connection costs 2, plus its page size (first/last, 20 when absent) times the cost of one node;
  ``totalCount`` costs 1 (it is a COUNT query); ``nodes(ids:)`` costs 1 per id plus selections;
* a list that is not a connection counts at its bound: the delta feed's ``changes`` page (``ChangePage``) costs
  2 plus its ``first`` (100 when absent, at most 500) times 1 plus one change's selections, as a connection
  does; a list of a row's parts (a message's addresses, attachments, folders, labels) costs 1 plus
  `LIST_BOUND` times one item's selections (the list itself is one batched read, but what each item nests is
  read per item); a list with a `first` argument of its own (an action's ``affectedMessages``, up to 1,000)
  counts at its `first`, as a connection does;
* a mutation costs 10 (a write transaction), plus 1 per id in its ``input.ids`` (1 without ids) times 1 plus
  its payload's selections: a payload lists what each id touched;
* a subscription costs its selection when it starts, and again for every event it delivers (each event runs
  the selection again, and ``after:`` can replay a month of log): `CostLimiter` leaves the per-event cost in
  the operation's context and the subscription spends it before it sends each event
  (gateway.graphql.subscriptions). A replay that outruns the token's budget ends with RATE_LIMITED; the client
  resumes from the last cursor it saw once the window resets.

Arguments are read from the operation's coerced variables, defaults included: a query sent without variables
is costed at the size it runs at. The cost is a function of the document, the operation's name and the variables
sent, so it is kept per document (`costed`: the document cached by Strawberry's ParserCache comes back as the same
object) by operation name and variables, for variables of plain JSON values; a document sent again with the same
variables is not costed again. Fragments are added up whatever their type condition, so the figure is an
upper bound. A query above `max_cost` is refused before it runs. Each token spends its queries' costs from a
budget per fixed window (GitHub's points per hour, in small): Redis counts, one INCRBY and EXPIRE in one round
trip, bounded by a short timeout and the client's circuit breaker (schema.redisconn). Without Redis the gateway
serves unthrottled and says so in its log (Redis holds no data of ours), or, with `rate_limit_fail_open` off,
refuses with RATE_LIMITED.
"""

from __future__ import annotations

import asyncio
import json
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
    get_nullable_type,
    is_leaf_type,
    is_list_type,
    value_from_ast_untyped,
)
from graphql.execution.values import get_variable_values
from redis.asyncio import Redis
from starlette.requests import HTTPConnection
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from gateway.auth import client_address
from gateway.config import GatewayConfig
from gateway.errors import CostExceeded, Forbidden, RateLimited
from gateway.graphql.pages import DEFAULT_CHANGES, DEFAULT_PAGE, MAX_CHANGES, MAX_PAGE
from gateway.identity import ByIdentity
from schema.actions import MAX_IDS
from schema.redisconn import COOLDOWN, RedisUnavailable, guarded

log = logging.getLogger(__name__)

MUTATION_COST = 10
# How long a charge that its token's credit covers may wait before it is counted in Redis, gathered with the
# token's other charges of that time (RateLimiter.take).
COUNT_DELAY = 0.1
# What a list of a row's parts is assumed to hold, for what each item nests (its own fields are read with the
# list): a message is in a few folders and labels and carries a few attachments. What items nest is mostly a
# back-reference that the loaders read once (a folder's account, an attachment's message), so this charges the
# fan-out of rendering without refusing ordinary deep selections (at 10, the tenancy walk's was refused).
LIST_BOUND = 5
# Pages that are not connections: the type, and its `first` when absent and at most.
PAGES = {"ChangePage": (DEFAULT_CHANGES, MAX_CHANGES)}


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

    def _page_size(self, node: FieldNode, default: int = DEFAULT_PAGE, maximum: int = MAX_PAGE) -> int:
        for name in ("first", "last"):
            value = self._argument(node, name)
            if isinstance(value, int) and not isinstance(value, bool):
                return max(0, min(value, maximum))
        return default

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
        if named.name in PAGES:
            inner = self._page_size(node, *PAGES[named.name])
            return 2 + self.selections(named, node.selection_set, inner)
        if parent.name in PAGES and is_list_type(get_nullable_type(definition.type)):
            return size * (1 + self.selections(named, node.selection_set, size))
        if parent is self.schema.mutation_type:
            given = self._argument(node, "input")
            # A literal input is a dict; one from coerced variables is the input type's object.
            ids = given.get("ids") if isinstance(given, dict) else getattr(given, "ids", None)
            count = len(ids) if isinstance(ids, list) else 1
            return MUTATION_COST + count * (1 + self.selections(named, node.selection_set, size))
        if name == "nodes" and parent is self.schema.query_type:
            ids = self._argument(node, "ids")
            count = len(ids) if isinstance(ids, list) else 1
            return count * (1 + self.selections(named, node.selection_set, size))
        listed = is_list_type(get_nullable_type(definition.type))
        first = definition.args.get("first")
        if listed and first is not None:
            # A list with a page size of its own (an action's affectedMessages): counted at it, as a connection.
            default = first.default_value if isinstance(first.default_value, int) else DEFAULT_PAGE
            inner = self._page_size(node, default, MAX_IDS)
            return 1 + inner * (1 + self.selections(named, node.selection_set, inner))
        if listed and not parent.name.endswith("Payload"):
            # A payload's lists hold what each id touched: the mutation's count already multiplies them.
            return 1 + LIST_BOUND * self.selections(named, node.selection_set, size)
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
    # The variables as the operation will run with them: coerced, with the defaults of those not sent.
    given = variables if isinstance(variables, dict) else {}
    coerced = get_variable_values(schema, operation.variable_definitions or (), given)
    values = given if isinstance(coerced, list) else coerced.coerced  # a list of errors: execution refuses them
    return _Costing(schema, fragments, values).selections(root, operation.selection_set, DEFAULT_PAGE)


# Costs kept per document: at most this many (operation name, variables) each, the oldest dropped first; only
# variables of at most KEPT_VALUES plain JSON values (a mutation of 1,000 ids is costed each time).
KEPT_COSTS = 64
KEPT_VALUES = 256
_COSTS: ByIdentity[DocumentNode, dict[tuple[GraphQLSchema, str | None, str], int]] = ByIdentity()


def _plain(value: Any, budget: list[int]) -> bool:
    """Whether `value` is made of JSON's own types only (exact types: no subclass, such as an enum, whose JSON
    text would be another value's), and at most budget[0] values."""
    budget[0] -= 1
    if budget[0] < 0:
        return False
    kind = type(value)
    if value is None or kind is str or kind is int or kind is float or kind is bool:
        return True
    if kind is list:
        return all(_plain(v, budget) for v in value)
    if kind is dict:
        return all(type(k) is str and _plain(v, budget) for k, v in value.items())
    return False


def _variables_key(given: dict[str, Any]) -> str | None:
    """The variables as text that names them exactly; None when they are not plain JSON or too many."""
    if not _plain(given, [KEPT_VALUES]):
        return None
    return json.dumps(given, sort_keys=True, separators=(",", ":"))


def costed(schema: GraphQLSchema, document: DocumentNode, operation_name: str | None, variables: Any) -> int:
    """`query_cost`, kept per document by operation name and variables (see the module)."""
    given = variables if isinstance(variables, dict) else {}
    key = _variables_key(given)
    if key is None:
        return query_cost(schema, document, operation_name, given)
    kept = _COSTS.kept(document, dict)
    # A schema's types are part of the cost: kept per schema too (tests build several).
    name = (schema, operation_name, key)
    cost = kept.get(name)
    if cost is None:
        cost = query_cost(schema, document, operation_name, given)
        if len(kept) >= KEPT_COSTS:
            del kept[next(iter(kept))]
        kept[name] = cost
    return cost


class _Charges:
    """The charges of one key not yet sent to Redis, and their shared answer (`RateLimiter.take`)."""

    __slots__ = ("answer", "cost", "timer")

    def __init__(self) -> None:
        self.cost = 0
        self.answer: asyncio.Future[tuple[int, int] | None] | None = None  # the round trip, once it started
        self.timer: asyncio.TimerHandle | None = None  # the deferred start, while only credit-paid charges wait


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Marks a shared answer's failure as seen: when every charge of its turn was paid from credit, no one
    awaits it, and asyncio would log the exception as never retrieved."""
    if not future.cancelled():
        future.exception()


class RateLimiter:
    """Fixed windows of `window` seconds; each token (or client address) may spend `points` per window. Keys are
    `prefix` + the rate key: client addresses are counted per deployment (its database), not across
    deployments that share a Redis."""

    def __init__(
        self, redis: Redis | None, points: int, window: int, *, fail_open: bool = True, prefix: str = ""
    ) -> None:
        self.redis = redis
        self.points = points
        self.window = window
        self.fail_open = fail_open
        self.prefix = prefix
        self._warned_at = 0.0
        self._charges: dict[str, _Charges] = {}
        # What each key may still spend without waiting (see `charge`): in the window `_credit_window` only.
        self._credit: dict[str, int] = {}
        self._credit_window = 0
        self._outstanding: dict[str, int] = {}  # charged, not yet answered by Redis

    async def spend(self, rate_key: str, cost: int, now: float | None = None) -> tuple[int, int] | None:
        """(points left, seconds until the window resets) after spending; None when Redis is out of reach and
        the limiter fails open (RateLimited when it fails closed)."""
        redis = self.redis
        if redis is None:
            return None
        now = time.time() if now is None else now
        window = int(now // self.window)
        key = f"inboxql:ratelimit:{self.prefix}{rate_key}:{window}"

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

    async def charge(self, rate_key: str, cost: int) -> None:
        """Spends `cost` (as `take`): RATE_LIMITED once the window's budget is spent."""
        spent = await self.take(rate_key, cost)
        if spent is not None and spent[0] < 0:
            raise RateLimited(f"rate limit exceeded: try again in {spent[1]} s", retryAfter=spent[1])

    async def take(self, rate_key: str, cost: int) -> tuple[int, int] | None:
        """Spends `cost`: (points left, seconds until the window resets), below 0 once the window's budget is
        spent; None when Redis is out of reach and the limiter fails open (RateLimited when it fails closed).

        The charges of one key are summed into one Redis round trip, whose answer they share: the same points
        are spent as one call each would spend. Charges made in one turn of the loop (a doorbell hands an event
        to every subscriber of a token at once) go together at the end of that turn when one of them waits.

        A charge that the key's credit covers does not wait for that answer: the credit is the points Redis
        said were left at the key's last answer in this window, less what was charged since. So a query or a
        subscriber's event goes on without a Redis round trip (for an event, without one more wake-up of every
        subscriber) while the budget plainly holds, and its cost is sent at most `COUNT_DELAY` later, with
        whatever the key spends meanwhile: a busy token costs a round trip per `COUNT_DELAY`, not one per
        request. Once the credit runs out, a charge sends what is pending at once and waits for the answer, and
        RATE_LIMITED comes exactly where it did. Only spending elsewhere (another gateway process) between two
        answers, or in the last `COUNT_DELAY` before them, can make the credit too generous, by what was spent
        meanwhile: every charge still reaches Redis, and the next answer corrects it. Redis gone quiet ends the
        credit with the first answer that fails (the breaker then answers at once, open or closed)."""
        together = self._charges.get(rate_key)
        if together is None:
            together = self._charges[rate_key] = _Charges()
        together.cost += cost
        self._outstanding[rate_key] = self._outstanding.get(rate_key, 0) + cost
        now = time.time()
        window = int(now // self.window)
        if window != self._credit_window:
            self._credit.clear()  # a new window: what was left in the last one says nothing
            self._credit_window = window
        left = self._credit.get(rate_key)
        if left is not None and left >= cost:
            self._credit[rate_key] = left - cost
            if together.answer is None and together.timer is None:
                together.timer = asyncio.get_running_loop().call_later(COUNT_DELAY, self._send, rate_key, together)
            return left - cost, int((window + 1) * self.window - now) + 1
        return await asyncio.shield(self._send(rate_key, together))

    async def flush(self) -> None:
        """Sends every charge still deferred and waits for the answers (a gateway stopping: what it spent reaches
        Redis)."""
        pending = [self._send(key, together) for key, together in list(self._charges.items())]
        await asyncio.gather(*pending, return_exceptions=True)

    def _send(self, rate_key: str, together: _Charges) -> asyncio.Future[tuple[int, int] | None]:
        """Starts the round trip of `together`'s charges, once: later charges of the key gather anew."""
        if together.answer is None:
            if together.timer is not None:
                together.timer.cancel()  # sent before its time: a charge needs the answer now
                together.timer = None
            together.answer = asyncio.ensure_future(self._spend_together(rate_key, together))
            together.answer.add_done_callback(_retrieved)  # charges paid from credit do not wait for it
        return together.answer

    async def _spend_together(self, rate_key: str, together: _Charges) -> tuple[int, int] | None:
        await asyncio.sleep(0)  # the other charges of this turn join in
        if self._charges.get(rate_key) is together:
            del self._charges[rate_key]
        try:
            spent = await self.spend(rate_key, together.cost)
        except BaseException:
            self._credit.pop(rate_key, None)
            raise
        finally:
            outstanding = self._outstanding.get(rate_key, 0) - together.cost
            if outstanding > 0:
                self._outstanding[rate_key] = outstanding
            else:
                self._outstanding.pop(rate_key, None)
        if spent is not None and int(time.time() // self.window) == self._credit_window:
            # Left after these charges, less those charged since (sent later, not answered).
            self._credit[rate_key] = spent[0] - self._outstanding.get(rate_key, 0)
        else:
            self._credit.pop(rate_key, None)  # Redis out of reach: every charge asks it again
        return spent


class StreamSlots:
    """What each token holds open in this process, at most `per_token` of it: its long-lived streams
    (websockets and graphql-sse streams together), so one token cannot hold every socket and task of the
    process; and, in a second count, its running subscriptions over all of them (`SubscriptionCap`)."""

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


class SubscriptionCap(SchemaExtension):
    """A subscription holds one of its token's subscription slots (Services.subscriptions) while it runs; a token
    holding them all gets RATE_LIMITED for the next one, whichever socket or stream asks."""

    def __init__(self) -> None:
        self.held: tuple[StreamSlots, int] | None = None

    async def on_operation(self) -> AsyncIterator[None]:
        try:
            yield
        finally:  # a subscription's operation ends when it completes, is stopped, or its socket closes
            if self.held is not None:
                slots, token_id = self.held
                self.held = None
                slots.give(token_id)

    async def on_execute(self) -> AsyncIterator[None]:
        ec = self.execution_context
        viewer = getattr(ec.context, "viewer", None)
        services = getattr(ec.context, "services", None)
        if ec.operation_type is OperationType.SUBSCRIPTION and ec.result is None and viewer and services:
            slots: StreamSlots = services.subscriptions
            if not slots.take(viewer.token_id):
                raise RateLimited(f"this token runs {slots.per_token} subscriptions already: stop one first")
            self.held = (slots, viewer.token_id)
        yield


def introspects(document: DocumentNode, operation_name: str | None) -> bool:
    """Whether the operation asks for `__schema` or `__type` (in its fragments too)."""
    operation = _operation(document, operation_name)
    if operation is None:
        return False
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    pending: list[SelectionSetNode] = [operation.selection_set]
    seen: set[str] = set()
    while pending:
        for sel in pending.pop().selections:
            if isinstance(sel, FieldNode):
                if sel.name.value in ("__schema", "__type"):
                    return True
                if sel.selection_set is not None:
                    pending.append(sel.selection_set)
            elif isinstance(sel, InlineFragmentNode):
                pending.append(sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode) and sel.name.value not in seen:
                seen.add(sel.name.value)
                fragment = fragments.get(sel.name.value)
                if fragment is not None:
                    pending.append(fragment.selection_set)
    return False


class CostLimiter(SchemaExtension):
    """Refuses too costly queries, spends the token's budget, and reports both in ``extensions.cost``. Anonymous
    requests and introspection queries also spend one point of their client address's budget (`per_address`),
    and anonymous introspection is FORBIDDEN when `anonymous_introspection` is off."""

    def __init__(self, config: GatewayConfig, limiter: RateLimiter, per_address: RateLimiter | None = None) -> None:
        self.config = config
        self.limiter = limiter
        self.per_address = per_address
        self.report: dict[str, int] | None = None

    async def _by_address(self, document: DocumentNode, operation_name: str | None, context: object) -> None:
        anonymous = getattr(context, "viewer", None) is None
        asks_schema = introspects(document, operation_name)
        if anonymous and asks_schema and not self.config.anonymous_introspection:
            self._refuse(Forbidden("introspection needs an API token on this server"))
        request = getattr(context, "request", None)
        if (anonymous or asks_schema) and self.per_address is not None and isinstance(request, HTTPConnection):
            address = client_address(request)
            if address is not None:
                await self.per_address.charge(f"addr:{address}", 1)

    def _refuse(self, error: Exception) -> NoReturn:
        # Raised, not set as the result: Strawberry's subscription path ignores a result set in on_execute.
        raise error

    async def on_execute(self) -> AsyncIterator[None]:
        ec = self.execution_context
        if ec.graphql_document is not None and ec.result is None:
            cost = costed(ec.schema._schema, ec.graphql_document, ec.operation_name, ec.variables)
            self.report = {"requested": cost, "maximum": self.config.max_cost}
            viewer = getattr(ec.context, "viewer", None)
            await self._by_address(ec.graphql_document, ec.operation_name, ec.context)
            if ec.operation_type is OperationType.SUBSCRIPTION and isinstance(getattr(ec.context, "cost", None), dict):
                # Every event runs the selection again: each spends it (gateway.graphql.context.spend_event).
                ec.context.cost["event"] = max(cost, 1)
                ec.context.cost_report = self.report
            if cost > self.config.max_cost:
                self._refuse(CostExceeded(f"query cost {cost} is above the maximum of {self.config.max_cost}"))
            elif viewer is not None:
                spent = await self.limiter.take(viewer.rate_key, max(cost, 1))
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
