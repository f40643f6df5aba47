"""The change log: every create, update and delete of a mirrored object, in commit order per account.

Beside the mirror it carries the write-back queue's objects, actions (schema.actions) and outbox entries
(schema.outbox), so a client follows a mutation or a send to its end in the same feed instead of polling.

Why a counter row and not an auto-increment id: two transactions may take ids 7 and 8, and 8 may commit
first; a reader that saw 8 and moved its cursor past 7 would never see 7. Here a transaction allocates its
sequence numbers by updating the account's ``change_seq`` row as the very last thing before COMMIT. The row
lock is held until COMMIT, so the next writer of that account reads the counter only after this one has
committed: per account, seq order is commit order, and a reader at seq N has seen everything before N.

Taking the counter last keeps the lock short and rules out deadlocks with it: a transaction that holds the
counter touches no other row before it commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schema import bulk
from schema.db import json_dumps
from schema.models import ChangeLog, ChangeSeq, table, utcnow


class ObjectType(StrEnum):
    ACCOUNT = "account"
    FOLDER = "folder"
    LABEL = "label"
    THREAD = "thread"
    MESSAGE = "message"
    OUTBOX = "outbox"
    ACTION = "action"


class Op(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


# Parents before children for creates and updates; children before parents for deletes. Outbox entries and
# actions name messages and folders, so they come after them: a failed action's undo of the mirror is read before
# the action's `failed`, a send's Sent copy before its entry, and an entry before the \Answered action it queued.
_ORDER = [
    ObjectType.ACCOUNT,
    ObjectType.FOLDER,
    ObjectType.LABEL,
    ObjectType.THREAD,
    ObjectType.MESSAGE,
    ObjectType.OUTBOX,
    ObjectType.ACTION,
]


class ChangeSet:
    """The changes of one transaction, coalesced per object (create then update is one create)."""

    def __init__(self) -> None:
        self._ops: dict[tuple[ObjectType, int], Op] = {}

    def record(self, object_type: ObjectType, op: Op, ids: Iterable[int]) -> None:
        for object_id in ids:
            key = (object_type, object_id)
            before = self._ops.get(key)
            if before is None:
                self._ops[key] = op
            elif before is Op.CREATE and op is Op.DELETE:
                # Never visible outside this transaction: nothing to tell anyone.
                del self._ops[key]
            elif op is Op.DELETE:
                self._ops[key] = Op.DELETE

    def __len__(self) -> int:
        return len(self._ops)

    def ids(self, object_type: ObjectType, *, live: bool = True) -> list[int]:
        """Ids of that type that still exist after this transaction (or, with live=False, deleted ones)."""
        return [oid for (kind, oid), op in self._ops.items() if kind is object_type and (op is not Op.DELETE) == live]

    def ordered(self) -> list[tuple[ObjectType, int, Op]]:
        """Creates and updates parents first, then deletes children first."""
        rank = {kind: i for i, kind in enumerate(_ORDER)}
        living: list[tuple[ObjectType, int, Op]] = sorted(
            ((k, i, op) for (k, i), op in self._ops.items() if op is not Op.DELETE),
            key=lambda e: (rank[e[0]], e[1]),
        )
        dead: list[tuple[ObjectType, int, Op]] = sorted(
            ((k, i, op) for (k, i), op in self._ops.items() if op is Op.DELETE),
            key=lambda e: (-rank[e[0]], e[1]),
        )
        return living + dead


async def append(
    session: AsyncSession,
    account_id: int,
    changes: ChangeSet,
    states: Mapping[tuple[ObjectType, int], dict[str, Any]],
) -> int | None:
    """Write the log rows of a transaction; must be its last statement before COMMIT. Returns the newest seq."""
    entries = changes.ordered()
    if not entries:
        return None
    n = len(entries)
    # LAST_INSERT_ID(expr) hands the new value back in the UPDATE's own answer (the OK packet's insert id, the
    # cursor's lastrowid): no SELECT of the counter after it.
    result = await session.execute(
        update(ChangeSeq)
        .where(ChangeSeq.account_id == account_id)
        .values(last_seq=func.last_insert_id(ChangeSeq.last_seq + n))
    )
    if getattr(result, "rowcount", 0) == 0:
        # The account's first change (its creation): nobody else can know the account yet.
        session.add(ChangeSeq(account_id=account_id, last_seq=n))
        await session.flush()
        last = n
    else:
        last = int(getattr(result, "lastrowid", 0) or 0)
        if last < n:  # a driver that does not pass the insert id on: read the counter
            found = await session.scalar(select(ChangeSeq.last_seq).where(ChangeSeq.account_id == account_id))
            assert found is not None
            last = found
    first = last - n + 1
    now = utcnow()
    rows = [
        {
            "account_id": account_id,
            "seq": first + i,
            "object_type": kind.value,
            "object_id": oid,
            "op": op.value,
            "data": None if op is Op.DELETE else states.get((kind, oid)),
            "created_at": now,
        }
        for i, (kind, oid, op) in enumerate(entries)
    ]
    # One bulk command of binary parameters where the driver and server have it (a unit of 1,000 flag changes
    # logs over 2,000 entries: a multi-row INSERT's text is built, escaped and parsed back); else Core (not the
    # ORM's bulk insert, whose per-row bookkeeping was a third of the time the log took).
    if not await bulk.insert(session, table(ChangeLog), rows, dumps=json_dumps):
        await session.execute(insert(table(ChangeLog)), rows)
    return last


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    object_type: ObjectType
    object_id: int
    op: Op
    data: dict[str, Any] | None
    created_at: datetime


async def read(
    session: AsyncSession,
    account_id: int,
    after: int,
    limit: int = 500,
    types: Sequence[ObjectType] | None = None,
) -> list[Change]:
    query = (
        select(ChangeLog)
        .where(ChangeLog.account_id == account_id, ChangeLog.seq > after)
        .order_by(ChangeLog.seq)
        .limit(limit)
    )
    if types:
        query = query.where(ChangeLog.object_type.in_([t.value for t in types]))
    rows = (await session.scalars(query)).all()
    return [Change(r.seq, ObjectType(r.object_type), r.object_id, Op(r.op), r.data, r.created_at) for r in rows]


async def newest_seq(session: AsyncSession, account_id: int) -> int:
    found = await session.scalar(select(ChangeSeq.last_seq).where(ChangeSeq.account_id == account_id))
    return found or 0


async def cursor_valid(session: AsyncSession, account_id: int, after: int) -> bool:
    """Whether a reader at `after` can still be told every change after it.

    It can when it is at the newest seq, or when the log still holds entry after+1: expiry deletes from the
    oldest end, so then nothing between `after` and what is kept was deleted. Check *after* reading the
    entries (an expiry between the read and the check then errs on the side of the error).
    """
    if after < 0:
        return False
    newest = await newest_seq(session, account_id)
    if after == newest:
        return True
    if after > newest:
        return False
    found = await session.scalar(
        select(ChangeLog.seq).where(ChangeLog.account_id == account_id, ChangeLog.seq == after + 1)
    )
    return found is not None


async def expire(session: AsyncSession, account_id: int | None, before: datetime) -> int:
    """Delete the entries written before `before` (of one account, or of all), always keeping each account's
    newest entry, so that a reader at the newest seq stays valid. Returns how many were deleted."""
    newest = select(ChangeSeq.last_seq).where(ChangeSeq.account_id == ChangeLog.account_id).scalar_subquery()
    stmt = delete(ChangeLog).where(ChangeLog.created_at < before, ChangeLog.seq < newest)
    if account_id is not None:
        stmt = stmt.where(ChangeLog.account_id == account_id)
    result = await session.execute(stmt)
    return int(getattr(result, "rowcount", 0) or 0)
