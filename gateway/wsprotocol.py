"""uvicorn's websocket protocol (websockets-sansio, what ``--ws auto`` picks), holding less per open socket.

A gateway holds thousands of idle sockets, and per socket uvicorn's protocol kept (tracemalloc over 1,000
subscribers of the fan-out bench):

* an ``asyncio.Queue`` for the messages the app has not received yet, about 3.3 KB: four deques (its items, its
  getters, its putters, and its `join` event's waiters), each allocating a block of 64 slots when made. Here
  `Inbox`: a list of the messages and a list of the waiting receives, about 0.2 KB;
* an ``asyncio.Event`` saying whether the transport takes writes, about 1.6 KB (a deque again). Here `Gate`;
* the handshake's request and response (their headers), about 4 KB, read by nothing once the socket is
  accepted. Dropped then.

What the protocol does is unchanged: the same frames, keepalive pings, back-pressure and close handshake.
uvicorn is pinned (constraints.txt); `tests/gateway/test_wsprotocol.py` checks the attributes this relies on.

Per-message deflate is left as the gateway configures it (off by default: GatewayConfig.ws_compression):
uvicorn's deflate keeps a zlib compressor and decompressor per socket (window 4 KiB each way here, but zlib's
state is tens of KB), and the change-feed's frames are a few hundred bytes, so it costs far more memory than
it saves bandwidth; a deployment with large frames over a slow link may turn it on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class Inbox:
    """The queue uvicorn's protocol hands the app's receive from: `put_nowait`, `get` and `empty` as
    asyncio.Queue's (unbounded, first in first out, each message to one receive)."""

    __slots__ = ("_items", "_waiters")

    def __init__(self) -> None:
        self._items: list[ASGIReceiveEvent] = []
        self._waiters: list[asyncio.Future[None]] = []

    def put_nowait(self, item: ASGIReceiveEvent) -> None:
        self._items.append(item)
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
                break

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> ASGIReceiveEvent:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled() and self._items:
                    self._wake_next(waiter)  # woken, then cancelled: the message goes to the next receive
                raise
            finally:
                self._waiters.remove(waiter)
        return self._items.pop(0)

    def _wake_next(self, skip: asyncio.Future[None]) -> None:
        for waiter in self._waiters:
            if waiter is not skip and not waiter.done():
                waiter.set_result(None)
                return


class Gate:
    """asyncio.Event's `set`, `clear`, `is_set` and `wait`, for the protocol's writable flag."""

    __slots__ = ("_open", "_waiters")

    def __init__(self) -> None:
        self._open = True
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._open

    def set(self) -> None:
        self._open = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._open = False

    async def wait(self) -> None:
        if self._open:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol with `Inbox` and `Gate`, dropping the handshake once accepted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Gate()  # type: ignore[assignment]

    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if message["type"] == "websocket.accept" and self.handshake_complete:
            # The request was copied into the ASGI scope; the response is sent. Neither is read again.
            del self.request
            del self.response
