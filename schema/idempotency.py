"""Idempotency keys of mutations: a retry with the same key within KEEP gets the first result; after that the key
is forgotten (the sync process's housekeeping deletes it, and one found meanwhile counts as unused)."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from schema.models import MutationKey, utcnow

KEEP = timedelta(hours=24)


def cutoff(now: datetime | None = None) -> datetime:
    """Keys created before this are expired."""
    return (now or utcnow()) - KEEP


def expired(key: MutationKey, now: datetime | None = None) -> bool:
    return key.created_at < cutoff(now)


async def forget(session: AsyncSession, token_id: int, key: str) -> None:
    """Delete the key if it expired, so that it can be used again."""
    await session.execute(
        delete(MutationKey).where(
            MutationKey.token_id == token_id, MutationKey.key == key, MutationKey.created_at < cutoff()
        )
    )


async def expire(session: AsyncSession, now: datetime | None = None) -> int:
    """Delete every expired key; returns how many."""
    result = await session.execute(delete(MutationKey).where(MutationKey.created_at < cutoff(now)))
    return int(getattr(result, "rowcount", 0) or 0)
