"""Messages a folder sync left out, with why: the API lists them, so a message is never silently missing.

A message larger than the sync downloads is "too_large" (decided from RFC822.SIZE, before a byte of it is
fetched); one the store refused even raw and flagged is "unstorable". Either way the rest of its folder syncs on.
A record goes with its UID: when the server expunges it, when the folder's UIDVALIDITY changes, or when the
message is mirrored after all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import delete, select
from sqlalchemy.dialects.mysql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from schema.models import SkippedMessage, table, utcnow

if TYPE_CHECKING:
    from schema.unit import UnitOfWork

TOO_LARGE = "too_large"
UNSTORABLE = "unstorable"


@dataclass(frozen=True, slots=True)
class Skip:
    uid: int
    size: int | None
    kind: str
    reason: str


async def record(uow: UnitOfWork, folder_id: int, uidvalidity: int, skips: Sequence[Skip]) -> None:
    if not skips:
        return
    stmt = insert(table(SkippedMessage))
    await uow.session.execute(
        stmt.on_duplicate_key_update(size=stmt.inserted.size, kind=stmt.inserted.kind, reason=stmt.inserted.reason),
        [
            {
                "account_id": uow.account_id,
                "folder_id": folder_id,
                "uidvalidity": uidvalidity,
                "uid": s.uid,
                "size": s.size,
                "kind": s.kind,
                "reason": s.reason[:1024],
                "skipped_at": utcnow(),
            }
            for s in skips
        ],
    )


async def of_folder(session: AsyncSession, folder_id: int, uidvalidity: int) -> dict[int, Skip]:
    """The folder's skipped messages under this UIDVALIDITY, by UID."""
    rows = await session.execute(
        select(SkippedMessage.uid, SkippedMessage.size, SkippedMessage.kind, SkippedMessage.reason).where(
            SkippedMessage.folder_id == folder_id, SkippedMessage.uidvalidity == uidvalidity
        )
    )
    return {r.uid: Skip(r.uid, r.size, r.kind, r.reason) for r in rows}


async def forget(
    uow: UnitOfWork, folder_id: int, uidvalidity: int, *, uids: Sequence[int] = (), keep: set[int] | None = None
) -> None:
    """Drop the records of these UIDs and, given `keep` (every UID the server lists now), of the UIDs not in it
    and of any other UIDVALIDITY."""
    s = uow.session
    for start in range(0, len(uids), 1000):
        await s.execute(
            delete(SkippedMessage).where(
                SkippedMessage.folder_id == folder_id,
                SkippedMessage.uidvalidity == uidvalidity,
                SkippedMessage.uid.in_(uids[start : start + 1000]),
            )
        )
    if keep is None:
        return
    rows = await s.execute(
        select(SkippedMessage.id, SkippedMessage.uidvalidity, SkippedMessage.uid).where(
            SkippedMessage.folder_id == folder_id
        )
    )
    stale = [r.id for r in rows if r.uidvalidity != uidvalidity or r.uid not in keep]
    if stale:
        await s.execute(delete(SkippedMessage).where(SkippedMessage.id.in_(stale)))
