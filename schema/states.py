"""The logged state of each object type: what a change-log entry carries and what folding it rebuilds.

Bodies and raw MIME are not part of it (they never change once mirrored); everything a client caches is.
Actions and outbox entries carry what a client shows of them (their state, their error, what they are about),
never their payloads or the bytes of a message to send.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from schema.changelog import ObjectType
from schema.models import Account, Action, Folder, Label, Message, MessageLabel, MessagePlace, Outbox, Thread

State = dict[str, Any]


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


async def account_states(session: AsyncSession, ids: Sequence[int]) -> dict[int, State]:
    rows = await session.scalars(select(Account).where(Account.id.in_(ids)))
    return {a.id: {"address": a.address, "sync_state": a.sync_state} for a in rows}


def folder_state(f: Folder) -> State:
    """A folder's logged state from its row (schema.aggregates logs the folders it counts from the rows it locked)."""
    return {
        "name": f.name,
        "role": f.role,
        "delimiter": f.delimiter,
        "total_count": f.total_count,
        "unread_count": f.unread_count,
        "sync_state": f.sync_state,
        "sync_error": f.sync_error,
    }


async def folder_states(session: AsyncSession, ids: Sequence[int]) -> dict[int, State]:
    rows = await session.scalars(select(Folder).where(Folder.id.in_(ids)))
    return {f.id: folder_state(f) for f in rows}


async def label_states(session: AsyncSession, ids: Sequence[int]) -> dict[int, State]:
    rows = await session.scalars(select(Label).where(Label.id.in_(ids)))
    return {lb.id: {"name": lb.name, "kind": lb.kind, "role": lb.role} for lb in rows}


async def thread_states(session: AsyncSession, ids: Sequence[int]) -> dict[int, State]:
    # Columns, not ORM objects: no identity map to go stale behind a bulk UPDATE, and no per-object bookkeeping.
    cols = (
        Thread.id,
        Thread.subject,
        Thread.snippet,
        Thread.participants,
        Thread.message_count,
        Thread.unread_count,
        Thread.starred,
        Thread.last_message_at,
        Thread.folder_ids,
        Thread.label_ids,
    )
    rows = await session.execute(select(*cols).where(Thread.id.in_(ids)))
    return {
        t.id: {
            "subject": t.subject,
            "snippet": t.snippet,
            "participants": t.participants,
            "message_count": t.message_count,
            "unread_count": t.unread_count,
            "starred": t.starred,
            "last_message_at": iso(t.last_message_at),
            "folder_ids": t.folder_ids,
            "label_ids": t.label_ids,
        }
        for t in rows
    }


async def message_states(session: AsyncSession, ids: Sequence[int]) -> dict[int, State]:
    cols = (
        Message.id,
        Message.thread_id,
        Message.subject,
        Message.from_addrs,
        Message.date,
        Message.unread,
        Message.starred,
        Message.answered,
        Message.draft,
        Message.malformed,
        Message.message_id_header,
    )
    folders: dict[int, set[int]] = defaultdict(set)
    for mid, fid in await session.execute(
        select(MessagePlace.message_id, MessagePlace.folder_id).where(MessagePlace.message_id.in_(ids))
    ):
        folders[mid].add(fid)
    labels: dict[int, set[int]] = defaultdict(set)
    for mid, lid in await session.execute(
        select(MessageLabel.message_id, MessageLabel.label_id).where(MessageLabel.message_id.in_(ids))
    ):
        labels[mid].add(lid)
    out: dict[int, State] = {}
    for row in await session.execute(select(*cols).where(Message.id.in_(ids))):
        out[row.id] = {
            "thread_id": row.thread_id,
            "subject": row.subject,
            "from": row.from_addrs,
            "date": iso(row.date),
            "unread": row.unread,
            "starred": row.starred,
            "answered": row.answered,
            "draft": row.draft,
            "malformed": row.malformed,
            "message_id": row.message_id_header,
            "folder_ids": sorted(folders[row.id]),
            "label_ids": sorted(labels[row.id]),
        }
    return out


def action_state(
    kind: str,
    state: str,
    error: str | None,
    message_id: int | None,
    folder_id: int | None,
    attempts: int,
    created_at: datetime | None,
    finished_at: datetime | None,
) -> State:
    """An action's logged state from its fields: what action_states reads, and what schema.actions logs from the
    rows it has in hand when it queues or completes actions in bulk."""
    return {
        "kind": kind,
        "state": state,
        "error": error,
        "message_id": message_id,
        "folder_id": folder_id,
        "attempts": attempts,
        "created_at": iso(created_at),
        "finished_at": iso(finished_at),
    }


async def action_states(session: AsyncSession, ids: Sequence[int]) -> dict[int, State]:
    cols = (
        Action.id,
        Action.kind,
        Action.state,
        Action.error,
        Action.message_id,
        Action.folder_id,
        Action.attempts,
        Action.created_at,
        Action.finished_at,
    )
    return {
        row.id: action_state(
            row.kind,
            row.state,
            row.error,
            row.message_id,
            row.folder_id,
            row.attempts,
            row.created_at,
            row.finished_at,
        )
        for row in await session.execute(select(*cols).where(Action.id.in_(ids)))
    }


def outbox_state(row: Any) -> State:
    """An outbox entry's logged state from its fields (a row of outbox_states' columns, or an `Outbox` in hand):
    what outbox_states reads, and what schema.outbox logs from the entry it has just written."""
    return {
        "state": row.state,
        "error": row.error,
        "smtp_response": row.smtp_response,
        "send_at": iso(row.send_at),
        "sent_at": iso(row.sent_at),
        "recipients": list(row.recipients or ()),
        "attempts": row.attempts,
        "message_id_header": row.message_id_header,
        "message_id": row.mirror_message_id,
        "replied_message_id": row.reply_to_message_id,
        "created_at": iso(row.created_at),
    }


async def outbox_states(session: AsyncSession, ids: Sequence[int]) -> dict[int, State]:
    # Columns named one by one: the entry's message bytes (message, sent_copy) are never read here.
    cols = (
        Outbox.id,
        Outbox.state,
        Outbox.error,
        Outbox.smtp_response,
        Outbox.send_at,
        Outbox.sent_at,
        Outbox.recipients,
        Outbox.attempts,
        Outbox.message_id_header,
        Outbox.mirror_message_id,
        Outbox.reply_to_message_id,
        Outbox.created_at,
    )
    return {row.id: outbox_state(row) for row in await session.execute(select(*cols).where(Outbox.id.in_(ids)))}


_READERS = {
    ObjectType.ACCOUNT: account_states,
    ObjectType.FOLDER: folder_states,
    ObjectType.LABEL: label_states,
    ObjectType.THREAD: thread_states,
    ObjectType.MESSAGE: message_states,
    ObjectType.OUTBOX: outbox_states,
    ObjectType.ACTION: action_states,
}


async def states(session: AsyncSession, object_type: ObjectType, ids: Sequence[int]) -> dict[int, State]:
    """The current logged state of the given objects (missing ids are left out)."""
    out: dict[int, State] = {}
    for start in range(0, len(ids), 1000):
        out.update(await _READERS[object_type](session, ids[start : start + 1000]))
    return out
