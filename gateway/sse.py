"""GraphQL over Server-Sent Events on /graphql: the graphql-sse protocol's *distinct connections mode*.

One HTTP request runs one operation; its results stream back as SSE events on that same response::

    curl -N -H 'Accept: text/event-stream' -H 'Authorization: Bearer iqt_...' -H 'Content-Type: application/json' \
         -d '{"query": "subscription($a: ID!) { changes(accountId: $a) { cursor operation objectType } }",
              "variables": {"a": "QWNjb3VudDox"}}' http://127.0.0.1:8000/graphql

    : (an SSE comment: the stream is open)

    id: Y2hhbmdlczoxOjQy
    event: next
    data: {"data":{"changes":{"cursor":"Y2hhbmdlczoxOjQy","operation":"CREATE","objectType":"MESSAGE"}},...}

Which requests: a GET or POST to /graphql whose ``Accept`` lists ``text/event-stream`` (q > 0) at least as
preferred as ``application/json`` and ``application/graphql-response+json`` (the npm client sends exactly
``Accept: text/event-stream``). Everything else is plain GraphQL over HTTP (gateway.http). The operation is
sent like over HTTP: a JSON body (``Content-Type: application/json``; ``query``, ``variables``,
``operationName``, ``extensions``) or, with GET, query parameters (mutations only by POST).

What comes back (the protocol's rules, and graphql-sse's reference server where the protocol leaves a choice):

* problems found before the stream is accepted are ordinary HTTP error responses with a JSON body of typed
  errors (``extensions.code``), never a 500: 401 for a token that is present but not valid (exactly as over
  HTTP); 400 for a body that is not JSON, a missing query, batching, a syntax error (also too many tokens)
  or no operation to run (BAD_USER_INPUT); 405 for a mutation over GET; 415 for a POST that is not JSON;
* otherwise 200 and ``text/event-stream``: one ``event: next`` per result (``data:`` is the result's JSON,
  shaped as over HTTP: no ``data`` entry when the operation failed before execution), then
  ``event: complete``. Validation errors (unknown fields, depth, aliases, introspection switched off) are
  in the stream, as the protocol requires: one ``next`` with the errors, then ``complete``. So is everything
  decided by executing: UNAUTHENTICATED for a subscription without a token, NOT_FOUND for a foreign account,
  CURSOR_EXPIRED, the cost and rate limits (RATE_LIMITED is an event, not a 429; a subscription's cost is
  checked exactly as over websockets). A query or mutation gives one ``next``; a subscription runs until
  the client closes the connection (or its stream ends with an error, then ``complete``);
* the stream opens with a comment line (``:``) so that clients see it accepted before the first event, and
  a comment follows after ``KEEP_ALIVE_SECONDS`` (12) without any other write so proxies keep it open.

Everything runs through the gateway's schema (``schema.stream``) with a context made by the view
(``GatewayView.new_context``), so validation, the depth and cost limits, error codes, tenancy and
authentication are those of HTTP and websockets. The request's context is closed when the stream ends, and
when the client goes away (ASGI ``http.disconnect``) the operation's generator is closed at once: its
database connection goes back to the pool and it leaves the change fan-out. Strawberry's own SSE transport
is not used: its HTTP path would close our per-request context before the body streams. uvicorn does not end
open responses when it shuts down: it waits for them, up to its ``timeout_graceful_shutdown``, then cancels
them, which closes them as a disconnect does.

Resuming: every subscription event carries its change cursor (``cursor``), and each ``next`` event of a
subscription whose result selects ``cursor`` (unaliased) on its root field has an SSE ``id:`` line with
that cursor. A client that reconnects either sends the last cursor as the ``after`` argument, or sends it
as the ``Last-Event-ID`` header (what the SSE spec's reconnecting clients do; with the npm ``graphql-sse``
client, return it from the ``headers`` option's function, which runs before each attempt, so its automatic
retries resume instead of replaying): for a subscription whose root field takes ``after``, a non-empty
``Last-Event-ID`` replaces that argument. Either way it gets every change after that cursor exactly once,
in order. A browser's native ``EventSource`` cannot send an ``Authorization`` header, so it would only get
UNAUTHENTICATED answers: use a fetch-based client.

Not implemented: the protocol's *single connection mode* (PUT reservations, DELETE to stop an operation);
a request without ``Accept: text/event-stream`` is never routed here, so such requests get the plain HTTP
answers (405 for PUT and DELETE).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing, suppress
from dataclasses import replace
from typing import Any, Final, Protocol

from graphql import (
    ArgumentNode,
    FieldNode,
    GraphQLError,
    GraphQLSyntaxError,
    NameNode,
    OperationType,
    StringValueNode,
    VariableNode,
    get_operation_ast,
    parse,
    print_ast,
)
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Send
from strawberry.schema import BaseSchema
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType as StrawberryOperationType

from gateway.auth import (
    Viewer,
    authenticate,
    bearer,
    deferred_response,
    unauthenticated_response,
    until_revoked,
)
from gateway.caps import AuthDeferred
from gateway.errors import (
    BAD_USER_INPUT,
    INTERNAL,
    INTERNAL_MESSAGE,
    RATE_LIMITED,
    UNAUTHENTICATED,
    coded,
    response_body,
)
from gateway.graphql.context import Context
from gateway.services import Services

log = logging.getLogger(__name__)

EVENT_STREAM = "text/event-stream"
# The types GraphQL over HTTP answers with (gateway.http).
_JSON_TYPES = ("application/json", "application/graphql-response+json")
KEEP_ALIVE_SECONDS = 12.0
REVOKED_MESSAGE = "the API token was revoked"
COMMENT = b":\n\n"
HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    # Never cached, and not compressed or buffered on the way (nginx honours X-Accel-Buffering).
    (b"cache-control", b"no-cache, no-transform"),
    (b"x-accel-buffering", b"no"),
]


class View(Protocol):
    """What an event stream takes from the HTTP view (gateway.http.GatewayView), so that it runs exactly as
    HTTP and websockets do: the schema, the services, and a request context made the same way."""

    @property
    def schema(self) -> BaseSchema: ...

    @property
    def services(self) -> Services: ...

    def new_context(self, request: HTTPConnection, viewer: Viewer | None) -> Context: ...


def wants_event_stream(accept: str | None) -> bool:
    """True when the Accept header asks for text/event-stream at least as much as for a JSON response."""
    if not accept:
        return False
    stream_q = json_q = 0.0
    for item in accept.split(","):
        kind, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            if p.lower().startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        kind = kind.lower()
        if kind == EVENT_STREAM:
            stream_q = max(stream_q, q)
        elif kind in _JSON_TYPES:
            json_q = max(json_q, q)
    return stream_q > 0 and stream_q >= json_q


class _Refused(Exception):
    """The request is refused before the stream starts: an HTTP error response."""

    def __init__(self, status: int, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.error: GraphQLError | None = None

    def response(self) -> JSONResponse:
        error = self.error or GraphQLError(self.message, extensions={"code": BAD_USER_INPUT})
        return JSONResponse({"errors": [coded(error).formatted]}, status_code=self.status, headers=self.headers)


class _Operation:
    """The request's GraphQL parameters, checked and parsed."""

    def __init__(self, params: Mapping[str, Any], method: str, max_tokens: int) -> None:
        query = params.get("query")
        variables = params.get("variables")
        name = params.get("operationName") or None  # "" names no operation: the document's only one
        extensions = params.get("extensions")
        if query is None:
            raise _Refused(400, "No GraphQL query found in the request")
        if not isinstance(query, str):
            raise _Refused(400, "The GraphQL operation's `query` must be a string")
        if not isinstance(variables, dict | None):
            raise _Refused(400, "The GraphQL operation's `variables` must be an object or null")
        if not isinstance(name, str | None):
            raise _Refused(400, "The GraphQL operation's `operationName` must be a string or null")
        if not isinstance(extensions, dict | None):
            raise _Refused(400, "The GraphQL operation's `extensions` must be an object or null")
        try:
            # The same token limit as the schema's MaxTokensLimiter: a document it would refuse is a 400 here.
            document = parse(query, max_tokens=max_tokens)
        except GraphQLSyntaxError as e:
            refused = _Refused(400, e.message)
            refused.error = e
            raise refused from None
        operation = get_operation_ast(document, name)
        if operation is None:
            raise _Refused(400, f'Unknown operation named "{name}"' if name else "Can't get GraphQL operation type")
        if operation.operation is OperationType.MUTATION and method == "GET":
            raise _Refused(405, "mutations are not allowed over GET", headers={"Allow": "POST"})
        self.query = query
        self.document = document
        self.operation = operation
        self.variables: dict[str, Any] = dict(variables or {})
        self.name = name
        self.extensions: dict[str, Any] | None = extensions

    @property
    def is_subscription(self) -> bool:
        return self.operation.operation is OperationType.SUBSCRIPTION

    def resume_at(self, cursor: str, schema: BaseSchema) -> None:
        """Set the `after` argument of the subscription's root field to `cursor` (from Last-Event-ID)."""
        selections = self.operation.selection_set.selections
        subscription_type = schema._schema.subscription_type  # type: ignore[attr-defined]
        if not self.is_subscription or len(selections) != 1 or subscription_type is None:
            return
        root = selections[0]
        if not isinstance(root, FieldNode):
            return
        definition = subscription_type.fields.get(root.name.value)
        if definition is None or "after" not in definition.args:
            return  # validation reports an unknown field; a field without `after` cannot resume
        given = next((a for a in root.arguments or () if a.name.value == "after"), None)
        if given is not None and isinstance(given.value, VariableNode):
            self.variables[given.value.name.value] = cursor
            return
        # A literal or no `after` at all: the document is rewritten (its nodes are frozen, so rebuilt).
        arguments = [a for a in root.arguments or () if a.name.value != "after"]
        arguments.append(ArgumentNode(name=NameNode(value="after"), value=StringValueNode(value=cursor)))
        field = replace(root, arguments=tuple(arguments))
        operation = replace(self.operation, selection_set=replace(self.operation.selection_set, selections=(field,)))
        definitions = tuple(operation if d is self.operation else d for d in self.document.definitions)
        self.document = replace(self.document, definitions=definitions)
        self.operation = operation
        self.query = print_ast(self.document)

    def allowed(self, method: str) -> set[StrawberryOperationType]:
        allowed = {StrawberryOperationType.QUERY, StrawberryOperationType.SUBSCRIPTION}
        if method == "POST":
            allowed.add(StrawberryOperationType.MUTATION)
        return allowed


async def _params(request: Request) -> Mapping[str, Any]:
    if request.method == "GET":
        params: dict[str, Any] = dict(request.query_params)
        for key in ("variables", "extensions"):
            if params.get(key):
                try:
                    params[key] = json.loads(params[key])
                except ValueError:
                    raise _Refused(400, f"The `{key}` parameter is not valid JSON") from None
            else:
                params.pop(key, None)
        return params
    if request.method != "POST":
        raise _Refused(405, "GraphQL over SSE takes GET and POST requests", headers={"Allow": "GET, POST"})
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise _Refused(415, "The request body must be JSON (Content-Type: application/json)")
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise _Refused(400, "Unable to parse request body as JSON") from None
    if isinstance(body, list):
        raise _Refused(400, "Batching is not supported over SSE")
    if not isinstance(body, dict):
        raise _Refused(400, "The request body must be a JSON object")
    return body


def _cursor(payload: Mapping[str, Any]) -> str | None:
    """The change cursor of a subscription event, when its root field's selection has `cursor`."""
    data = payload.get("data")
    if not isinstance(data, dict) or len(data) != 1:
        return None
    (value,) = data.values()
    cursor = value.get("cursor") if isinstance(value, dict) else None
    if isinstance(cursor, str) and cursor and not any(c in cursor for c in "\r\n\0"):
        return cursor
    return None


# Characters that JSON leaves raw but some line splitters (str.splitlines, httpx's aiter_lines) break lines at;
# they can only occur inside JSON strings, where their escapes mean the same.
_LINE_BREAKERS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def encode_event(event: str, data: Mapping[str, Any] | None = None, event_id: str | None = None) -> bytes:
    """One SSE event. json.dumps escapes CR and LF in strings and adds no line breaks: `data` is one line."""
    lines = [] if event_id is None else [f"id: {event_id}"]
    lines.append(f"event: {event}")
    if data is None:
        lines.append("data:")
    else:
        lines.append("data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKERS))
    return ("\n".join(lines) + "\n\n").encode()


_END: Final = object()
_FAILED: Final = object()


async def _produce(results: AsyncGenerator[Any, None], queue: asyncio.Queue[object]) -> None:
    """Runs the operation's generator in one task of its own, from start to close (its finally blocks too)."""
    try:
        async with aclosing(results):
            async for result in results:
                await queue.put(result)
    except Exception:
        log.exception("an event stream failed")
        await queue.put(_FAILED)
        return
    await queue.put(_END)


async def _disconnected(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _stream(
    send: Send,
    receive: Receive,
    results: AsyncGenerator[Any, None],
    subscription: bool,
    revoked: asyncio.Task[None] | None,
) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": COMMENT, "more_body": True})
    queue: asyncio.Queue[object] = asyncio.Queue(maxsize=1)  # the generator runs at most one result ahead
    producer = asyncio.create_task(_produce(results, queue), name="sse-operation")
    gone = asyncio.create_task(_disconnected(receive), name="sse-disconnect")
    getter: asyncio.Task[object] | None = None
    finished = False
    try:
        while True:
            if getter is None:
                getter = asyncio.create_task(queue.get())
            waits: set[asyncio.Future[Any]] = {getter, gone} if revoked is None else {getter, gone, revoked}
            done, _ = await asyncio.wait(waits, timeout=KEEP_ALIVE_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            if gone in done:
                return
            if revoked in done and getter not in done:
                error = {"message": REVOKED_MESSAGE, "extensions": {"code": UNAUTHENTICATED}}
                chunk = encode_event("next", {"errors": [error]}) + encode_event("complete")
                await send({"type": "http.response.body", "body": chunk, "more_body": False})
                finished = True
                return
            if getter not in done:
                await send({"type": "http.response.body", "body": COMMENT, "more_body": True})
                continue
            item, getter = getter.result(), None
            if item is _END or item is _FAILED:
                if item is _FAILED:
                    error = {"message": INTERNAL_MESSAGE, "extensions": {"code": INTERNAL}}
                    chunk = encode_event("next", {"errors": [error]})
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": encode_event("complete"), "more_body": False})
                finished = True
                return
            if not isinstance(item, ExecutionResult):
                continue  # an incremental-delivery frame (@defer/@stream): switched off in this schema
            payload, _ = response_body(item.errors, item.data, item.extensions)
            event_id = _cursor(payload) if subscription else None
            await send(
                {"type": "http.response.body", "body": encode_event("next", payload, event_id), "more_body": True}
            )
    finally:
        # Closing the generator (in its own task, by cancelling it) gives back what it holds, at once.
        tasks = [t for t in (getter, gone, producer) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not finished:
            with suppress(Exception):  # the client is gone, or the server already ended the response
                await send({"type": "http.response.body", "body": b"", "more_body": False})


async def serve_event_stream(view: View, request: Request, send: Send) -> None:
    """Answer a GraphQL request that asked for text/event-stream (see the module's docstring)."""
    scope, receive = request.scope, request.receive
    # As over HTTP: a token that is present must be valid.
    try:
        valid, viewer = await authenticate(view.services.tokens, request)
    except AuthDeferred as exc:
        await deferred_response(exc)(scope, receive, send)
        return
    if not valid:
        await unauthenticated_response("the API token is not valid")(scope, receive, send)
        return
    try:
        operation = _Operation(await _params(request), request.method, view.services.config.max_tokens)
        last_event_id = request.headers.get("last-event-id", "").strip()
        if last_event_id and operation.is_subscription:
            operation.resume_at(last_event_id, view.schema)
    except _Refused as refused:
        await refused.response()(scope, receive, send)
        return
    streams = view.services.streams
    if viewer is not None and not streams.take(viewer.token_id):
        error = {"message": "too many open streams for this token", "extensions": {"code": RATE_LIMITED}}
        await JSONResponse({"errors": [error]}, status_code=429)(scope, receive, send)
        return
    # The token is re-checked while the stream is open: once revoked, the stream ends (gateway.auth).
    token = bearer(request.headers) or ""
    revoked = (
        asyncio.create_task(until_revoked(view.services.tokens, token), name="sse-token-watch") if viewer else None
    )
    context = view.new_context(request, viewer)
    try:
        results = await view.schema.stream(
            operation.query,
            variable_values=operation.variables,
            context_value=context,
            operation_name=operation.name,
            operation_extensions=operation.extensions,
            allowed_operation_types=operation.allowed(request.method),
        )
        await _stream(send, receive, results, operation.is_subscription, revoked)
    finally:
        await context.close()
        if revoked is not None:
            revoked.cancel()
            with suppress(asyncio.CancelledError):
                await revoked
        if viewer is not None:
            streams.give(viewer.token_id)


__all__ = ["KEEP_ALIVE_SECONDS", "encode_event", "serve_event_stream", "wants_event_stream"]
