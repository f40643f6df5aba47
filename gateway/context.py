"""What one request carries: who asks (the viewer), one database connection, and its DataLoaders."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Executable
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.errors import Unauthenticated

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.loaders import Loaders
    from gateway.signing import Signer


@dataclass(frozen=True, slots=True)
class Viewer:
    token_id: int
    account_ids: frozenset[int]
    # Names the token in Redis (a prefix of its hash: unique across databases, unlike the row id).
    rate_key: str = ""
    # The admin scope (schema.tokens): webhooks of the accounts above may be managed; no other account.
    admin: bool = False


class Reader:
    """One connection per request, taken on the first statement and given back when the request ends.

    DataLoaders of one request dispatch concurrently; a connection runs one statement at a time, so
    statements queue on a lock instead of taking more connections from the pool.
    """

    def __init__(self, engine: AsyncEngine, *, hold: bool = True) -> None:
        self.engine = engine
        # hold=False: a connection per statement, given back at once (a batch of change-log events shared by
        # many subscribers has no request whose end would give it back).
        self.hold = hold
        self._conn: AsyncConnection | None = None
        self._lock = asyncio.Lock()

    async def rows(self, stmt: Executable) -> Sequence[Row[Any]]:
        if not self.hold:
            async with self.engine.connect() as conn:
                return (await conn.execute(stmt)).all()
        async with self._lock:
            if self._conn is None:
                self._conn = await self.engine.connect()
            result = await self._conn.execute(stmt)
            return result.all()

    async def scalar(self, stmt: Executable) -> Any:
        found = await self.rows(stmt)
        return found[0][0] if found else None

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await conn.close()


@dataclass
class Context:
    request: Any
    response: Any
    viewer: Viewer | None
    db: Reader
    loaders: Loaders
    config: GatewayConfig
    signer: Signer
    cost: dict[str, int] = field(default_factory=dict)
    # graphql-transport-ws: the payload of connection_init (where a websocket client sends its token).
    connection_params: Any = None
    # The process's doorbell fan-out (gateway.fanout.Fanout), which subscriptions wait on.
    fanout: Any = None

    @property
    def account_ids(self) -> frozenset[int]:
        """The accounts this request may read; UNAUTHENTICATED without a valid token."""
        if self.viewer is None:
            raise Unauthenticated("a valid API token is required (Authorization: Bearer TOKEN)")
        return self.viewer.account_ids

    async def close(self) -> None:
        await self.db.close()
