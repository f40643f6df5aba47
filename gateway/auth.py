"""Bearer tokens: `Authorization: Bearer iqt_...` -> the accounts the request may read, and its admin scope.

Grants are cached in the process for `token_cache_seconds` (a revocation takes effect within that time), so
a busy client costs no token query per request. The cache is keyed by the token's hash: no plaintext token
is kept or logged.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.context import Viewer
from schema import tokens
from schema.db import session_factory

MAX_CACHED = 10_000


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of an Authorization header; "" for a header that is there but malformed."""
    value = headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return ""
    return token.strip()


class TokenCache:
    def __init__(self, engine: AsyncEngine, ttl: float) -> None:
        self.sessions = session_factory(engine)
        self.ttl = ttl
        self._grants: dict[bytes, tuple[float, Viewer | None]] = {}

    async def viewer(self, token: str, now: float | None = None) -> Viewer | None:
        """The viewer of a live token; None for an unknown or revoked one."""
        now = time.monotonic() if now is None else now
        key = tokens.token_hash(token)
        cached = self._grants.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        async with self.sessions() as session, session.begin():
            grant = await tokens.lookup(session, token)
            if grant is not None:
                await tokens.touch(session, grant.token_id)
        found = None if grant is None else Viewer(grant.token_id, grant.account_ids, key.hex()[:32], admin=grant.admin)
        if len(self._grants) >= MAX_CACHED:
            self._grants.clear()
        self._grants[key] = (now + self.ttl, found)
        return found

    async def viewer_by_id(self, token_id: int) -> Viewer | None:
        async with self.sessions() as session:
            grant = await tokens.lookup_id(session, token_id)
        return None if grant is None else Viewer(grant.token_id, grant.account_ids, f"id{token_id}", admin=grant.admin)
