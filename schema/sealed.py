"""Every column sealed with schema.crypto, and re-sealing them under the newest key of the ring (a rotation).

Re-sealing writes each value back only if it is still the one that was read (compare and set), so a password
set meanwhile by another process is never overwritten with the old one; that value is sealed with the newest
key already, since a box re-reads its ring before it seals.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import InstrumentedAttribute

from schema.crypto import CredentialBox, Purpose
from schema.db import session_factory
from schema.models import Account, Webhook

BATCH = 500


@dataclass(frozen=True, slots=True)
class Sealed:
    """A sealed column, the key of its rows, and what it holds."""

    key: InstrumentedAttribute[int]
    column: InstrumentedAttribute[bytes] | InstrumentedAttribute[bytes | None]
    purpose: Purpose


SEALED = (
    Sealed(Account.id, Account.imap_password, Purpose.ACCOUNT),
    Sealed(Account.id, Account.smtp_password, Purpose.ACCOUNT),
    Sealed(Account.id, Account.oauth2_refresh_token, Purpose.ACCOUNT),
    Sealed(Account.id, Account.oauth2_access_token, Purpose.ACCOUNT),
    Sealed(Webhook.id, Webhook.secret, Purpose.WEBHOOK),
)


@dataclass(frozen=True, slots=True)
class Resealed:
    resealed: int  # values re-sealed under the newest key
    current: int  # values that were under it already
    changed_meanwhile: int  # values replaced by another writer between read and write (sealed anew by it)


async def reseal(engine: AsyncEngine, box: CredentialBox) -> Resealed:
    """Re-seal every stored credential that is not sealed with the ring's newest key. Raises CredentialError
    (and re-seals nothing further) when a value opens with none of the ring's keys."""
    sessions = session_factory(engine)
    resealed = current = changed = 0
    for sealed in SEALED:
        after = 0
        while True:
            async with sessions() as s:
                rows = list(
                    await s.execute(
                        select(sealed.key, sealed.column)
                        .where(sealed.key > after, sealed.column.is_not(None))
                        .order_by(sealed.key)
                        .limit(BATCH)
                    )
                )
            if not rows:
                break
            after = rows[-1][0]
            for row_id, value in rows:
                if value is None:
                    continue
                if box.is_current(value):
                    current += 1
                    continue
                fresh = box.seal(box.open(value, sealed.purpose), sealed.purpose)
                async with sessions() as s, s.begin():
                    result = await s.execute(
                        update(sealed.key.class_)
                        .where(sealed.key == row_id, sealed.column == value)
                        .values({sealed.column.key: fresh})
                    )
                if getattr(result, "rowcount", 0):
                    resealed += 1
                else:
                    changed += 1
    return Resealed(resealed, current, changed)


async def key_ids_in_use(engine: AsyncEngine, box: CredentialBox) -> dict[int | None, int]:
    """How many stored values each master key sealed (None: sealed before key ids existed)."""
    sessions = session_factory(engine)
    counts: dict[int | None, int] = {}
    async with sessions() as s:
        for sealed in SEALED:
            for (value,) in await s.execute(select(sealed.column).where(sealed.column.is_not(None))):
                if value is None:
                    continue
                key_id = box.key_id(value)
                counts[key_id] = counts.get(key_id, 0) + 1
    return counts


__all__ = ["SEALED", "Resealed", "Sealed", "key_ids_in_use", "reseal"]
