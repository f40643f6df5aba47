"""The write-back queue: a mutation changes the mirror at once and queues what the server must be told.

```
gateway (a mutation)                          sync process holding the account's lease (synccore.actions)
  unit of work:                                 woken by the account's action bell
    places' flags / folder changed (optimistic)   due(): pending actions in id order
    an `actions` row with what to undo            performs them (UID STORE, UID MOVE, UID EXPUNGE, CREATE...)
      (a flag change: one for all its messages,
       named in `action_messages`)
    change log rows                               complete(): done, placeholders get their real UIDs
  commit, ring the doorbell and the action bell   fail(): the mirror's change undone and logged, reason kept
```

An action is itself in the change log (ObjectType.ACTION, schema.states.action_states): its creation in the
mutation's unit, its end (done, or failed after the undo, in one unit and one seq range) and each retry in the
executor's, so a client follows it in the feed.

A draft (schema.drafts) keeps its row and its place in Drafts across versions: `draft_save` APPENDs the version
it names (a blob), expunges the copies the server holds of earlier ones, and gives the place the new UID.

A moved message keeps its row and its place row: the place points at the target folder at once, under the
placeholder UIDVALIDITY 0 and UID -(place id), until the server's COPYUID names its UID there (RFC 4315).
A move or delete queued on top of a pending move of the same message is told that placeholder; when the earlier
move ends, it hands the later action the real place (the UID the server gave, or the folder it failed back to).

Gmail accounts (schema.gmail) keep one real place per message (All Mail, Trash or Spam) and derived places in
the label folders: labels change by `gmail_labels` actions (UID STORE [+|-]X-GM-LABELS on the real place), and a
move follows Gmail's model (`_gmail_move`): into Trash or Spam the real place moves; into a label folder the
label is added and \\Inbox removed (Gmail's "move out of the inbox"), the message first moved back to All Mail
if it was in Trash or Spam; into All Mail it is archived. A deletion for good on Gmail is a move to Trash and an
expunge there (an expunge in All Mail would only trash it). Flag changes and expunges never name a derived place:
its UID is All Mail's, not its folder's.

The folder sync never overwrites a pending change: `pending_messages` and `pending_folders` tell it what to
leave alone. When an action ends, its folders are marked for a full compare (`highestmodseq` cleared), so a
change the server made meanwhile wins after the action ran.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import ScalarSelect, Text, bindparam, case, delete, func, insert, select, union, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from schema import bulk, gmail
from schema.changelog import ObjectType, Op
from schema.db import ids_in, json_dumps
from schema.models import Account, Action, ActionMessage, Folder, MessagePlace, table, utcnow
from schema.states import action_state

if TYPE_CHECKING:
    from schema.unit import UnitOfWork

PLACEHOLDER_UIDVALIDITY = 0
# The most messages one mutation may name (gateway.graphql.mutations.writes), so the most one action is about.
MAX_IDS = 1000


class ActionKind(StrEnum):
    FLAGS = "flags"
    MOVE = "move"
    EXPUNGE = "expunge"
    FOLDER_CREATE = "folder_create"
    FOLDER_RENAME = "folder_rename"
    FOLDER_DELETE = "folder_delete"
    DRAFT_SAVE = "draft_save"
    GMAIL_LABELS = "gmail_labels"


class ActionState(StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class Refused(ValueError):
    """The mutation cannot be queued as asked (the message says why); nothing was changed."""


class ActionRow(Protocol):
    """What the executor and the endings below read of an action: an `Action` row object, or a `Queued`."""

    @property
    def id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def payload(self) -> dict[str, Any]: ...
    @property
    def message_id(self) -> int | None: ...
    @property
    def folder_id(self) -> int | None: ...
    @property
    def attempts(self) -> int: ...
    @property
    def created_at(self) -> datetime: ...


@dataclass(frozen=True, slots=True)
class Queued:
    """A pending action as `due` reads it: its columns, not an ORM object (a run of flag actions is up to
    thousands of them, read and recorded in bulk)."""

    id: int
    kind: str
    payload: dict[str, Any]
    message_id: int | None
    folder_id: int | None
    attempts: int
    created_at: datetime
    not_before: datetime | None


def _flags(text: str) -> set[str]:
    return set(text.split())


def _text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


# A place as `_places` reads it (columns under FOR UPDATE, no ORM object): id, message_id, folder_id, uidvalidity,
# uid, flags, modseq, labels.
Place = Row[*tuple[Any, ...]]
# Where a place is: what the action executor reads of one (schema.messages.places_by_id, places_in_folders).
PLACE_WHERE = (
    MessagePlace.id,
    MessagePlace.message_id,
    MessagePlace.folder_id,
    MessagePlace.uidvalidity,
    MessagePlace.uid,
)
_PLACE_COLUMNS = (
    *PLACE_WHERE,
    MessagePlace.flags,
    MessagePlace.modseq,
    MessagePlace.labels,
)


def _place(p: Place) -> dict[str, Any]:
    return {
        "id": p.id,
        "folder_id": p.folder_id,
        "uidvalidity": p.uidvalidity,
        "uid": p.uid,
        "flags": p.flags,
        "modseq": p.modseq,
    }


async def _places(s: AsyncSession, account_id: int, message_ids: Sequence[int]) -> dict[int, list[Place]]:
    found: dict[int, list[Place]] = {mid: [] for mid in message_ids}
    rows = await s.execute(
        select(*_PLACE_COLUMNS)
        .where(MessagePlace.account_id == account_id, ids_in(MessagePlace.message_id, message_ids))
        .order_by(MessagePlace.id)
        .with_for_update()
    )
    for p in rows:
        found[p[1]].append(p)  # message_id (by position: _PLACE_COLUMNS)
    return found


def _touch(uow: UnitOfWork, message_id: int, folder_ids: Iterable[int], *, moved: bool) -> None:
    uow.dirty_messages.add(message_id)
    if moved:
        uow.moved_messages.add(message_id)
    uow.dirty_folders.update(folder_ids)


async def _queue(uow: UnitOfWork, kind: ActionKind, payload: dict[str, Any], **where: int | None) -> int:
    [action_id] = await _queue_many(uow, kind, [(payload, where.get("message_id"), where.get("folder_id"))])
    return action_id


async def _queue_many(
    uow: UnitOfWork, kind: ActionKind, rows: Sequence[tuple[dict[str, Any], int | None, int | None]]
) -> list[int]:
    """Queue actions of one kind, (payload, message id, folder id) each, in one statement; their ids in order."""
    if not rows:
        return []
    now = utcnow()
    # The payloads as JSON text by orjson (the JSON type's json.dumps was the larger part of queueing 1,000).
    stmt = insert(table(Action)).values(payload=bindparam("payload_text", type_=Text()))
    result = await uow.session.execute(
        stmt.returning(table(Action).c.id, sort_by_parameter_order=True),
        [
            {
                "account_id": uow.account_id,
                "kind": kind.value,
                "state": ActionState.PENDING.value,
                "payload_text": json_dumps(payload),
                "message_id": message_id,
                "folder_id": folder_id,
                "attempts": 0,
                "created_at": now,
            }
            for payload, message_id, folder_id in rows
        ],
    )
    uow.rang_actions = True
    ids = list(result.scalars())
    uow.record(ObjectType.ACTION, Op.CREATE, ids)
    for action_id, (_, message_id, folder_id) in zip(ids, rows, strict=True):
        # Logged as inserted, without reading the rows back.
        state = action_state(kind.value, ActionState.PENDING.value, None, message_id, folder_id, 0, now, None)
        uow.states[(ObjectType.ACTION, action_id)] = state
    return ids


# -- what mutations queue ---------------------------------------------------------------------------------


# RFC 3501 §9: flag-keyword = atom; atom-specials are "(" ")" "{" SP CTL list-wildcards quoted-specials
# resp-specials. A system flag is a backslash and an atom.
ATOM_SPECIALS = frozenset('(){ %*"\\]')


def check_keyword(name: str) -> None:
    """A flag IMAP can carry: a keyword (an atom of printable ASCII) or a system flag (a backslash and an atom);
    else Refused."""
    atom = name[1:] if name.startswith("\\") else name
    bad = [c for c in atom if c in ATOM_SPECIALS or not " " < c < "\x7f"]
    if not atom or bad:
        what = f"{bad[0]!r}" if bad else "nothing"
        raise Refused(f"a label may not contain {what} here (labels are IMAP keywords: RFC 3501 atoms)")


async def set_flags(
    uow: UnitOfWork, message_ids: Sequence[int], add: Iterable[str], remove: Iterable[str]
) -> list[int]:
    """Add and remove flags (system flags or keywords) on every place of the messages: one action for all the
    messages it changes, its payload listing their places (their flags before, for the undo). On Gmail a label
    (any name that is not a system flag) is an X-GM-LABEL (`gmail_labels`, one action per message).

    One action, not one per message: a mutation of 1,000 ids queued, logged and answered 1,000 actions, and the
    executor read and recorded them one by one (BENCHMARKS.md, write-back (b)). An action about one message names
    it (`message_id`); one about several names them in `action_messages`, where `pending_messages` finds them."""
    plus, minus = set(add), set(remove)
    if plus & minus:
        raise Refused(f"a flag cannot be both added and removed: {', '.join(sorted(plus & minus))}")
    folders = await _gmail_folders(uow)
    queued: list[int] = []
    if folders is not None:
        labels_plus = {f for f in plus if not f.startswith("\\")}
        labels_minus = {f for f in minus if not f.startswith("\\")}
        plus, minus = plus - labels_plus, minus - labels_minus
        if labels_plus or labels_minus:
            queued += await gmail_labels(uow, folders, message_ids, labels_plus, labels_minus)
        if not plus and not minus:
            return queued
    for name in sorted(plus | minus):
        check_keyword(name)
    changed: list[dict[str, Any]] = []  # the places changed, as they were (the payload)
    changed_messages: list[int] = []
    written: dict[str, list[int]] = defaultdict(list)  # new flags -> the places taking them: one statement for all
    unread: dict[int, int] = defaultdict(int)  # folder -> unread places gained (negative: lost)
    account_id = uow.account_id
    # A place's new flags by its old ones: 1,000 places hold a handful of distinct flag sets.
    new_flags: dict[str, str] = {}
    for mid, places in (await _places(uow.session, account_id, message_ids)).items():
        before = len(changed)
        # By position, as _PLACE_COLUMNS lists them: a Row's lookups by name were most of this loop's time.
        for pid, _, folder_id, uidvalidity, uid, flags, modseq, _ in places:
            if uidvalidity == gmail.VIEW_UIDVALIDITY:
                continue  # derived from the real place's flags (schema.gmail.refresh_views, below)
            after = new_flags.get(flags)
            if after is None:
                after = new_flags[flags] = _text((_flags(flags) | plus) - minus)
            if after != flags:
                changed.append(
                    {
                        "id": pid,
                        "folder_id": folder_id,
                        "uidvalidity": uidvalidity,
                        "uid": uid,
                        "flags": flags,
                        "modseq": modseq,
                        "message_id": mid,
                    }
                )
                written[after].append(pid)
                # As schema.aggregates.refresh_folder_counts counts unread places.
                unread[folder_id] += ("\\Seen" not in after) - ("\\Seen" not in flags)
        if len(changed) > before:
            uow.dirty_messages.add(mid)
            changed_messages.append(mid)
    if not changed:
        return queued
    # The places are locked and exist: one UPDATE, each new flag set on the places taking it (1,000 places hold a
    # handful). An upsert of 1,000 rows (a bulk command) cost the server twice as much: each row an insert
    # refused by its key first (BENCHMARKS.md, write-back (b)).
    place_id = table(MessagePlace).c.id
    every = [pid for pids in written.values() for pid in pids]
    [(first, _), *others] = written.items()
    new = case(*((ids_in(place_id, pids), after) for after, pids in written.items())) if others else first
    await uow.session.execute(update(table(MessagePlace)).where(ids_in(place_id, every)).values(flags=new))
    for folder_id, gained in unread.items():
        # Only flags changed: the folders' counts move by the difference (no count of all their places).
        uow.counts_move(folder_id, 0, gained)
    if folders is not None:
        await gmail.refresh_views(uow, changed_messages)
    payload = {"add": sorted(plus), "remove": sorted(minus), "places": changed}
    one = changed_messages[0] if len(changed_messages) == 1 else None
    [action_id] = await _queue_many(uow, ActionKind.FLAGS, [(payload, one, None)])
    if one is None:
        rows = [{"action_id": action_id, "message_id": mid} for mid in changed_messages]
        if len(rows) < bulk.MANY or not await bulk.insert(uow.session, table(ActionMessage), rows):
            await uow.session.execute(insert(table(ActionMessage)), rows)
    return [*queued, action_id]


async def move(uow: UnitOfWork, message_ids: Sequence[int], folder_id: int) -> list[int]:
    """Move messages into a folder: one place moves there (keeping its row), other copies are expunged."""
    folders = await _gmail_folders(uow)
    if folders is not None and folder_id in folders:
        return await _gmail_move(uow, folders, message_ids, folder_id)
    queued = []
    for mid, places in (await _places(uow.session, uow.account_id, message_ids)).items():
        if not places or (len(places) == 1 and places[0].folder_id == folder_id):
            continue
        staying = next((p for p in places if p.folder_id == folder_id), None)
        moving = None if staying is not None else places[0]
        gone = [p for p in places if p is not staying and p is not moving]
        payload: dict[str, Any] = {"to": folder_id, "move": _place(moving) if moving else None}
        payload["expunge"] = [_place(p) for p in gone]
        # The folder it leaves is recounted as well as the target.
        touched = {folder_id, *(p.folder_id for p in places)}
        if moving is not None:
            await uow.session.execute(
                update(MessagePlace)
                .where(MessagePlace.id == moving.id)
                .values(folder_id=folder_id, uidvalidity=PLACEHOLDER_UIDVALIDITY, uid=-moving.id, modseq=None)
            )
        if gone:
            await uow.session.execute(delete(MessagePlace).where(MessagePlace.id.in_([p.id for p in gone])))
        _touch(uow, mid, touched, moved=True)
        queued.append(await _queue(uow, ActionKind.MOVE, payload, message_id=mid, folder_id=folder_id))
    return queued


async def expunge(uow: UnitOfWork, message_ids: Sequence[int]) -> list[int]:
    """Delete messages for good: every place is expunged; the message row goes when the server agreed."""
    queued = []
    folders = await _gmail_folders(uow)
    if folders is not None:
        trash = next((fid for fid, f in folders.items() if f.role == "trash"), None)
        if trash is not None:
            queued += await _gmail_move(uow, folders, message_ids, trash)
    for mid, places in (await _places(uow.session, uow.account_id, message_ids)).items():
        views = [p for p in places if p.uidvalidity == gmail.VIEW_UIDVALIDITY]
        if views:
            await uow.session.execute(delete(MessagePlace).where(MessagePlace.id.in_([p.id for p in views])))
            _touch(uow, mid, (p.folder_id for p in views), moved=True)
            places = [p for p in places if p.uidvalidity != gmail.VIEW_UIDVALIDITY]
        if not places:
            continue
        await uow.session.execute(delete(MessagePlace).where(MessagePlace.id.in_([p.id for p in places])))
        _touch(uow, mid, (p.folder_id for p in places), moved=True)
        queued.append(await _queue(uow, ActionKind.EXPUNGE, {"expunge": [_place(p) for p in places]}, message_id=mid))
    return queued


# -- Gmail ------------------------------------------------------------------------------------------------


async def _gmail_folders(uow: UnitOfWork) -> dict[int, Folder] | None:
    """The account's folders by id when it is mirrored in Gmail's model (schema.gmail), else None."""
    mode = await uow.session.scalar(select(Account.identity_mode).where(Account.id == uow.account_id))
    if mode != "gmail":
        return None
    found = {f.id: f for f in await uow.session.scalars(select(Folder).where(Folder.account_id == uow.account_id))}
    return found if any(f.role == "all" for f in found.values()) else None


def _real_place(places: Sequence[Place], folders: dict[int, Folder]) -> Place | None:
    """A Gmail message's one stored place: in All Mail, Trash or Spam (or moving there), never a derived one."""
    for p in places:
        folder = folders.get(p.folder_id)
        if p.uidvalidity != gmail.VIEW_UIDVALIDITY and folder is not None and folder.role in gmail.STORED_ROLES:
            return p
    return None


def _label_of(folder: Folder) -> str | None:
    """The label a Gmail folder is the view of (None: All Mail, Trash, Spam)."""
    if folder.role in gmail.STORED_ROLES or folder.role == "archive":
        return None
    by_role = {role: name for name, role in gmail.SYSTEM_LABELS.items()}
    return by_role.get(folder.role or "", folder.name)


async def gmail_labels(
    uow: UnitOfWork, folders: dict[int, Folder], message_ids: Sequence[int], plus: set[str], minus: set[str]
) -> list[int]:
    """Add and remove Gmail labels (X-GM-LABELS) on the messages' real places; one action each."""
    rows: list[tuple[dict[str, Any], int | None, int | None]] = []
    for mid, places in (await _places(uow.session, uow.account_id, message_ids)).items():
        real = _real_place(places, folders)
        if real is None:
            continue
        before = set(real.labels.split("\n")) if real.labels else set()
        after = (before | plus) - minus
        if after == before:
            continue
        await uow.session.execute(
            update(MessagePlace).where(MessagePlace.id == real.id).values(labels=gmail.labels_text(after))
        )
        _touch(uow, mid, [real.folder_id], moved=False)
        payload = {"add": sorted(plus), "remove": sorted(minus), "places": [_place(real)], "labels": real.labels}
        rows.append((payload, mid, None))
    await gmail.refresh_views(uow, [mid for _, mid, _ in rows if mid is not None])
    return await _queue_many(uow, ActionKind.GMAIL_LABELS, rows)


async def _gmail_move(
    uow: UnitOfWork, folders: dict[int, Folder], message_ids: Sequence[int], folder_id: int
) -> list[int]:
    """A move in Gmail's model: see the module's docstring."""
    target = folders[folder_id]
    all_id = next(fid for fid, f in folders.items() if f.role == "all")
    queued: list[int] = []
    relabel: list[int] = []
    for mid, places in (await _places(uow.session, uow.account_id, message_ids)).items():
        real = _real_place(places, folders)
        if real is None:
            continue
        into = folder_id if target.role in ("trash", "junk") else all_id
        if real.folder_id != into and (into != all_id or folders[real.folder_id].role != "all"):
            views = [p for p in places if p.uidvalidity == gmail.VIEW_UIDVALIDITY]
            payload: dict[str, Any] = {"to": into, "move": _place(real), "expunge": []}
            touched = {into, real.folder_id, *(p.folder_id for p in views)}
            await uow.session.execute(
                update(MessagePlace)
                .where(MessagePlace.id == real.id)
                .values(folder_id=into, uidvalidity=PLACEHOLDER_UIDVALIDITY, uid=-real.id, modseq=None)
            )
            if views:
                await uow.session.execute(delete(MessagePlace).where(MessagePlace.id.in_([p.id for p in views])))
            _touch(uow, mid, touched, moved=True)
            queued.append(await _queue(uow, ActionKind.MOVE, payload, message_id=mid, folder_id=into))
        if into == all_id:
            relabel.append(mid)
    if relabel:
        label = _label_of(target)
        plus = {label} if label is not None else set()
        minus = set() if label == "\\Inbox" else {"\\Inbox"}
        queued += await gmail_labels(uow, folders, relabel, plus, minus)
    await gmail.refresh_views(uow, list(message_ids))
    return queued


async def create_folder(uow: UnitOfWork, name: str, delimiter: str | None) -> tuple[int, int]:
    """A new folder, shown at once; returns (folder id, action id)."""
    folder = Folder(
        account_id=uow.account_id,
        name=name,
        delimiter=delimiter,
        role=None,
        attributes="",
        sync_state="initial",
        total_count=0,
        unread_count=0,
    )
    uow.session.add(folder)
    await uow.session.flush()
    uow.record(ObjectType.FOLDER, Op.CREATE, [folder.id])
    action = await _queue(uow, ActionKind.FOLDER_CREATE, {"name": name}, folder_id=folder.id)
    return folder.id, action


async def rename_folder(uow: UnitOfWork, folder: Folder, name: str) -> int:
    """Rename a folder and, as IMAP does (RFC 3501 §6.3.5), the folders below it."""
    old = folder.name
    renamed: list[dict[str, Any]] = [{"id": folder.id, "from": old, "to": name}]
    if folder.delimiter:
        prefix = old + folder.delimiter
        below = await uow.session.scalars(
            select(Folder).where(Folder.account_id == uow.account_id, Folder.name.startswith(prefix, autoescape=True))
        )
        renamed += [{"id": f.id, "from": f.name, "to": name + f.name[len(old) :]} for f in below]
    for r in renamed:
        await uow.session.execute(update(Folder).where(Folder.id == r["id"]).values(name=r["to"]))
    uow.record(ObjectType.FOLDER, Op.UPDATE, [r["id"] for r in renamed])
    return await _queue(
        uow, ActionKind.FOLDER_RENAME, {"from": old, "to": name, "folders": renamed}, folder_id=folder.id
    )


async def delete_folder(uow: UnitOfWork, folder: Folder) -> int:
    """Delete a folder on the server; it is hidden at once (`deleting`) and its rows go when the server agreed."""
    await uow.session.execute(
        update(Folder).where(Folder.id == folder.id).values(sync_state="deleting", total_count=0, unread_count=0)
    )
    uow.record(ObjectType.FOLDER, Op.UPDATE, [folder.id])
    payload = {"name": folder.name, "state": folder.sync_state, "total": folder.total_count}
    payload["unread"] = folder.unread_count
    return await _queue(uow, ActionKind.FOLDER_DELETE, payload, folder_id=folder.id)


async def save_draft(uow: UnitOfWork, folder_id: int, payload: dict[str, Any], message_id: int | None) -> int:
    """APPEND a version of a draft to `folder_id` (schema.drafts writes the mirror and the payload: the place,
    the blob to append, the blob it replaces, the Message-ID every version shares)."""
    payload = {"folder_id": folder_id, **payload}
    return await _queue(uow, ActionKind.DRAFT_SAVE, payload, message_id=message_id, folder_id=folder_id)


# -- what the sync core reads ------------------------------------------------------------------------------


async def due(session: AsyncSession, account_id: int, limit: int = 500, after: int = 0) -> list[Queued]:
    """Pending actions (after the id `after`) in the order they were asked for, up to the first one still waiting
    out a backoff."""
    found, _ = await due_or_wakeup(session, account_id, limit, after)
    return found


async def due_or_wakeup(
    session: AsyncSession, account_id: int, limit: int = 500, after: int = 0
) -> tuple[list[Queued], float | None]:
    """`due`, and when nothing is due, what `next_wakeup` would answer (from the same read: the first pending
    action is the one that waits, or there is none). With something due, the wait is 0."""
    rows = await session.execute(
        select(
            Action.id,
            Action.kind,
            Action.payload,
            Action.message_id,
            Action.folder_id,
            Action.attempts,
            Action.created_at,
            Action.not_before,
        )
        .where(Action.account_id == account_id, Action.state == ActionState.PENDING.value, Action.id > after)
        .order_by(Action.id)
        .limit(limit)
    )
    now = utcnow()
    found: list[Queued] = []
    for row in rows:
        if row.not_before is not None and row.not_before > now:
            if not found:
                return [], (row.not_before - now).total_seconds()
            break  # in order: nothing after an action that waits may overtake it
        found.append(Queued(*row))
    return found, (0.0 if found else None)


async def next_wakeup(session: AsyncSession, account_id: int) -> float | None:
    """Seconds until the first pending action's backoff ends (0 if one is due now, None if none is pending)."""
    first = (
        await session.execute(
            select(Action.id, Action.not_before)
            .where(Action.account_id == account_id, Action.state == ActionState.PENDING.value)
            .order_by(Action.id)
            .limit(1)
        )
    ).first()
    if first is None:
        return None
    not_before: datetime | None = first.not_before
    if not_before is None:
        return 0.0
    return max(0.0, (not_before - utcnow()).total_seconds())


async def accounts_pending(session: AsyncSession) -> set[int]:
    """The accounts with an action pending: a sync process's sweep rings their executors (synccore.supervisor)."""
    found = await session.scalars(select(Action.account_id).where(Action.state == ActionState.PENDING.value).distinct())
    return set(found)


def pending_count() -> ScalarSelect[int]:
    """Pending actions of every account, the write-back queue's depth (ops.metrics): a scalar subquery, which a
    sync process's round reads in one statement with others."""
    return select(func.count()).select_from(Action).where(Action.state == ActionState.PENDING.value).scalar_subquery()


async def pending_messages(session: AsyncSession, account_id: int, message_ids: Iterable[int]) -> set[int]:
    """Messages with an action not yet performed: the folder sync leaves their places alone. An action names its
    message (`message_id`), or its several messages in `action_messages` (a flag change of many: set_flags)."""
    ids = list(set(message_ids))
    found: set[int] = set()
    pending = (Action.account_id == account_id) & (Action.state == ActionState.PENDING.value)
    for start in range(0, len(ids), 1000):
        chunk = ids[start : start + 1000]
        found.update(
            await session.scalars(
                union(
                    select(Action.message_id).where(pending, ids_in(Action.message_id, chunk)),
                    select(ActionMessage.message_id)
                    .join(Action, Action.id == ActionMessage.action_id)
                    .where(pending, ids_in(ActionMessage.message_id, chunk)),
                )
            )
        )
    return found


async def pending_arrivals(session: AsyncSession, account_id: int, folder_id: int) -> set[str]:
    """Message-IDs of copies pending actions are APPENDing to a folder: the folder sync leaves them to the
    action, which places them under the message the mirror already shows."""
    rows = await session.scalars(
        select(Action.payload).where(
            Action.account_id == account_id,
            Action.state == ActionState.PENDING.value,
            Action.kind == ActionKind.DRAFT_SAVE.value,
            Action.folder_id == folder_id,
        )
    )
    return {str(p["message_id_header"]) for p in rows if p.get("message_id_header")}


async def pending_blobs(session: AsyncSession, account_id: int) -> set[bytes]:
    """Blobs pending actions still need (the versions of drafts they APPEND, or restore when refused)."""
    rows = await session.scalars(
        select(Action.payload).where(
            Action.account_id == account_id,
            Action.state == ActionState.PENDING.value,
            Action.kind == ActionKind.DRAFT_SAVE.value,
        )
    )
    return {bytes.fromhex(p[key]) for p in rows for key in ("blob", "previous") if p.get(key)}


async def pending_folders(session: AsyncSession, account_id: int) -> dict[int, set[str]]:
    """Folders a pending folder action is about, with every name involved: discovery leaves them alone."""
    rows = await session.scalars(
        select(Action).where(
            Action.account_id == account_id,
            Action.state == ActionState.PENDING.value,
            Action.kind.in_(
                [k.value for k in (ActionKind.FOLDER_CREATE, ActionKind.FOLDER_RENAME, ActionKind.FOLDER_DELETE)]
            ),
        )
    )
    found: dict[int, set[str]] = {}
    for action in rows:
        p = action.payload
        if action.kind == ActionKind.FOLDER_RENAME:
            for r in p["folders"]:
                found.setdefault(r["id"], set()).update((r["from"], r["to"]))
        elif action.folder_id is not None:
            found.setdefault(action.folder_id, set()).add(p["name"])
    return found


async def pending_in_folders(session: AsyncSession, account_id: int) -> set[int]:
    """Folders a pending action of any kind names (where it takes a message from or puts one, whose flags or labels
    it changes, where it saves a draft): a pass selects them rather than trust their STATUS (synccore.account)."""
    rows = await session.scalars(
        select(Action).where(Action.account_id == account_id, Action.state == ActionState.PENDING.value)
    )
    found: set[int] = set()
    for action in rows:
        found |= _folders_of(action)
        if action.folder_id is not None:
            found.add(action.folder_id)
    return found


async def get(session: AsyncSession, account_ids: Iterable[int], action_ids: Sequence[int]) -> list[Action]:
    return list(
        await session.scalars(
            select(Action).where(Action.id.in_(list(action_ids)), Action.account_id.in_(list(account_ids)))
        )
    )


# -- how an action ends ------------------------------------------------------------------------------------


async def _full_compare(uow: UnitOfWork, folder_ids: Iterable[int]) -> None:
    """The next pass compares these folders in full (a change the server made meanwhile wins now)."""
    ids = sorted(set(folder_ids))
    if ids:
        await uow.session.execute(
            update(Folder).where(Folder.id.in_(ids), Folder.sync_state == "follow").values(highestmodseq=None)
        )


def _folders_of(action: ActionRow) -> set[int]:
    p = action.payload
    ids = {pl["folder_id"] for key in ("places", "expunge") for pl in p.get(key) or ()}
    if p.get("move"):
        ids.add(p["move"]["folder_id"])
    if action.kind == ActionKind.MOVE:
        ids.add(p["to"])
    if action.kind == ActionKind.DRAFT_SAVE:
        ids.add(p["folder_id"])
    return ids


async def _finish(uow: UnitOfWork, action: ActionRow, state: ActionState, error: str | None = None) -> None:
    await uow.session.execute(
        update(Action)
        .where(Action.id == action.id)
        .values(state=state.value, error=error, finished_at=utcnow(), attempts=Action.attempts + 1)
    )
    uow.record(ObjectType.ACTION, Op.UPDATE, [action.id])
    await _full_compare(uow, _folders_of(action))


async def complete_flags(uow: UnitOfWork, done: Sequence[ActionRow]) -> None:
    """Flag actions the server did, in one statement, logged from the rows in hand (not read again). Their
    folders need no full compare: the STORE answered the flags the server holds now, which the caller writes
    (synccore.actions)."""
    if not done:
        return
    if any(a.kind != ActionKind.FLAGS for a in done):
        raise ValueError("complete_flags takes flag actions only")
    ids = [a.id for a in done]
    now = utcnow()
    await uow.session.execute(
        update(Action)
        .where(Action.id.in_(ids))
        .values(state=ActionState.DONE.value, error=None, finished_at=now, attempts=Action.attempts + 1)
    )
    uow.record(ObjectType.ACTION, Op.UPDATE, ids)
    for a in done:
        state = action_state(
            a.kind, ActionState.DONE.value, None, a.message_id, a.folder_id, a.attempts + 1, a.created_at, now
        )
        uow.states[(ObjectType.ACTION, a.id)] = state


async def complete(uow: UnitOfWork, action: ActionRow, *, moved_to: tuple[int, int] | None = None) -> None:
    """The server did it. A move names the place's new (UIDVALIDITY, UID), or None when the server did not
    say (the place is dropped and the next full compare of the target finds the message by its identity).

    What follows from it in other tables is the caller's (synccore.actions): an expunged message without
    places is deleted (messages.drop_placeless), a deleted folder's rows go (folders.remove).
    """
    s = uow.session
    p = action.payload
    if action.kind == ActionKind.MOVE and p.get("move"):
        place_id = p["move"]["id"]
        placeholder = _placeholder_of(action)
        if moved_to is None:
            await s.execute(delete(MessagePlace).where(placeholder))
        else:
            await s.execute(
                delete(MessagePlace).where(
                    MessagePlace.folder_id == p["to"],
                    MessagePlace.uidvalidity == moved_to[0],
                    MessagePlace.uid == moved_to[1],
                    MessagePlace.id != place_id,
                )
            )
            await s.execute(update(MessagePlace).where(placeholder).values(uidvalidity=moved_to[0], uid=moved_to[1]))
            where = {"folder_id": p["to"], "uidvalidity": moved_to[0], "uid": moved_to[1], "modseq": None}
            await _hand_over(uow, action, where)
        if action.message_id is not None:
            _touch(uow, action.message_id, [p["to"]], moved=moved_to is None)
            await gmail.refresh_views(uow, [action.message_id])  # on Gmail: the All Mail UID they carry
    await _finish(uow, action, ActionState.DONE)


async def fail(uow: UnitOfWork, action: ActionRow, reason: str, folder_ids: Collection[int] | None = None) -> None:
    """The server refused for good: undo the mirror's change (logged) and keep the reason.

    A flag change of several folders' messages is undone only in `folder_ids` when given (the folders that
    refused: in the others the server made the change, which the mirror keeps).

    A folder whose creation was refused is removed by the caller (folders.remove), as for a deletion.
    """
    s = uow.session
    p = action.payload
    mid = action.message_id
    if action.kind == ActionKind.FLAGS:
        await _undo_flags(uow, action, folder_ids)
    elif action.kind in (ActionKind.MOVE, ActionKind.EXPUNGE) and mid is not None:
        if p.get("move"):
            m = p["move"]
            # Locked: a folder sync changing its UIDVALIDITY (synccore.folder's resync) commits first or waits.
            source = await s.scalar(select(Folder.uidvalidity).where(Folder.id == m["folder_id"]).with_for_update())
            if source != m["uidvalidity"] or m["uidvalidity"] == PLACEHOLDER_UIDVALIDITY:
                # The folder it came from is gone or has a new UIDVALIDITY (RFC 3501 §2.3.1.1: the UID means
                # nothing there now), or it came from where an earlier move put it under no known UID: no place
                # to put back. The next full compare places the message wherever it is.
                await s.execute(delete(MessagePlace).where(_placeholder_of(action)))
            else:
                await s.execute(
                    update(MessagePlace)
                    .where(_placeholder_of(action))
                    .values(folder_id=m["folder_id"], uidvalidity=m["uidvalidity"], uid=m["uid"], modseq=m["modseq"])
                )
                await _hand_over(uow, action, m)
        if p.get("expunge"):
            await _restore_places(uow, mid, p["expunge"])
        await gmail.refresh_views(uow, [mid])  # on Gmail, the label folders follow the place put back
        _touch(uow, mid, _folders_of(action), moved=True)
    elif action.kind == ActionKind.GMAIL_LABELS and mid is not None:
        await s.execute(update(MessagePlace).where(MessagePlace.id == p["places"][0]["id"]).values(labels=p["labels"]))
        await gmail.refresh_views(uow, [mid])
        _touch(uow, mid, _folders_of(action), moved=False)
    elif action.kind == ActionKind.FOLDER_RENAME:
        for r in p["folders"]:
            await s.execute(update(Folder).where(Folder.id == r["id"]).values(name=r["from"]))
        uow.record(ObjectType.FOLDER, Op.UPDATE, [r["id"] for r in p["folders"]])
    elif action.kind == ActionKind.FOLDER_DELETE and action.folder_id is not None:
        await s.execute(
            update(Folder)
            .where(Folder.id == action.folder_id)
            .values(sync_state=p["state"], total_count=p["total"], unread_count=p["unread"])
        )
        uow.dirty_folders.add(action.folder_id)
        uow.record(ObjectType.FOLDER, Op.UPDATE, [action.folder_id])
    await _finish(uow, action, ActionState.FAILED, reason[:2000])


async def _undo_flags(uow: UnitOfWork, action: ActionRow, folder_ids: Collection[int] | None) -> None:
    """Undo a flag change on its places (in `folder_ids` only, when given): only what it did, keeping what later
    changes did to the other flags; one UPDATE per resulting flag set."""
    p = action.payload
    refs = [pl for pl in p["places"] if folder_ids is None or pl["folder_id"] in folder_ids]
    if not refs:
        return
    s = uow.session
    rows = await s.execute(
        select(MessagePlace.id, MessagePlace.flags)
        .where(MessagePlace.id.in_([pl["id"] for pl in refs]))
        .order_by(MessagePlace.id)
        .with_for_update()
    )
    current: dict[int, str] = {place_id: flags for place_id, flags in rows}
    undone: dict[str, list[int]] = defaultdict(list)  # flags -> the places that get them back
    for pl in refs:
        # Places queued before action_messages carry no message id: the action names its one message.
        _touch(uow, pl.get("message_id", action.message_id), [pl["folder_id"]], moved=False)
        if pl["id"] not in current:
            continue  # gone since (expunged)
        flags = _flags(current[pl["id"]])
        before = _flags(pl["flags"])
        flags -= {f for f in p["add"] if f not in before}
        flags |= {f for f in p["remove"] if f in before}
        undone[_text(flags)].append(pl["id"])
    for flags_text, place_ids in undone.items():
        await s.execute(update(MessagePlace).where(MessagePlace.id.in_(place_ids)).values(flags=flags_text))


async def retry_later(uow: UnitOfWork, action: ActionRow, delay: float, reason: str) -> None:
    """A transient failure: the action stays pending (and first in line) until the backoff ends; its attempts
    and the reason are logged, so a client following the feed sees why it waits."""
    await uow.session.execute(
        update(Action)
        .where(Action.id == action.id)
        .values(attempts=Action.attempts + 1, not_before=utcnow() + timedelta(seconds=delay), error=reason[:2000])
    )
    uow.record(ObjectType.ACTION, Op.UPDATE, [action.id])


def _placeholder_of(action: ActionRow) -> Any:
    """The place a move left under its placeholder in its target, unless a later action has moved it on since."""
    p = action.payload
    return (
        (MessagePlace.id == p["move"]["id"])
        & (MessagePlace.folder_id == p["to"])
        & (MessagePlace.uidvalidity == PLACEHOLDER_UIDVALIDITY)
    )


async def _hand_over(uow: UnitOfWork, action: ActionRow, where: dict[str, Any]) -> None:
    """A move ended while a later action of the same message had already taken the place on (a move or delete
    queued on top of this one): that action was told the placeholder, so tell it where the message really is
    now, the UID the server gave, or back in its folder after a failure."""
    p = action.payload
    place_id = p["move"]["id"]
    later = await uow.session.scalars(
        select(Action)
        .where(
            Action.account_id == uow.account_id,
            Action.message_id == action.message_id,
            Action.state == ActionState.PENDING.value,
            Action.kind.in_([ActionKind.MOVE.value, ActionKind.EXPUNGE.value]),
            Action.id > action.id,
        )
        .order_by(Action.id)
        .with_for_update()
    )

    def told(ref: dict[str, Any]) -> bool:
        return bool(
            ref["id"] == place_id and ref["folder_id"] == p["to"] and ref["uidvalidity"] == PLACEHOLDER_UIDVALIDITY
        )

    for next_action in later:
        payload = dict(next_action.payload)
        refs = [ref for ref in [payload.get("move"), *(payload.get("expunge") or ())] if ref and told(ref)]
        if not refs:
            continue
        if payload.get("move") and told(payload["move"]):
            payload["move"] = {**payload["move"], **where}
        payload["expunge"] = [{**ref, **where} if told(ref) else ref for ref in payload.get("expunge") or ()]
        await uow.session.execute(update(Action).where(Action.id == next_action.id).values(payload=payload))
        return  # the actions after it were told where this one leaves the place


async def _restore_places(uow: UnitOfWork, message_id: int, places: Sequence[dict[str, Any]]) -> None:
    # A placeholder names no UID on the server: nothing to put back (the folders' next full compare decides).
    places = [pl for pl in places if pl["uidvalidity"] != PLACEHOLDER_UIDVALIDITY]
    rows = [
        {
            "account_id": uow.account_id,
            "message_id": message_id,
            "folder_id": pl["folder_id"],
            "uidvalidity": pl["uidvalidity"],
            "uid": pl["uid"],
            "flags": pl["flags"],
            "modseq": pl["modseq"],
        }
        for pl in places
    ]
    # Only into folders that still have the UIDVALIDITY the places were taken under.
    found = await uow.session.execute(
        select(Folder.id, Folder.uidvalidity)
        .where(Folder.id.in_([r["folder_id"] for r in rows]))
        .order_by(Folder.id)
        .with_for_update()  # as for a move's undo (fail): a resync commits first or waits
    )
    existing = {folder_id: uidvalidity for folder_id, uidvalidity in found}
    rows = [r for r in rows if r["folder_id"] in existing and existing[r["folder_id"]] == r["uidvalidity"]]
    if rows:
        await uow.session.execute(insert(table(MessagePlace)).prefix_with("IGNORE"), rows)
