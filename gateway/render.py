"""Subscription events rendered once for everyone who asked the same thing.

graphql-core executes a subscription's selection set once per event per subscriber. When thousands follow
one account, that is thousands of identical executions (and JSON encodings) of the same event: the fan-out's
whole cost. Subscribers handed the same event object (gateway.fanout hands out one batch of events per read,
shared by every subscriber at that cursor) who sent the same document with the same variables under the same
token get the same answer. So:

* events carry a `renders` dict (shared with the event);
* `SharedEventExecutor` executes each (document, operation, variables, token) once per event and stores the
  result there; the other subscribers reuse it. The render runs in a task of its own, so a subscriber that
  leaves mid-render does not cancel it for the others, and with the event's own loaders (one set per batch,
  scoped to the event's account), so it never reads through, or holds, a subscriber's connection;
* the result's data is a `RenderedData` dict that keeps its JSON once made, and `encode_message` builds the
  graphql-transport-ws `next` message around it: one encoding of the event for all its subscribers;
* over a websocket, a subscription sends its events itself (`send_direct`): the subscription's resolver renders
  the event with its operation's executor (the render above, shared) and writes the `next` message straight to
  its socket, instead of yielding the event to graphql-core's per-event mapping and Strawberry's per-result
  pipeline (the extensions' hooks, the result's processing, the message built as a dict of dicts), which was
  most of a subscriber's share of a fan-out (BENCHMARKS.md, Change feed). The frame is the one that pipeline
  would send: same data JSON, same `extensions` (the cost report, the only extension results of the schema).
  An event whose render has errors, and every event of an event stream (gateway.sse), takes the pipeline.

`dumps` is how the gateway writes JSON, responses and messages alike: orjson (compact, UTF-8), faster than
json.dumps on a page of 50 threads (BENCHMARKS.md, Gateway).

The token is part of the key because a rendered event may hold signed links that name it (`downloadUrl`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from typing import Any, cast

import orjson
from graphql import ExecutionResult, OperationType
from starlette.websockets import WebSocketDisconnect

from gateway.graphql.context import Context
from gateway.graphql.executor import PlainFieldExecutor

RenderKey = tuple[str, int, str, int | None]
COMPACT = (",", ":")


def dumps(value: object) -> str:
    """JSON text, by orjson; by json.dumps what orjson refuses (integers beyond 64 bits, keys that are not
    strings). orjson writes NaN and infinities as null, where json.dumps would write invalid JSON."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return json.dumps(value, separators=COMPACT)


class RenderedData(dict[str, Any]):
    """An event's `data`, shared by its subscribers; its JSON is made once, on first use."""

    encoded: str | None = None

    def json(self) -> str:
        if self.encoded is None:
            self.encoded = dumps(self)
        return self.encoded


def encode_message(message: Mapping[str, Any]) -> str | None:
    """A `next` message carrying rendered data, encoded around the data's JSON; None for any other message."""
    if message.get("type") != "next":
        return None
    payload = message.get("payload")
    data = payload.get("data") if isinstance(payload, Mapping) else None
    if not isinstance(payload, Mapping) or not isinstance(data, RenderedData):
        return None
    rest = {k: v for k, v in payload.items() if k != "data"}
    tail = "," + dumps(rest)[1:-1] if rest else ""
    return f'{{"id":{dumps(message.get("id"))},"type":"next","payload":{{"data":{data.json()}{tail}}}}}'


def _shared(result: ExecutionResult) -> ExecutionResult:
    data = result.data
    return ExecutionResult(RenderedData(data) if data is not None else None, result.errors, result.extensions)


class DirectSink:
    """How a websocket operation sends its own events (`send_direct`): Strawberry's operation (its id, and
    whether it completed), the socket's send, the executor of its subscription once built, and the text of its
    `next` messages around an event's data (the id before it; the cost report after it, once known)."""

    __slots__ = ("closed", "executor", "operation", "prefix", "send_text", "suffix")

    def __init__(self, operation: Any, send_text: Callable[[str], Awaitable[None]]) -> None:
        self.operation = operation
        self.send_text = send_text
        self.executor: SharedEventExecutor | None = None
        self.closed = False  # the socket went away: its connection cancels the operation as it closes
        self.prefix = f'{{"id":{dumps(operation.id)},"type":"next","payload":{{"data":'
        self.suffix: str | None = None


# Set in a websocket operation's own task (gateway.websocket.Connection.run_operation): everything that runs in
# it, the subscription's resolver and the executor built for it included, sees the operation's sink.
DIRECT: ContextVar[DirectSink | None] = ContextVar("inboxql_direct_sink", default=None)


async def send_direct(context: Context, event: object) -> bool:
    """Render `event` (a subscription event with `renders`) and write its `next` message to the operation's
    websocket; False, with nothing sent, where the event must take graphql-core's and Strawberry's path: no
    websocket operation, or a render with errors (whose codes and masking that path applies). An event
    already rendered for its render key is taken from `renders` as it is (no per-event executor)."""
    sink = DIRECT.get()
    executor = None if sink is None else sink.executor
    renders = getattr(event, "renders", None)
    if sink is None or executor is None or not isinstance(renders, dict):
        return False
    if sink.closed or sink.operation.completed:
        return True  # nowhere to send: the event is dropped, as the closed socket would drop it
    key = executor._render_key
    result = renders.get(key) if key is not None else None
    if not isinstance(result, ExecutionResult):
        result = executor.build_per_event_executor(event).execute_operation(False)
        if executor.is_awaitable(result):
            result = await result
    if not isinstance(result, ExecutionResult) or result.errors or not isinstance(result.data, RenderedData):
        return False
    if sink.suffix is None:
        report = context.cost_report  # as Strawberry's results carry it (the cost report is its only one)
        sink.suffix = f',"extensions":{dumps({"cost": report})}}}}}' if report else "}}"
    try:
        await sink.send_text(sink.prefix + result.data.json() + sink.suffix)
    except (WebSocketDisconnect, RuntimeError):
        # The client went away (or the connection sent its close already): not an error of the subscription.
        # Raised from here it would be reported as one, and logged with its traceback, before the connection,
        # closing, cancels the operation.
        sink.closed = True
    return True


class SharedEventExecutor(PlainFieldExecutor):
    """Strawberry's executor (with gateway.graphql.executor's short path for plain fields), rendering each
    subscription event once per render key (see the module)."""

    _render_key: RenderKey | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sink = DIRECT.get()
        if sink is not None and sink.executor is None and self.operation.operation is OperationType.SUBSCRIPTION:
            sink.executor = self  # the subscription's own executor: its events are rendered with it

    def build_per_event_executor(self, payload: Any) -> Any:
        if self._render_key is None and isinstance(getattr(payload, "renders", None), dict):
            self._render_key = self._key()
        return super().build_per_event_executor(payload)

    def _key(self) -> RenderKey:
        operation = self.operation
        source = operation.loc.source.body if operation.loc is not None else repr(operation)
        start = operation.loc.start if operation.loc is not None else 0
        variables = json.dumps(self.variable_values.coerced, sort_keys=True, default=str)
        viewer = getattr(self.context_value, "viewer", None)
        return (source, start, variables, None if viewer is None else viewer.token_id)

    def execute_operation(self, serially: bool | None = None) -> Any:
        key = self._render_key
        renders = getattr(self.root_value, "renders", None)
        if key is None or not isinstance(renders, dict) or self.operation.operation is not OperationType.SUBSCRIPTION:
            return super().execute_operation(serially)
        found = renders.get(key)
        if isinstance(found, ExecutionResult):
            return found
        if found is None:
            loaders = getattr(self.root_value, "loaders", None)
            if loaders is not None and isinstance(self.context_value, Context):
                self.context_value = dataclasses.replace(self.context_value, loaders=loaders, db=loaders.db)
            result = super().execute_operation(serially)
            if not self.is_awaitable(result):
                renders[key] = _shared(cast("ExecutionResult", result))
                return renders[key]
            found = renders[key] = asyncio.ensure_future(_finish(cast("Awaitable[ExecutionResult]", result)))
            found.add_done_callback(lambda task: _settle(renders, key, task))
        return asyncio.shield(found)


async def _finish(result: Awaitable[ExecutionResult]) -> ExecutionResult:
    return _shared(await result)


def _settle(renders: dict[Any, Any], key: RenderKey, task: asyncio.Future[ExecutionResult]) -> None:
    """Keep the result, not the task (late subscribers then take it without awaiting); forget a failure."""
    if task.cancelled() or task.exception() is not None:
        renders.pop(key, None)
    else:
        renders[key] = task.result()
