"""Derived values kept current inside a unit of work: message flags over places, threads, folder counts.

Each refresh reads what it derives from in a few set-wise statements, writes only what changed and logs
an UPDATE (or DELETE) for it, so the change log carries every visible change and nothing else.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, case, delete, func, insert, literal, null, select, tuple_, union_all, update
from sqlalchemy.engine import Result

from schema import bulk, gmail, labels
from schema.changelog import ObjectType, Op
from schema.db import ids_in, json_dumps, upsert
from schema.models import Folder, Label, Message, MessageLabel, MessagePlace, Thread, table, utcnow
from schema.states import State, folder_state, iso

if TYPE_CHECKING:
    from schema.unit import UnitOfWork

SEEN, FLAGGED, ANSWERED, DRAFT = "\\Seen", "\\Flagged", "\\Answered", "\\Draft"
MAX_PARTICIPANTS = 50


def keywords_of(flags: Iterable[str]) -> set[str]:
    """IMAP keywords (not system flags): they become labels on generic servers."""
    return {f for f in flags if not f.startswith("\\")}


def _chunks(ids: Sequence[int], size: int = 1000) -> list[Sequence[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


async def refresh_messages(uow: UnitOfWork, ids: Sequence[int]) -> None:
    """Recompute flags and labels of messages whose places changed; orphan those with no place left."""
    s = uow.session
    for chunk in _chunks(ids):
        # The messages are locked before their places are read. Two units changing one message's places at once
        # (the inbox's sync on its IDLE connection removes its last place there while a poll adds one in the folder
        # it moved to) each see only their own change until the other commits: unlocked, the one that wrote last
        # wrote what it had read before the other's commit (an orphan mark on a message that has a place, which
        # orphan collection then deleted with that place). Locked, the second reads after the first committed.
        rows = (
            await s.execute(
                select(
                    Message.id,
                    Message.thread_id,
                    Message.unread,
                    Message.starred,
                    Message.answered,
                    Message.draft,
                    Message.orphaned_at,
                    *_LOGGED_MESSAGE_COLUMNS,
                )
                .where(ids_in(Message.id, chunk))
                .order_by(Message.id)
                .with_for_update()
            )
        ).all()
        places: dict[int, list[set[str]]] = defaultdict(list)
        folders: dict[int, set[int]] = defaultdict(set)
        gmail_names: dict[int, set[str]] = defaultdict(set)  # X-GM-LABELS, on Gmail accounts
        current_labels: dict[int, set[int]] = defaultdict(set)
        linked: dict[str, int] = {}  # the names of the labels linked now, and their ids
        # The places and the label links (with the labels' names) in one statement, a round trip and a statement's
        # Python less per unit: a link is a row without flags, carrying its label id where a place carries its
        # folder id, and its label's name where a place carries its Gmail labels.
        rows_of_places: Result[int, int, str | None, str | None] = await s.execute(
            union_all(
                select(MessagePlace.message_id, MessagePlace.folder_id, MessagePlace.flags, MessagePlace.labels).where(
                    ids_in(MessagePlace.message_id, chunk)
                ),
                select(MessageLabel.message_id, MessageLabel.label_id, null(), Label.name)
                .join(Label, Label.id == MessageLabel.label_id)
                .where(ids_in(MessageLabel.message_id, chunk)),
            )
        )
        for mid, fid, flags, gm_labels in rows_of_places:
            if flags is None:
                current_labels[mid].add(fid)
                if gm_labels is not None:
                    linked[gm_labels] = fid
                continue
            places[mid].append(set(flags.split()))
            folders[mid].add(fid)
            if gm_labels:
                gmail_names[mid].update(gm_labels.split("\n"))
        wanted_names = {mid: set().union(*map(keywords_of, fl)) for mid, fl in places.items()}
        # Labels linked already are known by name: only the others are looked up (or created).
        keywords = set().union(*wanted_names.values()) if wanted_names else set()
        label_ids = {**linked, **await labels.ensure(uow, keywords - linked.keys())}
        if gmail_names:
            gm_names = set().union(*gmail_names.values())
            label_ids.update(await labels.ensure(uow, gm_names - label_ids.keys(), kind=gmail.KIND))
        for mid, names in gmail_names.items():
            if mid in places:
                wanted_names.setdefault(mid, set()).update(names)
        # column -> its new value -> the messages it changes to that value on
        changes: dict[str, dict[Any, list[int]]] = defaultdict(lambda: defaultdict(list))
        add_links: list[dict[str, int]] = []
        drop_links: list[tuple[int, int]] = []
        visible: list[int] = []
        now = utcnow()
        moved = uow.moved_messages
        logged = uow.states
        nothing: frozenset[int] = frozenset()
        # A row's columns by position (the select's order), read once: per row and column, the name lookup of a
        # Row was a good part of a loop that runs over 1,000 rows in a 1,000-message flag change.
        for row in rows:
            rid, tid, unread, starred, answered, draft, orphaned_at, subject, from_addrs, date, malformed, header = row
            flag_sets = places.get(rid)
            if flag_sets is None:
                values: tuple[Any, ...] = (unread, starred, answered, draft, orphaned_at or now)
            elif len(flag_sets) == 1:
                [f] = flag_sets
                values = (SEEN not in f, FLAGGED in f, ANSWERED in f, DRAFT in f, None)
            else:
                values = (
                    any(SEEN not in f for f in flag_sets),
                    any(FLAGGED in f for f in flag_sets),
                    any(ANSWERED in f for f in flag_sets),
                    any(DRAFT in f for f in flag_sets),
                    None,
                )
            before = (unread, starred, answered, draft, orphaned_at)
            if values != before:
                for name, new, old in zip(_MESSAGE_FLAG_KEYS, values, before, strict=True):
                    if new != old:
                        changes[name][new].append(rid)
            wanted = wanted_names.get(rid)
            want = {label_ids[name] for name in wanted} if wanted else nothing
            have = current_labels.get(rid, nothing)
            # The logged state, as schema.states.message_states reads it from the stored rows.
            logged[(ObjectType.MESSAGE, rid)] = {
                "thread_id": tid,
                "subject": subject,
                "from": from_addrs,
                "date": date.isoformat() if date is not None else None,
                "unread": values[0],
                "starred": values[1],
                "answered": values[2],
                "draft": values[3],
                "malformed": malformed,
                "message_id": header,
                "folder_ids": sorted(folders.get(rid, nothing)),
                "label_ids": sorted(want),
            }
            relabelled = want != have
            if relabelled:
                add_links += [{"message_id": rid, "label_id": lid} for lid in want - have]
                drop_links += [(rid, lid) for lid in have - want]
            if relabelled or rid in moved or values[:4] != before[:4]:
                visible.append(rid)
                if rid in moved or values[4] != orphaned_at:
                    uow.dirty_threads.add(tid)  # its members or their folders changed
                else:
                    uow.flagged_threads.add(tid)  # only flags or labels: a recount will do
                    _move_thread(uow, row, values, relabelled=relabelled)
        if changes:
            # One statement: each changed column takes its new value on the messages it changed on (starring 1,000
            # messages is one column to one value, whatever their other flags are).
            changed = sorted({mid for by_value in changes.values() for mids in by_value.values() for mid in mids})
            new_values: dict[str, Any] = {}
            for name, by_value in changes.items():
                [(value, mids), *others] = by_value.items()
                if not others and len(mids) == len(changed):
                    new_values[name] = value  # every message changed takes it: no CASE, no second list of ids
                else:
                    new_values[name] = case(
                        *((ids_in(Message.id, mids), value) for value, mids in by_value.items()),
                        else_=getattr(Message, name),
                    )
            # The WHERE as bound parameters: the ORM matches it against the messages this session has loaded.
            await s.execute(update(Message).where(Message.id.in_(changed)).values(new_values))
        if add_links:
            await s.execute(insert(table(MessageLabel)), add_links)
        if drop_links:
            await s.execute(
                delete(MessageLabel).where(tuple_(MessageLabel.message_id, MessageLabel.label_id).in_(drop_links))
            )
        # A change no client can see (\\Deleted, \\Recent, a flag on one of two copies) is not logged.
        uow.record(ObjectType.MESSAGE, Op.UPDATE, visible)


_MESSAGE_FLAG_KEYS = ("unread", "starred", "answered", "draft", "orphaned_at")


def _move_thread(uow: UnitOfWork, row: Any, values: tuple[Any, ...], *, relabelled: bool) -> None:
    """What a member's change of flags (read under its lock: `row` before, `values` after) does to its thread's
    unread count and star, where that is known without counting the members. A member that lost its star marks its
    thread (unstarred_threads): another member may have one, so the thread is counted unless it has no other member
    (refresh_thread_flags reads that under the thread's lock). A member whose labels changed has its thread's labels
    listed again (relabelled_threads); its counts still move by what its flags did. An orphaned message is no
    member: it changes nothing."""
    tid = row.thread_id
    before = uow.thread_moves.get(tid, (0, False))
    if before is None or row.orphaned_at is not None:
        uow.thread_moves.setdefault(tid, before)
        return
    if relabelled:
        uow.relabelled_threads.add(tid)
    if row.starred and not values[1]:
        uow.unstarred_threads.add(tid)
    gained = int(bool(values[0])) - int(bool(row.unread))
    uow.thread_moves[tid] = (before[0] + gained, before[1] or (bool(values[1]) and not row.starred))


# What a message's logged state holds besides its flags, folders and labels (schema.states.message_states), in the
# order refresh_messages unpacks them.
_LOGGED_MESSAGE_COLUMNS = (
    Message.subject,
    Message.from_addrs,
    Message.date,
    Message.malformed,
    Message.message_id_header,
)


def _participants(rows: Sequence[Any]) -> list[dict[str, str]]:
    seen: dict[str, dict[str, str]] = {}
    for row in rows:
        for group in (row.from_addrs, row.to_addrs, row.cc_addrs):
            for addr in group or ():
                key = (addr.get("address") or addr.get("name") or "").lower()
                if key and key not in seen:
                    seen[key] = {"name": addr.get("name", ""), "address": addr.get("address", "")}
                if len(seen) >= MAX_PARTICIPANTS:
                    return list(seen.values())
    return list(seen.values())


_AGGREGATES = (
    "subject",
    "snippet",
    "participants",
    "message_count",
    "unread_count",
    "starred",
    "first_message_at",
    "last_message_at",
    "folder_ids",
    "label_ids",
)
THREAD_COLUMNS = (Thread.id, Thread.account_id, Thread.normalized_subject, *(getattr(Thread, k) for k in _AGGREGATES))


def _when(row: Any) -> datetime:
    value: datetime = row.date or row.received_at
    return value


async def refresh_threads(uow: UnitOfWork, ids: Sequence[int]) -> None:
    s = uow.session
    for chunk in _chunks(ids, 500):
        # Locked before their members are read, as messages are before their places (refresh_messages): two units
        # changing two messages of one thread at once would otherwise each write aggregates missing the other's.
        result = await s.execute(
            select(*THREAD_COLUMNS).where(Thread.id.in_(chunk)).order_by(Thread.id).with_for_update()
        )
        keys = list(result.keys())  # once: Row._asdict() builds the key view again for every row
        current = {t.id: t for t in result}
        members: dict[int, list[Any]] = defaultdict(list)
        orphans: set[int] = set()
        for row in await s.execute(
            select(
                Message.id,
                Message.thread_id,
                Message.subject,
                Message.snippet,
                Message.from_addrs,
                Message.to_addrs,
                Message.cc_addrs,
                Message.date,
                Message.received_at,
                Message.unread,
                Message.starred,
                Message.orphaned_at,
            ).where(Message.thread_id.in_(chunk))
        ):
            if row.orphaned_at is None:
                members[row.thread_id].append(row)
            else:
                orphans.add(row.thread_id)
        folders, thread_labels = await _thread_folders_and_labels(uow, chunk)
        gone = [tid for tid in current if tid not in members and tid not in orphans]
        if gone:
            await s.execute(delete(Thread).where(Thread.id.in_(gone)))
            uow.record(ObjectType.THREAD, Op.DELETE, gone)
        changed: list[dict[str, Any]] = []
        for tid, thread in current.items():
            if tid in gone:
                continue
            rows = sorted(members.get(tid, []), key=lambda r: (_when(r), r.id))
            values: dict[str, Any] = {
                "subject": rows[0].subject if rows else thread.subject,
                "snippet": rows[-1].snippet if rows else "",
                "participants": _participants(rows),
                "message_count": len(rows),
                "unread_count": sum(1 for r in rows if r.unread),
                "starred": any(r.starred for r in rows),
                "first_message_at": _when(rows[0]) if rows else None,
                "last_message_at": _when(rows[-1]) if rows else None,
                "folder_ids": sorted(folders.get(tid, set())),
                "label_ids": sorted(thread_labels.get(tid, set())),
            }
            if any(getattr(thread, k) != v for k, v in values.items()):
                changed.append({**dict(zip(keys, thread, strict=True)), **values})
                uow.states[(ObjectType.THREAD, tid)] = thread_state(values)
        if changed:
            # One multi-row statement for every changed thread: an UPDATE each would be a round trip each.
            await s.execute(upsert(table(Thread), *_AGGREGATES), changed)
        uow.record(ObjectType.THREAD, Op.UPDATE, [row["id"] for row in changed])


def thread_state(values: dict[str, Any]) -> State:
    """The logged state of a thread from its aggregates as refresh_threads writes them (schema.states)."""
    return {
        "subject": values["subject"],
        "snippet": values["snippet"],
        "participants": values["participants"],
        "message_count": values["message_count"],
        "unread_count": values["unread_count"],
        "starred": values["starred"],
        "last_message_at": iso(values["last_message_at"]),
        "folder_ids": values["folder_ids"],
        "label_ids": values["label_ids"],
    }


def _thread_labels_query(ids: Sequence[int]) -> Select[int, int]:
    return (
        select(Message.thread_id, MessageLabel.label_id)
        .join(MessageLabel, MessageLabel.message_id == Message.id)
        .where(Message.thread_id.in_(ids), Message.orphaned_at.is_(None))
        .distinct()
    )


async def _thread_folders_and_labels(
    uow: UnitOfWork, ids: Sequence[int]
) -> tuple[dict[int, set[int]], dict[int, set[int]]]:
    """The folders of the threads' messages and the labels of their messages that are not orphaned, in one
    statement: (thread -> folder ids, thread -> label ids)."""
    folders: dict[int, set[int]] = defaultdict(set)
    found: dict[int, set[int]] = defaultdict(set)
    in_folders = (
        select(Message.thread_id, MessagePlace.folder_id, literal(0).label("kind"))
        .join(MessagePlace, MessagePlace.message_id == Message.id)
        .where(Message.thread_id.in_(ids))
        .distinct()
    )
    labelled = _thread_labels_query(ids).add_columns(literal(1).label("kind"))
    for tid, oid, kind in await uow.session.execute(union_all(in_folders, labelled)):
        (found if kind else folders)[tid].add(oid)
    return folders, found


async def refresh_thread_flags(uow: UnitOfWork, ids: Sequence[int]) -> None:
    """Threads whose messages changed only flags or labels: recount unread and starred and list the labels again,
    without reading every member's addresses and dates (what a full refresh needs). The changed threads are written
    in one statement and logged from the row read under lock (not read again)."""
    s = uow.session
    for chunk in _chunks(ids):
        threads = (
            await s.execute(
                select(Thread.account_id, *_LOGGED_THREAD_COLUMNS)
                .where(ids_in(Thread.id, chunk))
                .order_by(Thread.id)
                .with_for_update()  # before the members are counted (refresh_threads says why)
            )
        ).all()
        # A thread whose members only gained or lost unread flags or stars moves its counts by that (as a folder's
        # counts move, move_folder_counts): its row, locked and read as committed, holds the counts of its members as
        # committed, since every unit that changes a member's flags moves or counts them again under this lock. A
        # member's lost star has its thread counted (another member may have one), but a thread of one member
        # (t[5], as locked): that member's star is the thread's. A thread whose members' labels changed has its
        # labels listed again (t[1]: the thread's id); a counted one has them listed with its counts. Listing labels
        # reads no member's row (ix_messages_thread holds thread_id and orphaned_at, and the message id as every
        # index of the table does), where a count reads the members' rows: the index holds no flag (migration 0020),
        # so that a flag change's UPDATE of messages writes no index entry.
        thread_moves, relabelled, unstarred = uow.thread_moves, uow.relabelled_threads, uow.unstarred_threads
        moved = {
            t[1]: m
            for t in threads
            if (m := thread_moves.get(t[1])) is not None and (t[1] not in unstarred or t[5] <= 1)
        }
        counted = [t[1] for t in threads if t[1] not in moved]
        listed = {t[1] for t in threads if t[1] not in moved or t[1] in relabelled}
        # The counts and the labels in one statement: a count row has no label (NULL), a label row counts nothing.
        counts: dict[int, tuple[int, bool]] = {}
        thread_labels: dict[int, set[int]] = defaultdict(set)
        parts: list[Select[int, Any, Any, Any]] = []
        if counted:
            parts.append(
                select(
                    Message.thread_id,
                    func.sum(case((Message.unread.is_(True), 1), else_=0)),
                    func.max(case((Message.starred.is_(True), 1), else_=0)),
                    null().label("label_id"),
                )
                .where(ids_in(Message.thread_id, counted), Message.orphaned_at.is_(None))
                .group_by(Message.thread_id)
            )
        if listed:
            parts.append(
                select(Message.thread_id, null(), null(), MessageLabel.label_id)
                .join(MessageLabel, MessageLabel.message_id == Message.id)
                .where(ids_in(Message.thread_id, sorted(listed)), Message.orphaned_at.is_(None))
                .distinct()
            )
        if parts:
            found: Result[int, Any, Any, int | None] = await s.execute(
                union_all(*parts) if len(parts) > 1 else parts[0]
            )
            for tid, unread, starred, lid in found:
                if lid is None:
                    counts[tid] = (int(unread or 0), bool(starred))
                else:
                    thread_labels[tid].add(lid)
        changed: list[dict[str, Any]] = []
        # By position (the select's order: account, then _LOGGED_THREAD_COLUMNS): a Row's lookups by name were most
        # of this loop's time over 900 threads.
        for row in threads:
            account_id, tid, subject, snippet, participants, members, unread_count, starred, last, fids, lids = row
            label_ids = list(lids or ())
            if tid in moved:
                gained, starred_now = moved[tid]
                # Unstarred, its only member has no star now; else a star gained shows, and none lost.
                star = starred_now if tid in unstarred else bool(starred) or starred_now
                unread = max(0, unread_count + gained)
            else:
                unread, star = counts.get(tid, (0, False))
            new_labels = sorted(thread_labels.get(tid, set())) if tid in listed else label_ids
            if (unread, star, new_labels) == (unread_count, bool(starred), label_ids):
                continue
            # Only these three are updated; the rest of the row is for the INSERT half, never used (it exists).
            changed.append(
                {"id": tid, "account_id": account_id, "unread_count": unread, "starred": star, "label_ids": new_labels}
            )
            # The logged state (thread_state's, by position: the same keys, the same values).
            uow.states[(ObjectType.THREAD, tid)] = {
                "subject": subject,
                "snippet": snippet,
                "participants": participants,
                "message_count": members,
                "unread_count": unread,
                "starred": star,
                "last_message_at": iso(last),
                "folder_ids": fids,
                "label_ids": new_labels,
            }
        if changed:
            counts_and_labels = ("unread_count", "starred", "label_ids")
            if len(changed) < bulk.MANY or not await bulk.insert(
                s, table(Thread), changed, update=counts_and_labels, dumps=json_dumps
            ):
                await s.execute(upsert(table(Thread), *counts_and_labels), changed)
            uow.record(ObjectType.THREAD, Op.UPDATE, [c["id"] for c in changed])


# What a thread's logged state holds (thread_state, schema.states.thread_states).
_LOGGED_THREAD_KEYS = (
    "subject",
    "snippet",
    "participants",
    "message_count",
    "unread_count",
    "starred",
    "last_message_at",
    "folder_ids",
    "label_ids",
)
_LOGGED_THREAD_COLUMNS = (Thread.id, *(getattr(Thread, k) for k in _LOGGED_THREAD_KEYS))


async def refresh_folder_counts(uow: UnitOfWork, ids: Sequence[int]) -> None:
    s = uow.session
    if not ids:
        return
    # Locked before their places are counted (refresh_threads says why): the inbox's sync and a poll, or the
    # action executor and a sync, may change one folder at once.
    # populate_existing: the rows as committed, not as this session may have loaded them before.
    locking = select(Folder).where(Folder.id.in_(ids)).order_by(Folder.id).with_for_update()
    found = list(await s.scalars(locking.execution_options(populate_existing=True)))
    counts = {
        fid: (total, int(unread or 0))
        for fid, total, unread in await s.execute(
            select(
                MessagePlace.folder_id,
                func.count(),
                func.sum(case((MessagePlace.flags.like("%\\\\Seen%"), 0), else_=1)),
            )
            .where(MessagePlace.folder_id.in_(ids))
            .group_by(MessagePlace.folder_id)
        )
    }
    changed = []
    for folder in found:
        total, unread = counts.get(folder.id, (0, 0))
        if (folder.total_count, folder.unread_count) != (total, unread):
            folder.total_count, folder.unread_count = total, unread
            changed.append(folder.id)
            uow.states[(ObjectType.FOLDER, folder.id)] = folder_state(folder)  # as locked and now written
    await s.flush()
    uow.record(ObjectType.FOLDER, Op.UPDATE, changed)


async def move_folder_counts(uow: UnitOfWork, moves: dict[int, tuple[int, int]]) -> None:
    """Folders whose places this unit only added, or changed only in their flags: their counts move by
    (total, unread) gained (negative: lost), instead of a count of every place of the folder, which would make a
    unit cost as much as the folder is large. The row is locked and read as committed first, as in
    refresh_folder_counts: every unit that changes a folder's places moves or recounts its counts under that
    lock, so the old counts plus the moves are what a count would find."""
    moves = {fid: m for fid, m in moves.items() if m != (0, 0)}
    if not moves:
        return
    s = uow.session
    locking = select(Folder).where(Folder.id.in_(sorted(moves))).order_by(Folder.id).with_for_update()
    changed = []
    for folder in await s.scalars(locking.execution_options(populate_existing=True)):
        total, unread = moves[folder.id]
        folder.total_count = max(0, folder.total_count + total)
        folder.unread_count = max(0, folder.unread_count + unread)
        changed.append(folder.id)
        uow.states[(ObjectType.FOLDER, folder.id)] = folder_state(folder)  # as locked and now written
    await s.flush()
    uow.record(ObjectType.FOLDER, Op.UPDATE, changed)
