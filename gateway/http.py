"""Strawberry's ASGI view, made to follow GraphQL over HTTP to the letter.

What it adds to the stock view:

* ``application/graphql-response+json`` when the client accepts it (the spec's media type), with 4xx status
  codes for requests that fail before execution; ``application/json`` and status 200 otherwise;
* no ``data`` entry in a response to a request that failed before execution;
* one context per request (viewer, connection, loaders), closed once the response is sent;
* 401 for a token that is present but not valid; without a token only introspection and ``__typename``
  answer, and every field says UNAUTHENTICATED;
* persisted queries: a hash in place of a document registered before (gateway.graphql.persisted).
"""

from __future__ import annotations

from typing import Any, cast

from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.types import ExecutionResult
from strawberry.types.unset import UNSET, UnsetType

from gateway.auth import (
    Viewer,
    authenticate,
    client_address,
    connection_token,
    deferred_response,
    unauthenticated_response,
)
from gateway.caps import AuthDeferred
from gateway.errors import GatewayError, http_status, response_body
from gateway.graphiql import graphiql_page
from gateway.graphql.context import Context
from gateway.graphql.loaders import Loaders, Reader
from gateway.graphql.persisted import PersistedQueries
from gateway.render import dumps, encode_message
from gateway.services import Services
from gateway.sse import serve_event_stream, wants_event_stream
from gateway.websocket import Connection, SocketRefused, TooManyStreams

GRAPHQL_RESPONSE = "application/graphql-response+json"
ACK = cast(UnsetType, UNSET)  # connection_ack without a payload
JSON = "application/json"


def preferred_media_type(accept: str | None) -> str:
    """The response type: graphql-response+json when the client accepts it at least as well as json."""
    if not accept:
        return JSON
    best: tuple[float, int, str] | None = None
    for index, item in enumerate(accept.split(",")):
        kind, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        if kind in (GRAPHQL_RESPONSE, JSON) and q > 0 and (best is None or (q, -index) > (best[0], best[1])):
            best = (q, -index, kind)
    return best[2] if best is not None else JSON


class GatewayView(GraphQL[Context, None]):
    graphql_transport_ws_handler_class = Connection

    def __init__(self, *args: Any, services: Services, **kw: Any):
        super().__init__(*args, **kw)
        self.services = services
        self.persisted = PersistedQueries()

    def new_context(self, request: HTTPConnection, viewer: Viewer | None) -> Context:
        db = Reader(self.services.engine, shards=self.services.engines)
        accounts = viewer.account_ids if viewer is not None else frozenset()
        return Context(request=request, viewer=viewer, db=db, loaders=Loaders(db, accounts), services=self.services)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await self._websocket(WebSocket(scope, receive=receive, send=send))
            return
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        request = Request(scope=scope, receive=receive)
        if wants_event_stream(request.headers.get("accept")):  # graphql-sse (gateway.sse)
            await serve_event_stream(self, request, send)
            return
        try:
            valid, viewer = await authenticate(self.services.tokens, request)
        except AuthDeferred as exc:
            await deferred_response(exc)(scope, receive, send)
            return
        if not valid:
            await unauthenticated_response("the API token is not valid")(scope, receive, send)
            return
        context = self.new_context(request, viewer)
        request.state.media_type = preferred_media_type(request.headers.get("accept"))
        request.state.status = 200
        # The answer leaves before the reader gives its connection back: that ends the connection's transaction,
        # a round trip to the server (ROLLBACK) that the client need not wait for.
        try:
            try:
                response = await self.run(request, context=context)
            except HTTPException as e:
                response = PlainTextResponse(e.reason, status_code=e.status_code)
            except GatewayError as e:  # the request failed before execution (a persisted query's hash)
                response = self._request_error(request, e)
            if response.media_type == JSON or response.headers.get("content-type", "").startswith(JSON):
                response.headers["content-type"] = f"{request.state.media_type}; charset=utf-8"
                response.status_code = request.state.status
                retry = getattr(request.state, "retry_after", None)
                if retry is not None:
                    response.headers["retry-after"] = str(retry)
            await response(scope, receive, send)
        finally:
            await context.close()

    def _request_error(self, request: Request, error: GatewayError) -> Response:
        """A request that failed before execution, as process_result shapes one: no data, a coded error."""
        if request.state.media_type == GRAPHQL_RESPONSE:
            request.state.status = 400
        body = {"errors": [{"message": error.message, "extensions": {**error.extensions, "code": error.code}}]}
        return JSONResponse(body)

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> GraphQLRequestData | list[GraphQLRequestData]:
        data = await super().parse_http_body(request)
        for item in data if isinstance(data, list) else [data]:
            self.persisted.resolve(item)
        return data

    async def _websocket(self, ws: WebSocket) -> None:
        """graphql-transport-ws on /graphql: authenticated by connection_init. The context is the connection's;
        each operation runs with a reader and loaders of its own (gateway.graphql.context.PerOperation)."""
        context = self.new_context(ws, None)
        try:
            await self.run(ws, context=context)
        finally:
            await context.close()

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        params = context.connection_params if isinstance(context.connection_params, dict) else {}
        token = connection_token(params)
        if token is None:
            return ACK  # anonymous: like HTTP without a token, only introspection answers (gateway.websocket)
        try:
            viewer = await self.services.tokens.viewer(token, client=client_address(context.request)) if token else None
        except AuthDeferred as exc:  # 4429 (throttled) or 1013 (tokens unavailable): the client should back off
            raise SocketRefused(exc.close, str(exc)) from None
        if viewer is None:
            raise ConnectionRejectionError({"reason": "the API token is not valid"})
        if not self.services.streams.take(viewer.token_id):
            raise TooManyStreams
        context.viewer = viewer  # holds the slot: the connection gives it back when it ends
        return ACK

    def encode_json(self, data: object) -> str | bytes:
        # A subscription event's `next` message around its JSON, encoded once for all its subscribers.
        if isinstance(data, dict):
            shared = encode_message(data)
            if shared is not None:
                return shared
        return dumps(data)  # text, not bytes: a websocket sends bytes as a binary frame

    def parse_json(self, data: str | bytes) -> Any:
        # A JSON body that is not an object (a bare string, a number) would crash Strawberry's parser: a 500.
        value = super().parse_json(data)
        if not isinstance(value, dict | list):
            raise HTTPException(400, "The request body must be a JSON object")
        return value

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        # Websockets (subscriptions, a later issue) authenticate in connection_init; until then, anonymous.
        return self.new_context(request, None)

    async def render_graphql_ide(self, request: Request) -> Response:
        return graphiql_page()

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        body, errors = response_body(result.errors, result.data, result.extensions)
        if "data" not in body:  # the request failed before execution
            status = http_status(errors)
            if status == 429 or request.state.media_type == GRAPHQL_RESPONSE:
                request.state.status = status
            for e in errors:
                retry = (e.extensions or {}).get("retryAfter")
                if retry is not None:
                    request.state.retry_after = retry
        return cast(GraphQLHTTPResponse, body)
