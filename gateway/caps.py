"""Caps that hold before a request is authenticated or parsed: the size of a request body, and the unknown tokens
one client address may try.

* `BodyLimit` (ASGI middleware): an HTTP request whose body is larger than `max_body_bytes` is answered 413 with
  a JSON error shaped like GraphQL's, anonymous or not: from `Content-Length` before any of the body is read,
  else as soon as the bytes received pass the cap (the rest is never read). `POST /uploads` has its own, larger
  cap (gateway.uploads). Websocket messages are capped by uvicorn's `ws_max_size` (gateway.server).
* `AuthFailures`: counts, per client address, the requests whose token was unknown or revoked within a fixed
  window; past `max_auth_failures` that address gets 429 RATE_LIMITED for any token the process does not
  already hold as valid, without a token query, until the window ends. So random tokens cost the database one
  query each up to the cap, and never push valid tokens out of the token cache (gateway.auth keeps refusals
  apart from grants). The count is per process, in memory: a few hundred bytes per address, dropped when its
  window ends.
* `TokensUnavailable`: a token that has to be looked up while the database of the tokens does not answer is
  answered 503, typed, never a 500; like the throttle, an `AuthDeferred`, which every authenticating route
  answers with `gateway.auth.deferred_response`.
"""

from __future__ import annotations

import math
import time

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import BAD_USER_INPUT, RATE_LIMITED, SHARD_UNAVAILABLE
from schema.shards import HOME

# Addresses counted at once before old windows are dropped (a flood from many addresses stays bounded).
MAX_ADDRESSES = 100_000


class AuthDeferred(Exception):
    """A request whose token cannot be judged now: answered with HTTP `status` and `code` (a websocket is closed
    with `close`), the client told to try again in `retry_after` seconds."""

    status = 429
    code = RATE_LIMITED
    close = 4429

    def __init__(self, message: str, retry_after: int, **extensions: object) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.extensions = extensions


class TooManyAuthFailures(AuthDeferred):
    """This client address sent too many unknown tokens: 429 (a websocket: 4429) for `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many invalid API tokens from this address: try again in {retry_after} s", retry_after)


class TokensUnavailable(AuthDeferred):
    """A token the process does not hold as valid could not be looked up: the database of the API tokens (shard
    0's) did not answer. 503 SHARD_UNAVAILABLE (a websocket: 1013, try again later); no failure is counted
    against the client. Tokens already cached go on working, on every shard that answers."""

    status = 503
    code = SHARD_UNAVAILABLE
    close = 1013

    def __init__(self, retry_after: int = 5) -> None:
        super().__init__(
            "the API token cannot be checked now: the database of shard 0 cannot be reached; try again",
            retry_after,
            shard=HOME,
        )


class AuthFailures:
    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._counts: dict[str, tuple[int, int]] = {}  # address -> (window number, failures in it)

    def _window(self, now: float) -> int:
        return int(now // self.window)

    def check(self, address: str | None, now: float | None = None) -> None:
        """TooManyAuthFailures while `address` is over its cap in the current window."""
        if address is None:
            return
        now = time.time() if now is None else now
        window = self._window(now)
        found = self._counts.get(address)
        if found is not None and found[0] == window and found[1] >= self.limit:
            raise TooManyAuthFailures(max(1, math.ceil((window + 1) * self.window - now)))

    def failed(self, address: str | None, now: float | None = None) -> None:
        if address is None:
            return
        now = time.time() if now is None else now
        window = self._window(now)
        found = self._counts.get(address)
        count = found[1] + 1 if found is not None and found[0] == window else 1
        if found is None and len(self._counts) >= MAX_ADDRESSES:
            self._counts = {a: c for a, c in self._counts.items() if c[0] == window}
            if len(self._counts) >= MAX_ADDRESSES:
                return  # a flood from that many addresses at once: count the ones already known
        self._counts[address] = (window, count)


class _BodyTooLarge(Exception):
    pass


def too_large_response(limit: int) -> JSONResponse:
    message = f"the request body is larger than {limit} bytes"
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": BAD_USER_INPUT}}]}, status_code=413)


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int, exempt: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            # A malformed Content-Length never gets here: the HTTP server refuses it.
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await too_large_response(self.limit)(scope, receive, send)
                return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except _BodyTooLarge:
            if not started:
                await too_large_response(self.limit)(scope, receive, send)
