"""A graphql-transport-ws connection on /graphql: Strawberry's protocol handler, plus what a socket that lives
for hours needs.

* **Authentication** is the view's (`GatewayView.on_ws_connect`, from connection_init's `Authorization`): a bad
  token is refused with 4403; a token already holding `max_streams_per_token` websockets and event streams in
  this process with 4429 (`TooManyStreams`), and so is any token the process does not hold as valid from an
  address that sent too many unknown ones (gateway.caps.AuthFailures); one that cannot be looked up because the
  tokens' database does not answer with 1013 (try again later).
* **Revocation**: while the socket is open its token is re-checked (gateway.auth.TokenCache.watch: one watcher
  per token for all its sockets, not a task per socket); once revoked, the socket is closed with 4403.
* **Anonymous sockets**: without connection_init within `ws_init_seconds` the socket is closed with 4408
  (Strawberry's timeout); one acknowledged without a token may only introspect, and is closed with 4401 after
  the same grace.
* **Database**: the connection holds none; each operation runs with a reader and loaders of its own
  (gateway.graphql.context.PerOperation).
* **Events**: each operation's task carries a sink (gateway.render.DIRECT) through which its subscription
  writes its events to the socket itself.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler, Operation
from strawberry.subscriptions.protocols.graphql_transport_ws.types import ConnectionInitMessage

from gateway.auth import connection_token
from gateway.graphql.context import Context
from gateway.render import DIRECT, DirectSink

REVOKED = 4403
TOO_MANY = 4429
ANONYMOUS = 4401


class SocketRefused(Exception):
    """connection_init refused: the socket is closed with `code` and the reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class TooManyStreams(SocketRefused):
    """The token holds as many websockets and event streams as it may: 4429."""

    def __init__(self) -> None:
        super().__init__(TOO_MANY, "too many open streams for this token")


class Connection(BaseGraphQLTransportWSHandler[Context, None]):
    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self._watch: asyncio.Task[None] | None = None  # an anonymous socket's grace
        self._unwatch: Callable[[], None] | None = None  # a token's: stops watching it for this socket

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except SocketRefused as exc:
            await self.websocket.close(code=exc.code, reason=exc.reason)
            return
        if self.connection_init_received:
            # The wait for connection_init is over (cancelled above): its finished task, and its coroutine, are
            # not kept for the socket's lifetime.
            self.connection_init_timeout_task = None
        viewer = self.context.viewer
        if not self.connection_acknowledged or self._watch is not None or self._unwatch is not None:
            return
        if viewer is not None:
            token = connection_token(self.context.connection_params)
            self._unwatch = self.context.services.tokens.watch(token or "", self._revoked)
        else:
            self._watch = asyncio.create_task(self._anonymous_grace(), name="ws-anonymous-grace")

    async def run_operation(self, operation: Operation[Context, None]) -> None:
        # In the operation's own task (handle_subscribe creates it), so only this operation sees the sink.
        socket = getattr(self.websocket, "ws", None)  # Starlette's WebSocket under Strawberry's ASGI adapter
        if isinstance(socket, WebSocket):
            DIRECT.set(DirectSink(operation, socket.send_text))
        await super().run_operation(operation)

    async def handle_task_exception(self, error: Exception) -> None:
        # A socket that closed while an operation sent to it is how connections end, not a fault to log.
        if not isinstance(error, WebSocketDisconnected):
            await super().handle_task_exception(error)

    async def _revoked(self) -> None:
        await self.websocket.close(code=REVOKED, reason="the API token was revoked")

    async def _anonymous_grace(self) -> None:
        await asyncio.sleep(self.connection_init_wait_timeout.total_seconds())
        await self.websocket.close(code=ANONYMOUS, reason="a valid API token is required")

    async def shutdown(self) -> None:
        if self._unwatch is not None:
            self._unwatch()
            self._unwatch = None
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
            self._watch = None
        viewer, self.context.viewer = self.context.viewer, None
        if viewer is not None:  # on_ws_connect sets the viewer once it holds the token's stream slot
            self.context.services.streams.give(viewer.token_id)
        await super().shutdown()
