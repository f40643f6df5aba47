"""Folders (IMAP mailboxes): discovery, rename, delete and the sync cursor kept on each."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schema import messages
from schema.changelog import ObjectType, Op
from schema.models import Folder, MessagePlace, utcnow

if TYPE_CHECKING:
    from schema.unit import UnitOfWork


@dataclass(frozen=True, slots=True)
class Discovered:
    name: str
    delimiter: str | None
    attributes: tuple[str, ...]
    role: str | None


async def create(uow: UnitOfWork, found: Discovered) -> Folder:
    folder = Folder(
        account_id=uow.account_id,
        name=found.name,
        delimiter=found.delimiter,
        role=found.role,
        attributes=" ".join(found.attributes)[:512],
        sync_state="initial",
        total_count=0,
        unread_count=0,
    )
    uow.session.add(folder)
    await uow.session.flush()
    uow.record(ObjectType.FOLDER, Op.CREATE, [folder.id])
    return folder


async def update_listing(uow: UnitOfWork, folder_id: int, found: Discovered) -> None:
    await uow.session.execute(
        update(Folder)
        .where(Folder.id == folder_id)
        .values(delimiter=found.delimiter, role=found.role, attributes=" ".join(found.attributes)[:512])
    )
    uow.record(ObjectType.FOLDER, Op.UPDATE, [folder_id])


async def rename(uow: UnitOfWork, folder_id: int, new_name: str) -> None:
    await uow.session.execute(update(Folder).where(Folder.id == folder_id).values(name=new_name))
    uow.record(ObjectType.FOLDER, Op.UPDATE, [folder_id])


async def remove(uow: UnitOfWork, folder_id: int) -> None:
    """The folder is gone from the server: its places go; messages found nowhere else become orphans.

    Discovery and the action executor can both conclude that a folder went (a deleteFolder the server performed
    is also missing from the next LIST): the row is locked first, and a folder already removed is left alone, so
    the log never says twice that it was deleted."""
    if await uow.session.scalar(select(Folder.id).where(Folder.id == folder_id).with_for_update()) is None:
        return
    await messages.remove_places(uow, folder_id)
    # Places of messages with a pending action were left above, but the folder's row takes them along (ON DELETE
    # CASCADE): their messages must be refreshed too, or one found nowhere else is never marked an orphan.
    left = list(await uow.session.scalars(select(MessagePlace.message_id).where(MessagePlace.folder_id == folder_id)))
    uow.dirty_messages.update(left)
    uow.moved_messages.update(left)
    uow.dirty_folders.discard(folder_id)
    await uow.session.execute(delete(Folder).where(Folder.id == folder_id))
    uow.record(ObjectType.FOLDER, Op.DELETE, [folder_id])


async def set_cursor(uow: UnitOfWork, folder_id: int, **values: Any) -> None:
    """Sync bookkeeping (uidvalidity, uidnext, highestmodseq, progress); logged only when sync_state moves."""
    if "sync_state" in values:
        before = await uow.session.scalar(select(Folder.sync_state).where(Folder.id == folder_id))
        if before != values["sync_state"]:
            uow.record(ObjectType.FOLDER, Op.UPDATE, [folder_id])
    await uow.session.execute(update(Folder).where(Folder.id == folder_id).values(**values))


async def set_sync_error(uow: UnitOfWork, folder_id: int, error: str | None) -> None:
    """Record why the folder's sync failed (None: it synced), and when; logged when the error changes, so clients
    see it. The same error again moves only its time (`sync_error_at`, for the operator status page), unlogged:
    clients' state of the folder (schema.states) does not hold the time, and a folder retried with backoff would
    otherwise log an entry per retry that changes nothing they see."""
    before = await uow.session.execute(select(Folder.sync_error).where(Folder.id == folder_id))
    row = before.first()
    if row is None:
        return  # gone meanwhile
    when = utcnow() if error is not None else None
    if row.sync_error == error and error is None:
        return  # nothing new
    await uow.session.execute(update(Folder).where(Folder.id == folder_id).values(sync_error=error, sync_error_at=when))
    if row.sync_error != error:
        uow.record(ObjectType.FOLDER, Op.UPDATE, [folder_id])


async def record_server_counts(uow: UnitOfWork, counts: dict[int, int]) -> None:
    """The servers' message count of these folders (EXISTS of a SELECT, MESSAGES of a STATUS), by folder id.

    Not logged, as set_cursor logs none of its bookkeeping but a sync state's move: clients' state of a folder
    (schema.states) does not hold it, and it changes with every message that arrives on the server; logging it
    would wake every subscriber and webhook of the account for nothing they see. Only the operator's views read it
    (schema.status), straight from the row. Written only where it differs, so a folder polled with nothing new
    costs no write."""
    for folder_id, count in counts.items():
        await uow.session.execute(
            update(Folder)
            .where(Folder.id == folder_id, (Folder.server_count.is_(None)) | (Folder.server_count != count))
            .values(server_count=count)
        )


async def mark_synced(uow: UnitOfWork, folder_ids: Iterable[int]) -> None:
    """The folders were just found as the server holds them (a sync ended, or their STATUS showed them as their
    last sync left them): `synced_at` is now. Bookkeeping for the operator's views (schema.status), not logged, like
    record_server_counts: clients' state of a folder does not hold it. One statement for all of them."""
    ids = sorted(set(folder_ids))
    if ids:
        await uow.session.execute(update(Folder).where(Folder.id.in_(ids)).values(synced_at=utcnow()))


async def by_ids(session: AsyncSession, ids: Iterable[int]) -> dict[int, Folder]:
    return {f.id: f for f in await session.scalars(select(Folder).where(Folder.id.in_(list(ids))))}


async def with_role(session: AsyncSession, account_id: int, role: str) -> Folder | None:
    """The account's folder of this role (the first by id, should a server name two)."""
    found: Folder | None = await session.scalar(
        select(Folder).where(Folder.account_id == account_id, Folder.role == role).order_by(Folder.id).limit(1)
    )
    return found


async def of_account(session: AsyncSession, account_id: int) -> list[Folder]:
    """Every folder of the account (deleting ones included)."""
    return list(await session.scalars(select(Folder).where(Folder.account_id == account_id)))


async def places_under(session: AsyncSession, folder_id: int, uidvalidity: int) -> int:
    """How many places the folder holds under a UIDVALIDITY, from the count its row keeps (total_count, kept by every
    unit that changes its places) less the places under any other UIDVALIDITY (the placeholders of pending moves,
    under 0; leftovers of an old one): those are few, and found through uq_places_uid, so the cost does not grow with
    the folder as a count of its places does (schema.messages.held_count). One statement: one snapshot of both. A
    folder that is gone holds nothing."""
    others = (
        select(func.count())
        .select_from(MessagePlace)
        .where(MessagePlace.folder_id == folder_id, MessagePlace.uidvalidity != uidvalidity)
        .scalar_subquery()
    )
    found = await session.scalar(select(Folder.total_count - others).where(Folder.id == folder_id))
    return max(0, int(found or 0))


async def with_places_held(session: AsyncSession, uidvalidities: Mapping[int, int]) -> dict[int, tuple[Folder, int]]:
    """These folders' rows (folder id -> the UIDVALIDITY to count under), each with its places under that UIDVALIDITY
    (places_under, for many folders at once): what a pass compares with the servers' STATUS before it selects them
    (synccore.account). One statement, one snapshot of rows and places, whatever the number of folders; the places
    under other UIDVALIDITYs are found through uq_places_uid (two ranges of each folder's), never by reading every
    place of a folder. A folder that is gone is left out."""
    if not uidvalidities:
        return {}
    others = (
        select(MessagePlace.folder_id, func.count().label("n"))
        .where(
            or_(
                *(
                    and_(MessagePlace.folder_id == folder_id, MessagePlace.uidvalidity != uidvalidity)
                    for folder_id, uidvalidity in sorted(uidvalidities.items())
                )
            )
        )
        .group_by(MessagePlace.folder_id)
        .subquery()
    )
    rows = await session.execute(
        select(Folder, func.coalesce(others.c.n, 0))
        .outerjoin(others, others.c.folder_id == Folder.id)
        .where(Folder.id.in_(sorted(uidvalidities)))
    )
    return {folder.id: (folder, max(0, folder.total_count - int(n))) for folder, n in rows}
