"""The outbox: messages to send, and what became of each.

```
queued ──(send_at reached)──► sending ──► sent
   ▲  │                          │  └───► failed      (5xx: the server's text kept)
   │  └──► cancelled (undo send) └──────► uncertain   (the connection broke after DATA, or the process died
   └──── 4xx: back to queued after a backoff                while sending: reported, never resent blindly)
```

A message accepted for some recipients and refused for now (4xx) for others is `sent`, and a new entry
(`resend_later`) sends it to the refused ones after a backoff.

`enqueue` writes the entry and, when the account has a Sent folder, the message itself into the mirror at once
(its place in Sent waits for the server's UID, under the placeholder UIDVALIDITY of schema.actions), so the
sent message joins its thread before it is even delivered. `sending` is committed before the SMTP transaction
starts: an entry found `sending` by a process that starts is one whose fate nobody knows.

Every state an entry takes is in the change log (ObjectType.OUTBOX, schema.states.outbox_states), each written in
a unit of work of the account with the change: a client follows a send to `sent` in the feed.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from sqlalchemy import ScalarSelect, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mime.compose import ComposeError, Draft, compose, recipients, validate_address
from mime.parse import ParsedMessage, parse_message
from schema import actions, gmail, messages, packing
from schema.changelog import ObjectType, Op
from schema.models import Folder, Message, MessagePlace, Outbox, utcnow
from schema.states import State, outbox_state

if TYPE_CHECKING:
    from schema.unit import UnitOfWork

# Placeholder UIDs of sent messages waiting for APPENDUID: far below those of moves (-(place id)).
PLACEHOLDER_BASE = 1 << 40


class OutboxState(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNCERTAIN = "uncertain"
    CANCELLED = "cancelled"


def placeholder_identity(entry_id: int) -> str:
    return f"outbox:{entry_id}"


async def enqueue(
    uow: UnitOfWork,
    *,
    message: bytes,
    sent_copy: bytes,
    parsed: ParsedMessage,
    envelope_from: str,
    recipients: Sequence[str],
    message_id_header: str,
    send_at: datetime,
    reply_to_message_id: int | None,
    sent_folder_id: int | None,
) -> Outbox:
    entry = Outbox(
        account_id=uow.account_id,
        state=OutboxState.QUEUED.value,
        message=message,
        sent_copy=sent_copy,
        envelope_from=envelope_from,
        recipients=list(recipients),
        message_id_header=message_id_header[:191],
        reply_to_message_id=reply_to_message_id,
        send_at=send_at,
        attempts=0,
        created_at=utcnow(),
    )
    uow.session.add(entry)
    await uow.session.flush()
    uow.record(ObjectType.OUTBOX, Op.CREATE, [entry.id])
    if sent_folder_id is not None:
        fetched = messages.Fetched(
            uid=-(PLACEHOLDER_BASE + entry.id),
            flags=("\\Seen",),
            modseq=None,
            identity=placeholder_identity(entry.id),
            internaldate=send_at,
            raw=sent_copy,
            parsed=parsed,
        )
        [entry.mirror_message_id] = await messages.add(
            uow, sent_folder_id, actions.PLACEHOLDER_UIDVALIDITY, [fetched], made_up=True
        )
    # Logged as written (flushed at the latest when the unit settles), without reading the entry back.
    _logged(uow, entry.id, outbox_state(entry))
    uow.rang_actions = True
    return entry


async def queue_draft(
    uow: UnitOfWork, draft: Draft, *, send_at: datetime | None = None, reply_to_message_id: int | None = None
) -> Outbox:
    """Compose the draft once (one Message-ID and Date for both forms) and queue it.

    Raises mime.compose.ComposeError for what cannot be sent (a bad address, a line break in a header...).
    """
    now = datetime.now(UTC)
    domain = draft.sender.address.rpartition("@")[2] or "localhost"
    fixed = replace(draft, message_id=draft.message_id or f"{secrets.token_hex(16)}@{domain}", date=draft.date or now)
    message = compose(fixed)
    sent_copy = compose(fixed, include_bcc=True)
    envelope = recipients(fixed)
    if not envelope:
        raise ComposeError("to", "a message needs at least one recipient (to, cc or bcc)")
    sent_folder = await uow.session.scalar(
        select(Folder.id).where(Folder.account_id == uow.account_id, Folder.role == "sent").limit(1)
    )
    return await enqueue(
        uow,
        message=message,
        sent_copy=sent_copy,
        parsed=parse_message(sent_copy),
        envelope_from=validate_address(fixed.sender.address, "sender.address"),
        recipients=envelope,
        message_id_header=(fixed.message_id or "").strip("<>"),
        send_at=(send_at or now).astimezone(UTC).replace(tzinfo=None),
        reply_to_message_id=reply_to_message_id,
        sent_folder_id=sent_folder,
    )


async def get(session: AsyncSession, account_ids: Sequence[int] | frozenset[int], entry_id: int) -> Outbox | None:
    return await session.scalar(select(Outbox).where(Outbox.id == entry_id, Outbox.account_id.in_(list(account_ids))))


async def listing(session: AsyncSession, states: Sequence[str] | None = None, limit: int = 1000) -> list[Outbox]:
    query = select(Outbox).order_by(Outbox.id).limit(limit)
    if states:
        query = query.where(Outbox.state.in_(list(states)))
    return list(await session.scalars(query))


async def due(session: AsyncSession, account_id: int, limit: int = 50) -> list[Outbox]:
    now = utcnow()
    return list(
        await session.scalars(
            select(Outbox)
            .where(
                Outbox.account_id == account_id,
                Outbox.state == OutboxState.QUEUED.value,
                Outbox.send_at <= now,
                (Outbox.not_before.is_(None)) | (Outbox.not_before <= now),
            )
            .order_by(Outbox.send_at, Outbox.id)
            .limit(limit)
        )
    )


async def next_wakeup(session: AsyncSession, account_id: int) -> float | None:
    """Seconds until the next queued entry is due; None when nothing is queued."""
    rows = (
        await session.execute(
            select(Outbox.send_at, Outbox.not_before).where(
                Outbox.account_id == account_id, Outbox.state == OutboxState.QUEUED.value
            )
        )
    ).all()
    if not rows:
        return None
    now = utcnow()
    return max(0.0, min((max(at, nb or at) - now).total_seconds() for at, nb in rows))


async def accounts_queued(session: AsyncSession) -> set[int]:
    """The accounts with mail queued to send: a sync process's sweep rings their executors (synccore.supervisor)."""
    found = await session.scalars(select(Outbox.account_id).where(Outbox.state == OutboxState.QUEUED.value).distinct())
    return set(found)


def waiting_count() -> ScalarSelect[int]:
    """Entries of every account queued or being sent, the outbox's depth (ops.metrics): a scalar subquery, which
    a sync process's round reads in one statement with others."""
    waiting = [OutboxState.QUEUED.value, OutboxState.SENDING.value]
    return select(func.count()).select_from(Outbox).where(Outbox.state.in_(waiting)).scalar_subquery()


async def claim(uow: UnitOfWork, entry: Outbox) -> bool:
    """queued -> sending; the caller's unit commits it before any byte goes to the server. False if cancelled."""
    result = await uow.session.execute(
        update(Outbox)
        .where(Outbox.id == entry.id, Outbox.state == OutboxState.QUEUED.value)
        .values(state=OutboxState.SENDING.value, attempts=Outbox.attempts + 1)
    )
    if not getattr(result, "rowcount", 0):
        return False
    # Logged from the entry in hand, as just claimed: while it is queued only a cancel changes it, and a cancel
    # leaves nothing to claim (above).
    _logged(uow, entry.id, {**outbox_state(entry), "state": OutboxState.SENDING.value, "attempts": entry.attempts + 1})
    return True


async def orphaned_sends(uow: UnitOfWork) -> int:
    """Entries left `sending` by a process that died: their fate is unknown, so they become `uncertain`."""
    ids = list(
        await uow.session.scalars(
            select(Outbox.id)
            .where(Outbox.account_id == uow.account_id, Outbox.state == OutboxState.SENDING.value)
            .with_for_update()
        )
    )
    if not ids:
        return 0
    await uow.session.execute(
        update(Outbox)
        .where(Outbox.id.in_(ids))
        .values(
            state=OutboxState.UNCERTAIN.value,
            error="the sending process stopped during the SMTP transaction: the server may have accepted it",
        )
    )
    _changed(uow, ids)
    return len(ids)


async def sent(uow: UnitOfWork, entry: Outbox, response: str) -> None:
    """The server accepted it. The replied message gets \\Answered (an action, so it reaches the server too)."""
    await uow.session.execute(
        update(Outbox)
        .where(Outbox.id == entry.id)
        .values(state=OutboxState.SENT.value, smtp_response=response[:512], sent_at=utcnow(), error=None)
    )
    _changed(uow, [entry.id])
    if entry.reply_to_message_id is not None:
        await actions.set_flags(uow, [entry.reply_to_message_id], add=["\\Answered"], remove=[])


async def resend_later(uow: UnitOfWork, entry: Outbox, recipients: Sequence[str], delay: float, reason: str) -> int:
    """The server took the message for some recipients and refused others for now (4xx on RCPT): a new entry
    sends the same message (the same Message-ID, as an MTA retries) to those only, after a backoff. It files no
    second Sent copy and sets no flag: the first entry did both. Returns the new entry's id."""
    later = Outbox(
        account_id=entry.account_id,
        state=OutboxState.QUEUED.value,
        message=entry.message,
        sent_copy=entry.sent_copy,
        envelope_from=entry.envelope_from,
        recipients=list(recipients),
        message_id_header=entry.message_id_header,
        send_at=utcnow(),
        not_before=utcnow() + timedelta(seconds=delay),
        attempts=0,
        error=reason[:2000],
        created_at=utcnow(),
    )
    uow.session.add(later)
    await uow.session.flush()
    uow.record(ObjectType.OUTBOX, Op.CREATE, [later.id])
    uow.states.pop((ObjectType.OUTBOX, later.id), None)
    uow.rang_actions = True
    return later.id


async def retry_later(uow: UnitOfWork, entry: Outbox, delay: float, reason: str) -> None:
    """A temporary refusal (4xx, or the connection lost before DATA): queued again after a backoff."""
    await uow.session.execute(
        update(Outbox)
        .where(Outbox.id == entry.id)
        .values(
            state=OutboxState.QUEUED.value,
            not_before=utcnow() + timedelta(seconds=delay),
            error=reason[:2000],
        )
    )
    _changed(uow, [entry.id])


async def give_up(uow: UnitOfWork, entry: Outbox, state: OutboxState, reason: str) -> None:
    """failed or cancelled: the message was not sent, so it leaves the Sent folder of the mirror too.

    (An uncertain entry keeps it: it may well have been delivered.)
    """
    await uow.session.execute(
        update(Outbox).where(Outbox.id == entry.id).values(state=state.value, error=reason[:2000])
    )
    _changed(uow, [entry.id])
    if state is not OutboxState.UNCERTAIN:
        await _drop_mirror_copy(uow, entry)


async def cancel(uow: UnitOfWork, entry: Outbox) -> bool:
    """Undo send: only while the entry is still queued (True), never once it is being sent."""
    result = await uow.session.execute(
        update(Outbox)
        .where(Outbox.id == entry.id, Outbox.state == OutboxState.QUEUED.value)
        .values(state=OutboxState.CANCELLED.value, error="cancelled")
    )
    if not getattr(result, "rowcount", 0):
        return False
    _changed(uow, [entry.id])
    await _drop_mirror_copy(uow, entry)
    return True


async def filed(uow: UnitOfWork, entry: Outbox, uidvalidity: int, uid: int, identity: str | None) -> None:
    """The Sent copy is on the server at (UIDVALIDITY, UID): the mirror's placeholder takes them.

    When the folder sync mirrored the server's copy first (under its identity), that copy is the one kept.
    """
    if entry.mirror_message_id is None:
        return
    place_id = await _placeholder(uow, entry.mirror_message_id)
    if place_id is None and identity is None:
        return
    other = await messages.file_copy(uow, entry.mirror_message_id, place_id or 0, uidvalidity, uid, identity)
    if other is not None:
        await _mirrored_as(uow, entry, other)


async def filed_at_home(uow: UnitOfWork, entry: Outbox, stored: gmail.Stored, identity: str, raw: bytes) -> None:
    """Gmail filed the sent message at `stored` (All Mail) under `identity`, as `raw`: the mirror's placeholder
    becomes that real place, and its content Gmail's (which need not be our Sent copy: the Bcc header is ours).
    When the All Mail sync mirrored Gmail's copy first, that copy is the one kept."""
    if entry.mirror_message_id is None:
        return
    place_id = await _placeholder(uow, entry.mirror_message_id)
    if place_id is None:
        return
    other = await messages.take_identity(uow, entry.mirror_message_id, identity)
    if other is not None:
        await _mirrored_as(uow, entry, other)
        return
    await gmail.take_home(uow, entry.mirror_message_id, place_id, stored)
    before = await uow.session.scalar(select(Message.blob_sha256).where(Message.id == entry.mirror_message_id))
    if before is not None and before != packing.digest(raw):
        await messages.rewrite(uow, entry.mirror_message_id, raw, parse_message(raw))
        await messages.drop_unused_blobs(
            uow.session, [before], await actions.pending_blobs(uow.session, uow.account_id)
        )


async def unfiled(uow: UnitOfWork, entry: Outbox) -> None:
    """The server's copy of the sent message was not found: the mirror's own goes (the sync brings the server's;
    kept, it would stay a second copy)."""
    if entry.mirror_message_id is None:
        return
    await _mirrored_as(uow, entry, None)


async def _placeholder(uow: UnitOfWork, message_id: int) -> int | None:
    """The place of the mirror's copy of a sent message while it waits for the server's UID."""
    found: int | None = await uow.session.scalar(
        select(MessagePlace.id).where(
            MessagePlace.message_id == message_id, MessagePlace.uidvalidity == actions.PLACEHOLDER_UIDVALIDITY
        )
    )
    return found


async def _mirrored_as(uow: UnitOfWork, entry: Outbox, message_id: int | None) -> None:
    """The mirror's own copy goes: the entry's message is the server's copy the sync mirrored (or none yet)."""
    await _drop_mirror_copy(uow, entry)
    await uow.session.execute(update(Outbox).where(Outbox.id == entry.id).values(mirror_message_id=message_id))
    _changed(uow, [entry.id])


async def _drop_mirror_copy(uow: UnitOfWork, entry: Outbox) -> None:
    if entry.mirror_message_id is None:
        return
    placeholders = await uow.session.execute(
        select(MessagePlace.folder_id, MessagePlace.uid).where(
            MessagePlace.message_id == entry.mirror_message_id,
            MessagePlace.uidvalidity == actions.PLACEHOLDER_UIDVALIDITY,
        )
    )
    for folder_id, uid in placeholders.all():
        await messages.remove_places(uow, folder_id, [uid])
    await messages.drop_placeless(uow, [entry.mirror_message_id])


def _logged(uow: UnitOfWork, entry_id: int, state: State) -> None:
    """An entry this unit wrote, logged with the fields in hand (not read again when the unit settles)."""
    uow.record(ObjectType.OUTBOX, Op.UPDATE, [entry_id])
    uow.states[(ObjectType.OUTBOX, entry_id)] = state


def _changed(uow: UnitOfWork, ids: Sequence[int]) -> None:
    """Entries changed in the database: logged as the unit reads them when it settles (a state in hand from
    earlier in the unit is stale now)."""
    uow.record(ObjectType.OUTBOX, Op.UPDATE, ids)
    for entry_id in ids:
        uow.states.pop((ObjectType.OUTBOX, entry_id), None)
