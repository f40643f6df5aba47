"""Bearer tokens: `Authorization: Bearer iqt_...` -> the accounts the request may read, and its admin scope.

Grants are cached in the process for `token_cache_seconds` (a revocation takes effect within that time), so
a busy client costs no token query per request. A grant used when it is past half that period is looked up
again in the background while the request goes on with it: a busy token's requests never wait for its lookup
(a lookup writes the token's `last_used_at` and commits, 9-14 ms under the soak's load, and every cache period
one request of each token waited for it: the soak's p99). The cache is keyed by the token's hash: no plaintext token
is kept or logged. Refusals (unknown or revoked tokens) are cached apart, in a bounded cache of their own, so
a flood of random tokens never evicts a valid one; and a client address that keeps sending unknown tokens is
throttled (gateway.caps.AuthFailures): 429 without a token query. Websockets and event streams outlive a
request: they re-check their token while they are open (`until_revoked`) and end once it is revoked.
While the tokens' database (shard 0's) does not answer, a token seen before keeps its last grant (nothing can be
revoked meanwhile) and a token never seen is answered 503 SHARD_UNAVAILABLE (gateway.caps.TokensUnavailable).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from gateway.caps import AuthDeferred, AuthFailures, TokensUnavailable
from gateway.errors import UNAUTHENTICATED
from gateway.shared import Shared
from schema import tokens
from schema.accounts import UNREACHABLE
from schema.db import session_factory

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_CACHED = 10_000  # valid tokens
MAX_REFUSED = 10_000  # unknown or revoked ones, kept apart


@dataclass(frozen=True, slots=True)
class Viewer:
    """Who asks: the token and the accounts it may read."""

    token_id: int
    account_ids: frozenset[int]
    # Names the token in Redis (a prefix of its hash: unique across databases, unlike the row id).
    rate_key: str = ""
    # The admin scope (schema.tokens): webhooks of the accounts above may be managed; no other account.
    admin: bool = False
    # A read-only token (schema.tokens): every mutation is FORBIDDEN (gateway.graphql.mutations.Writable).
    read_only: bool = False
    # The operator scope (schema.tokens): manages accounts (gateway.graphql.mutations.operator); grants no mail.
    operator: bool = False


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an Authorization header; "" for a header that is there but malformed."""
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""
    return token.strip()


def _keep(cache: dict[bytes, tuple[float, T]], key: bytes, entry: tuple[float, T], size: int) -> None:
    """Caches `entry` last, making room by dropping the first: entries are in the order they expire (one ttl)."""
    cache.pop(key, None)
    while len(cache) >= size:
        del cache[next(iter(cache))]
    cache[key] = entry


class TokenCache:
    def __init__(self, engine: AsyncEngine, ttl: float, failures: AuthFailures | None = None) -> None:
        self.sessions = session_factory(engine)
        self.ttl = ttl
        self.failures = failures or AuthFailures(limit=2**62, window=60.0)
        self._grants: dict[bytes, tuple[float, Viewer]] = {}
        self._refused: dict[bytes, tuple[float, None]] = {}
        self._lookups: Shared[bytes, Viewer | None] = Shared()
        self._refreshes: dict[bytes, asyncio.Task[None]] = {}  # grants looked up again in the background
        # Per watched token (by hash): its one watcher task, and what to call once it is revoked (`watch`).
        self._watches: dict[bytes, tuple[asyncio.Task[None], set[Callable[[], Awaitable[None]]]]] = {}

    async def viewer(self, token: str, now: float | None = None, *, client: str | None = None) -> Viewer | None:
        """The viewer of a live token; None for an unknown or revoked one. `client` (the request's address) is
        counted for each refusal: TooManyAuthFailures once it is over its cap, unless the token is a cached
        valid one. TokensUnavailable when it must be looked up and the database does not answer, unless the
        cache still holds its last grant (expired): that is kept until the database answers again."""
        now = time.monotonic() if now is None else now
        key = tokens.token_hash(token)
        cached = self._grants.get(key)
        if cached is not None and cached[0] > now:
            if cached[0] - now < self.ttl / 2 and key not in self._refreshes:
                self._refreshes[key] = task = asyncio.create_task(self._refresh(token, key, now), name="token-refresh")
                task.add_done_callback(lambda _: self._refreshes.pop(key, None))
            return cached[1]
        self.failures.check(client)
        refused = self._refused.get(key)
        if refused is not None and refused[0] > now:
            self.failures.failed(client)
            return None
        # One lookup of a token at a time, shared by everyone asking meanwhile: when a token's cached grant
        # expires, its thousands of sockets re-checking it (until_revoked) would otherwise each send the same
        # query at once and empty the pool (the fan-out bench at 10,000 subscribers: pool timeouts, INTERNAL).
        try:
            found = await self._lookups.run(key, partial(self._lookup, token, key, now))
        except TokensUnavailable:
            if cached is not None:
                # No revocation can be written while the tokens' database is down: the grant it gave last
                # still stands (the accounts of the shards that answer stay readable).
                return cached[1]
            raise
        if found is None:
            self.failures.failed(client)
        return found

    async def close(self) -> None:
        """Ends the background lookups (the process is stopping; its engine goes next)."""
        running = list(self._refreshes.values())
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)

    async def _refresh(self, token: str, key: bytes, now: float) -> None:
        """Looks a cached grant up again (the grant is replaced, or dropped once revoked). When the database does
        not answer, the grant runs out at its time as it would have; the next request then looks it up itself."""
        try:
            await self._lookups.run(key, partial(self._lookup, token, key, now))
        except TokensUnavailable:
            pass  # said by _lookup
        except Exception:
            log.exception("token not looked up again")

    async def _lookup(self, token: str, key: bytes, now: float) -> Viewer | None:
        try:
            async with self.sessions() as session, session.begin():
                grant = await tokens.lookup(session, token)
                if grant is not None:
                    await tokens.touch(session, grant.token_id)
        except UNREACHABLE as exc:
            log.warning("token not looked up: %s", type(exc).__name__)
            raise TokensUnavailable from exc
        found = (
            None
            if grant is None
            else Viewer(
                grant.token_id,
                grant.account_ids,
                key.hex()[:32],
                admin=grant.admin,
                read_only=grant.read_only,
                operator=grant.operator,
            )
        )
        if found is None:
            self._grants.pop(key, None)  # revoked
            _keep(self._refused, key, (now + self.ttl, None), MAX_REFUSED)
        else:
            self._refused.pop(key, None)
            _keep(self._grants, key, (now + self.ttl, found), MAX_CACHED)
        return found

    def watch(self, token: str, on_revoked: Callable[[], Awaitable[None]]) -> Callable[[], None]:
        """Calls `on_revoked()` once the token is no longer live (re-checked as `until_revoked` does); returns the
        function that stops watching. All the sockets of a token share one watcher task: a task per socket, with
        its coroutines' frames and its timer, was about 2 KB of each of 10,000 subscribers (bench.fanout_bench)."""
        key = tokens.token_hash(token)
        entry = self._watches.get(key)
        if entry is None:
            task = asyncio.create_task(self._watch(token, key), name="token-watch")
            entry = self._watches[key] = (task, set())
        entry[1].add(on_revoked)

        def unwatch() -> None:
            entry[1].discard(on_revoked)
            if not entry[1] and self._watches.get(key) is entry:
                del self._watches[key]
                entry[0].cancel()

        return unwatch

    async def _watch(self, token: str, key: bytes) -> None:
        await until_revoked(self, token)
        _, revoked = self._watches.pop(key)
        # At once for all of them: one socket whose close waits (a client that reads nothing) delays no other.
        await asyncio.gather(*(on_revoked() for on_revoked in list(revoked)), return_exceptions=True)

    async def viewer_by_id(self, token_id: int) -> Viewer | None:
        """The viewer of a live token by its id (a signed link's); TokensUnavailable as `viewer`."""
        try:
            async with self.sessions() as session:
                grant = await tokens.lookup_id(session, token_id)
        except UNREACHABLE as exc:
            log.warning("token not looked up: %s", type(exc).__name__)
            raise TokensUnavailable from exc
        return (
            None
            if grant is None
            else Viewer(
                grant.token_id,
                grant.account_ids,
                f"id{token_id}",
                admin=grant.admin,
                read_only=grant.read_only,
                operator=grant.operator,
            )
        )


async def until_revoked(tokens: TokenCache, token: str) -> None:
    """Returns once the token is no longer live (revoked, or gone). It is looked at through the cache every half
    cache period, so an open stream ends at most 1.5 periods after the revocation and a token's many streams
    cost one token query per period between them. A database that does not answer ends nothing."""
    while True:
        await asyncio.sleep(tokens.ttl / 2)
        try:
            if await tokens.viewer(token) is None:
                return
        except Exception as exc:
            log.warning("token not re-checked: %s", type(exc).__name__)


def connection_token(params: Mapping[str, object] | None) -> str | None:
    """The token of a websocket's connection_init payload (its `Authorization`, as an HTTP header would carry
    it): None without one, "" for a malformed one."""
    header = (params or {}).get("Authorization") or (params or {}).get("authorization")
    return bearer({"authorization": header}) if isinstance(header, str) else None


def client_address(connection: HTTPConnection) -> str | None:
    """The client's address (behind a trusted proxy, the one it forwarded: uvicorn's proxy_headers)."""
    return connection.client.host if connection.client is not None else None


async def authenticate(tokens: TokenCache, connection: HTTPConnection) -> tuple[bool, Viewer | None]:
    """(valid, viewer) of a request: no token is valid and anonymous; a token that is present (even malformed)
    must be live. HTTP and graphql-sse decide alike. AuthDeferred when it cannot be judged now (gateway.caps)."""
    token = bearer(connection.headers)
    if token is None:
        return True, None
    if not token:
        tokens.failures.check(client_address(connection))
        tokens.failures.failed(client_address(connection))
        return False, None
    viewer = await tokens.viewer(token, client=client_address(connection))
    return viewer is not None, viewer


def deferred_response(exc: AuthDeferred) -> JSONResponse:
    """The answer to a request whose token cannot be judged now: 429 for an address that sent too many unknown
    tokens, 503 while the tokens' database does not answer; either way a GraphQL-shaped error and Retry-After."""
    extensions = {"code": exc.code, "retryAfter": exc.retry_after, **exc.extensions}
    body = {"errors": [{"message": str(exc), "extensions": extensions}]}
    return JSONResponse(body, status_code=exc.status, headers={"Retry-After": str(exc.retry_after)})


def unauthenticated_response(message: str) -> JSONResponse:
    """The 401 of a request whose token is present but not valid."""
    body = {"errors": [{"message": message, "extensions": {"code": UNAUTHENTICATED}}]}
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": 'Bearer realm="inboxql"'})
