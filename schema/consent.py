"""The consent flow's server-side steps (gateway.consent): stored by the SHA-256 of their secret, taken once.

A step is `put` with a lifetime and `take`n by deleting it in the same transaction that reads it, so of two
requests carrying the same state only one gets it (the other finds nothing: a reused state); an expired one is
never handed out. `prune` drops the expired ones nobody came back for.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from schema.models import ConsentFlow, utcnow

LINK = "link"
STATE = "state"


def _key(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


async def put(session: AsyncSession, kind: str, secret: str, data: dict[str, Any], lifetime: timedelta) -> None:
    session.add(ConsentFlow(key=_key(secret), kind=kind, data=data, expires_at=utcnow() + lifetime))


async def take(session: AsyncSession, kind: str, secret: str) -> dict[str, Any] | None:
    """The step's data, deleted as it is read (the caller commits); None when unknown, used, expired or of
    another kind."""
    row = await session.scalar(select(ConsentFlow).where(ConsentFlow.key == _key(secret)).with_for_update())
    if row is None:
        return None
    await session.execute(delete(ConsentFlow).where(ConsentFlow.key == row.key))
    if row.kind != kind or row.expires_at < utcnow():
        return None
    return dict(row.data)


async def prune(session: AsyncSession) -> int:
    result = await session.execute(delete(ConsentFlow).where(ConsentFlow.expires_at < utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)
