"""Messages and their places: what the sync core writes when mail arrives, changes flags, moves or vanishes."""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncSession

from mime import Address, ParsedMessage, is_reply, normalize_subject
from schema import actions, blobs, bulk, gmail, packing, threads
from schema.changelog import ObjectType, Op
from schema.db import MANY_IDS, ids_in, upsert
from schema.models import Attachment, Folder, Message, MessagePlace, MimeBlob, table, utcnow

if TYPE_CHECKING:
    from schema.unit import UnitOfWork

MAX_TEXT_CHARS = 1_000_000
# Packed, the HTML must fit a MEDIUMBLOB and, with the rest of its row, one packet (max_allowed_packet): an HTML
# body of inline images can outgrow both. The raw message keeps all of it.
MAX_HTML_CHARS = 2_000_000
HTML_TRUNCATED = "HtmlBodyTruncated"


@dataclass(frozen=True, slots=True)
class Fetched:
    """One message as a folder reported it. raw and parsed are needed only for an identity not yet known."""

    uid: int
    flags: tuple[str, ...]
    modseq: int | None
    identity: str
    internaldate: datetime | None = None
    raw: bytes | None = None
    parsed: ParsedMessage | None = None
    # The raw message as stored (schema.packing.pack), when the caller packed it already.
    packed: tuple[str, bytes] | None = None
    # Gmail: X-GM-LABELS (kept on the place) and X-GM-THRID (the thread of a new message). schema.gmail
    labels: tuple[str, ...] = ()
    gm_thread: int | None = None


# The defect of a message stored with its raw bytes but few parsed fields: the store refused the whole of them.
STORED_RAW_ONLY = "StoredRawOnly"


def raw_only(p: ParsedMessage) -> ParsedMessage:
    """What is left of a parse for a message the store refused in full: its headers' gist, no bodies or parts,
    flagged. The raw message, stored beside it, keeps everything (downloads, a later re-parse)."""
    return replace(
        p,
        subject=p.subject[:255],
        from_=p.from_[:20],
        to=p.to[:20],
        cc=p.cc[:20],
        bcc=p.bcc[:20],
        reply_to=p.reply_to[:20],
        sender=p.sender[:20],
        references=(),
        text_body="",
        html_body=None,
        snippet="",
        attachments=(),
        has_attachments=False,
        malformed=True,
        defects=(*p.defects[:20], STORED_RAW_ONLY),
    )


class Unknown(ValueError):
    """Messages given without their raw bytes are not (or no longer) in the mirror: a caller that looked them up
    before (known_identities) lost a race with their deletion (an expunge done, orphans collected) and must
    download them. Nothing was written."""

    def __init__(self, identities: Sequence[str]) -> None:
        super().__init__(f"messages new here, their raw bytes are needed: {', '.join(identities[:5])}")
        self.identities = frozenset(identities)


@dataclass(frozen=True, slots=True)
class PlaceFlags:
    uid: int
    flags: tuple[str, ...]
    modseq: int | None
    labels: tuple[str, ...] | None = None  # Gmail's X-GM-LABELS; None: not reported (left as they are)


def flags_text(flags: Iterable[str]) -> str:
    return " ".join(sorted(set(flags)))


def _naive_utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _addresses(addrs: Sequence[Address]) -> list[dict[str, str]]:
    return [{"name": a.name, "address": a.address} for a in addrs]


def _content(raw: bytes, p: ParsedMessage) -> dict[str, Any]:
    """The columns a message's content fills (what a new version of a draft rewrites)."""
    defects = list(p.defects)
    if p.html_body and len(p.html_body) > MAX_HTML_CHARS:
        defects.append(HTML_TRUNCATED)
    return {
        "blob_sha256": packing.digest(raw),
        "size": len(raw),
        "message_id_header": (p.message_id or "")[:191] or None,
        "in_reply_to": (p.in_reply_to or "")[:255] or None,
        "references": " ".join(p.references),
        "subject": p.subject,
        "from_addrs": _addresses(p.from_),
        "to_addrs": _addresses(p.to),
        "cc_addrs": _addresses(p.cc),
        "bcc_addrs": _addresses(p.bcc),
        "reply_to_addrs": _addresses(p.reply_to),
        "search_addresses": " ".join(f"{a.name} {a.address}".strip() for a in (*p.from_, *p.to, *p.cc)),
        "date": _naive_utc(p.date),
        "snippet": p.snippet[:255],
        "text_body": p.text_body[:MAX_TEXT_CHARS],
        "html_body": zlib.compress(p.html_body[:MAX_HTML_CHARS].encode(), 1) if p.html_body else None,
        "has_attachments": p.has_attachments,
        "malformed": p.malformed,
        "defects": " ".join(defects)[:1024],
    }


def _attachment_rows(message_id: int, p: ParsedMessage) -> list[dict[str, Any]]:
    return [
        {
            "message_id": message_id,
            "part_id": a.part_id[:64],
            "filename": a.filename[:512] if a.filename else None,
            "content_type": a.content_type[:255],
            "size": a.size,
            "content_id": a.content_id[:255] if a.content_id else None,
            "inline": a.inline,
        }
        for a in p.attachments
    ]


async def known_identities(session: AsyncSession, account_id: int, identities: Iterable[str]) -> dict[str, int]:
    wanted = list(set(identities))
    found: dict[str, int] = {}
    for start in range(0, len(wanted), 1000):
        query = select(Message.identity, Message.id).where(
            Message.account_id == account_id, Message.identity.in_(wanted[start : start + 1000])
        )
        found.update({ident: mid for ident, mid in await session.execute(query)})
    return found


async def places_by_id(session: AsyncSession, ids: Iterable[int]) -> dict[int, Row[*tuple[Any, ...]]]:
    """Where places are (id, message_id, folder_id, uidvalidity, uid), as rows: the executor looks up thousands."""
    return {p.id: p for p in await session.execute(select(*actions.PLACE_WHERE).where(ids_in(MessagePlace.id, ids)))}


async def places_in_folders(
    session: AsyncSession, ids: Iterable[int]
) -> tuple[dict[int, Row[*tuple[Any, ...]]], dict[int, Folder]]:
    """`places_by_id` and the folders they are in (as folders.by_ids reads them), in one statement (two for
    MANY_IDS places or more): what the action executor reads before a UID STORE."""
    places: dict[int, Row[*tuple[Any, ...]]] = {}
    found: dict[int, Folder] = {}
    ids = list(ids)
    if len(ids) >= MANY_IDS:
        # Many places in a few folders: the places as columns, then their folders, two statements. Joined, each of
        # 1,000 rows carried a folder for the ORM to look up (5.6 of 7.3 ms, a 1,000-message run).
        places = await places_by_id(session, ids)
        folder_ids = {p[2] for p in places.values()}  # folder_id (actions.PLACE_WHERE)
        found = {f.id: f for f in await session.scalars(select(Folder).where(Folder.id.in_(folder_ids)))}
        return places, found
    rows = await session.execute(
        select(*actions.PLACE_WHERE, Folder)
        .outerjoin(Folder, Folder.id == MessagePlace.folder_id)
        .where(ids_in(MessagePlace.id, ids))
    )
    for row in rows:
        places[row.id] = row  # read as places_by_id's rows are (the folder rides along)
        if row.Folder is not None:
            found[row.Folder.id] = row.Folder
    return places, found


async def message_id_header(session: AsyncSession, message_id: int | None) -> str | None:
    """The message's Message-ID (without brackets), by which a client finds it on a server again."""
    if message_id is None:
        return None
    found: str | None = await session.scalar(select(Message.message_id_header).where(Message.id == message_id))
    return found


async def held(session: AsyncSession, folder_id: int, uidvalidity: int) -> dict[int, tuple[str, str]]:
    """UID -> (flags, message identity) of the places the mirror holds in a folder under a UIDVALIDITY; on Gmail
    the flags are followed by the labels (schema.gmail.place_key)."""
    rows = await session.execute(
        select(MessagePlace.uid, MessagePlace.flags, MessagePlace.labels, Message.identity)
        .join(Message, Message.id == MessagePlace.message_id)
        .where(MessagePlace.folder_id == folder_id, MessagePlace.uidvalidity == uidvalidity)
    )
    return {uid: (gmail.place_key(flags, labels), identity) for uid, flags, labels, identity in rows}


async def held_count(session: AsyncSession, folder_id: int, uidvalidity: int) -> int:
    """How many places the mirror holds in a folder under a UIDVALIDITY (no placeholder of a pending action)."""
    found = await session.scalar(
        select(func.count())
        .select_from(MessagePlace)
        .where(MessagePlace.folder_id == folder_id, MessagePlace.uidvalidity == uidvalidity)
    )
    return int(found or 0)


async def has_orphans(session: AsyncSession, account_id: int) -> bool:
    """Whether a message of the account has lost its last place (schema.messages.collect_orphans deletes it)."""
    found = await session.scalar(
        select(Message.id).where(Message.account_id == account_id, Message.orphaned_at.is_not(None)).limit(1)
    )
    return found is not None


async def has_any(session: AsyncSession, account_id: int) -> bool:
    """Whether the account's mirror holds a message at all (a new account's holds none)."""
    found = await session.scalar(select(Message.id).where(Message.account_id == account_id).limit(1))
    return found is not None


async def add(
    uow: UnitOfWork, folder_id: int, uidvalidity: int, fetched: Sequence[Fetched], *, made_up: bool = False
) -> list[int]:
    """Mirror messages found in a folder: new messages get rows and threads, known ones get a new place.

    `made_up`: this unit made up the identities and the UIDs (a sent message's placeholder, schema.outbox), so no
    message has them and no place holds them: nothing is looked up.
    """
    if not fetched:
        return []
    s = uow.session
    ids = {} if made_up else await known_identities(s, uow.account_id, (f.identity for f in fetched))
    # A message a mutation changed is left as the mutation made it until its action has run (schema.actions).
    waiting = await actions.pending_messages(s, uow.account_id, ids.values())
    if waiting:
        uow.skipped_pending = True
        fetched = [f for f in fetched if ids.get(f.identity) not in waiting]
        if not fetched:
            return []
    new: dict[str, Fetched] = {}
    for f in fetched:
        if f.identity not in ids and f.identity not in new:
            if f.raw is None or f.parsed is None:
                raise Unknown([g.identity for g in fetched if g.identity not in ids and g.raw is None])
            new[f.identity] = f
    if new and uidvalidity != actions.PLACEHOLDER_UIDVALIDITY:
        # A copy a pending action is putting here (a draft's new version) is that action's to place: mirrored
        # now, it would be a second message beside the one the mirror already shows.
        arriving = await actions.pending_arrivals(s, uow.account_id, folder_id)
        skipped = {i for i, f in new.items() if f.parsed is not None and f.parsed.message_id in arriving}
        if skipped:
            fetched = [f for f in fetched if f.identity not in skipped]
            new = {i: f for i, f in new.items() if i not in skipped}
            if not fetched:
                return []
    if new:
        ids.update(await _create(uow, list(new.values())))
        uow.new_messages += len(new)
    # A UID already placed with another message (the server broke the UID promise, or an earlier listing
    # misread it) moves to this one: the message it leaves must be refreshed too, or it keeps a ghost place.
    displaced = {} if made_up else await _holders(s, folder_id, uidvalidity, [f.uid for f in fetched])
    placed = await s.execute(
        upsert(table(MessagePlace), "message_id", "flags", "modseq", "labels"),
        [
            {
                "account_id": uow.account_id,
                "message_id": ids[f.identity],
                "folder_id": folder_id,
                "uidvalidity": uidvalidity,
                "uid": f.uid,
                "flags": flags_text(f.flags),
                "modseq": f.modseq,
                "labels": gmail.labels_text(f.labels),
            }
            for f in fetched
        ],
    )
    by_uid = {f.uid: f for f in fetched}
    touched = sorted({ids[f.identity] for f in fetched})
    left = {mid for uid, mid in displaced.items() if mid != ids[by_uid[uid].identity]}
    uow.dirty_messages.update(touched, left)
    uow.moved_messages.update(touched, left)
    # Inserted rows count 1 each, updated ones 2: more than one each means a place appeared since _holders read
    # (another unit placed the UID meanwhile), and the folder is counted in full.
    if displaced or len(by_uid) < len(fetched) or getattr(placed, "rowcount", -1) != len(fetched):
        uow.dirty_folders.add(folder_id)
    else:  # every place is new: the folder's counts grow by them (what refresh_folder_counts would count)
        unread = sum(1 for f in fetched if "\\Seen" not in flags_text(f.flags))
        uow.counts_move(folder_id, len(fetched), unread)
    return touched


async def _holders(s: AsyncSession, folder_id: int, uidvalidity: int, uids: Sequence[int]) -> dict[int, int]:
    """uid -> message id of the places that already exist among these UIDs."""
    found: dict[int, int] = {}
    for start in range(0, len(uids), 1000):
        rows = await s.execute(
            select(MessagePlace.uid, MessagePlace.message_id).where(
                MessagePlace.folder_id == folder_id,
                MessagePlace.uidvalidity == uidvalidity,
                MessagePlace.uid.in_(uids[start : start + 1000]),
            )
        )
        found.update({uid: mid for uid, mid in rows})
    return found


def _thread_key(p: ParsedMessage, internaldate: datetime | None, gm_thread: int | None = None) -> threads.ThreadKey:
    return threads.ThreadKey(
        gmail_thread=gm_thread,
        message_id=p.message_id,
        references=tuple(p.references) + ((p.in_reply_to,) if p.in_reply_to else ()),
        subject=p.subject,
        normalized_subject=normalize_subject(p.subject),
        is_reply=is_reply(p.subject),
        when=_naive_utc(p.date) or _naive_utc(internaldate) or utcnow(),
    )


# A single message row up to this many characters of text is inserted as text rather than by a bulk command.
SMALL_ROW = 64 * 1024


def _text_size(row: dict[str, Any]) -> int:
    return sum(len(v) for v in row.values() if isinstance(v, str | bytes))


async def _create(uow: UnitOfWork, items: Sequence[Fetched]) -> dict[str, int]:
    s = uow.session
    await blobs.put_many(s, [(f.raw, f.packed) for f in items if f.raw is not None])
    keys = []
    for f in items:
        assert f.parsed is not None
        keys.append(_thread_key(f.parsed, f.internaldate, f.gm_thread))
    thread_ids = await threads.assign(uow, keys)
    rows: list[dict[str, Any]] = []
    for f, tid in zip(items, thread_ids, strict=True):
        p, raw = f.parsed, f.raw
        assert p is not None
        assert raw is not None
        rows.append(
            {
                "account_id": uow.account_id,
                "identity": f.identity,
                "thread_id": tid,
                **_content(raw, p),
                "received_at": _naive_utc(f.internaldate) or _naive_utc(p.date) or utcnow(),
                "unread": "\\Seen" not in f.flags,
                "starred": "\\Flagged" in f.flags,
                "answered": "\\Answered" in f.flags,
                "draft": "\\Draft" in f.flags,
            }
        )
    # One small message (a sent one, one that arrived on IDLE) goes as an INSERT that returns its id: the bulk
    # command costs a PREPARE and a read of the ids back, two round trips more.
    if not (len(rows) == 1 and _text_size(rows[0]) <= SMALL_ROW) and await bulk.insert(s, table(Message), rows):
        ids = await known_identities(s, uow.account_id, (f.identity for f in items))
        created = [ids[f.identity] for f in items]
    else:
        created = list(
            (
                await s.execute(
                    insert(table(Message)).returning(table(Message).c.id, sort_by_parameter_order=True), rows
                )
            ).scalars()
        )
    attachments = [
        row
        for f, mid in zip(items, created, strict=True)
        if f.parsed is not None
        for row in _attachment_rows(mid, f.parsed)
    ]
    if attachments:
        await s.execute(insert(table(Attachment)), attachments)
    uow.record(ObjectType.MESSAGE, Op.CREATE, created)
    return {f.identity: mid for f, mid in zip(items, created, strict=True)}


async def set_flags(uow: UnitOfWork, folder_id: int, uidvalidity: int, changes: Sequence[PlaceFlags]) -> int:
    """Apply flag changes the server reported; returns how many places really changed."""
    if not changes:
        return 0
    s = uow.session
    by_uid = {c.uid: c for c in changes}
    changed: list[dict[str, Any]] = []
    unread = 0  # unread places gained (negative: lost), as schema.aggregates.refresh_folder_counts counts them
    for start in range(0, len(changes), 1000):
        uids = list(by_uid)[start : start + 1000]
        # Locked, then checked for pending actions: a mutation committing meanwhile is either seen or waits.
        # Columns, as locked (not as this unit may have loaded them): the unread count moves by what they were.
        found = (
            await s.execute(
                select(
                    MessagePlace.id,
                    MessagePlace.account_id,
                    MessagePlace.message_id,
                    MessagePlace.uid,
                    MessagePlace.flags,
                    MessagePlace.modseq,
                    MessagePlace.labels,
                )
                .where(
                    MessagePlace.folder_id == folder_id,
                    MessagePlace.uidvalidity == uidvalidity,
                    ids_in(MessagePlace.uid, uids),
                )
                .with_for_update()
            )
        ).all()
        waiting = await actions.pending_messages(s, uow.account_id, (p[2] for p in found))  # message_id
        # By position (the select's order): a STORE's answer or an IDLE push of 1,000 places runs this loop 1,000
        # times, and a Row's lookups by name were most of it.
        for pid, account_id, message_id, uid, old_flags, old_modseq, old_labels in found:
            if message_id in waiting:
                uow.skipped_pending = True
                continue
            c = by_uid[uid]
            flags = flags_text(c.flags)
            labels = old_labels if c.labels is None else gmail.labels_text(c.labels)
            if flags != old_flags or labels != old_labels or (c.modseq is not None and c.modseq != old_modseq):
                changed.append(
                    {
                        "id": pid,
                        "account_id": account_id,
                        "message_id": message_id,
                        "folder_id": folder_id,
                        "uidvalidity": uidvalidity,
                        "uid": uid,
                        "flags": flags,
                        "modseq": c.modseq,
                        "labels": labels,
                    }
                )
                if flags != old_flags or labels != old_labels:
                    uow.dirty_messages.add(message_id)
                unread += ("\\Seen" not in flags) - ("\\Seen" not in old_flags)
    if changed:
        # A STORE's answer of 1,000 messages is 1,000 rows: one bulk command, not their values spelled into a text.
        written = ("flags", "modseq", "labels")
        if len(changed) < bulk.MANY or not await bulk.insert(s, table(MessagePlace), changed, update=written):
            await s.execute(upsert(table(MessagePlace), *written), changed)
        # Only flags changed: the folder's counts move by the difference, not by a count of all its places.
        uow.counts_move(folder_id, 0, unread)
    return len(changed)


async def remove_places(
    uow: UnitOfWork, folder_id: int, uids: Sequence[int] | None = None, *, not_under: int | None = None
) -> int:
    """Forget places (expunged, or every place of a folder when uids is None); with `not_under`, every place of
    the folder under another UIDVALIDITY than that one (a placeholder of a pending action excepted): UIDs that mean
    nothing on the server any more, gone even where a pending action protects the message (RFC 3501 §2.3.1.1: no
    later pass could tell them from the new UIDVALIDITY's, and the folder would show the message twice)."""
    s = uow.session
    query = (
        select(MessagePlace.id, MessagePlace.message_id).where(MessagePlace.folder_id == folder_id).with_for_update()
    )
    if not_under is not None:
        query = query.where(MessagePlace.uidvalidity.not_in([not_under, actions.PLACEHOLDER_UIDVALIDITY]))
    rows: list[Any] = []
    if uids is None:
        rows = list(await s.execute(query))
    else:
        for start in range(0, len(uids), 1000):
            rows += list(await s.execute(query.where(MessagePlace.uid.in_(uids[start : start + 1000]))))
    if not_under is None:
        waiting = await actions.pending_messages(s, uow.account_id, (r.message_id for r in rows))
        if waiting:
            uow.skipped_pending = True
            rows = [r for r in rows if r.message_id not in waiting]
    if not rows:
        return 0
    place_ids = [r.id for r in rows]
    for start in range(0, len(place_ids), 1000):
        await s.execute(delete(MessagePlace).where(MessagePlace.id.in_(place_ids[start : start + 1000])))
    uow.dirty_messages.update(r.message_id for r in rows)
    uow.moved_messages.update(r.message_id for r in rows)
    uow.dirty_folders.add(folder_id)
    return len(rows)


async def collect_orphans(uow: UnitOfWork, before: datetime) -> int:
    """Delete messages that have had no place since before `before` (a full pass did not find them)."""
    s = uow.session
    rows = list(
        await s.execute(
            select(Message.id, Message.thread_id, Message.blob_sha256).where(
                Message.account_id == uow.account_id,
                Message.orphaned_at.is_not(None),
                Message.orphaned_at < before,
            )
        )
    )
    # An expunge a mutation asked for leaves its message without places until the server has agreed.
    waiting = await actions.pending_messages(s, uow.account_id, (r.id for r in rows))
    rows = [r for r in rows if r.id not in waiting]
    if not rows:
        return 0
    # Read again, locked: a folder sync on another connection (the inbox's, which IDLEs beside the passes) may have
    # placed one of them since, e.g. a move whose expunge was seen first. Deleted all the same, the message would take
    # that place along (ON DELETE CASCADE) after the folder's cursor had passed its UID. Locked, one placed by a sync
    # that has not committed yet is read once it has.
    still = await s.scalars(
        select(Message.id)
        .where(
            Message.id.in_([r.id for r in rows]),
            Message.orphaned_at.is_not(None),
            Message.orphaned_at < before,
        )
        .order_by(Message.id)
        .with_for_update()
    )
    locked = list(still)
    # And never one that has a place, whatever its mark says: deleting it would take the place along.
    placed = set(await s.scalars(select(MessagePlace.message_id).where(MessagePlace.message_id.in_(locked)).distinct()))
    if placed:
        uow.dirty_messages.update(placed)  # the refresh clears a mark left by a unit that read too early
    ids = sorted(set(locked) - placed)
    await delete_messages(uow, ids)
    return len(ids)


async def drop_placeless(uow: UnitOfWork, ids: Sequence[int]) -> None:
    """Delete those of these messages that have no place left (an expunge the server agreed to)."""
    if not ids:
        return
    with_place = set(
        await uow.session.scalars(select(MessagePlace.message_id).where(MessagePlace.message_id.in_(list(ids))))
    )
    await delete_messages(uow, [mid for mid in ids if mid not in with_place])


async def delete_messages(uow: UnitOfWork, ids: Sequence[int]) -> None:
    """Delete message rows (and their blobs once no message holds them); logged, their threads refreshed."""
    if not ids:
        return
    s = uow.session
    rows = list(await s.execute(select(Message.id, Message.thread_id, Message.blob_sha256).where(Message.id.in_(ids))))
    await s.execute(delete(Message).where(Message.id.in_(ids)))
    uow.record(ObjectType.MESSAGE, Op.DELETE, ids)
    uow.dirty_messages.difference_update(ids)
    uow.dirty_threads.update(r.thread_id for r in rows)
    await drop_unused_blobs(s, [r.blob_sha256 for r in rows])


async def drop_unused_blobs(s: AsyncSession, shas: Iterable[bytes], keep: Iterable[bytes] = ()) -> None:
    """Delete the blobs of these that no message holds (and that are not in `keep`)."""
    wanted = list(set(shas) - set(keep))
    if not wanted:
        return
    still = set(await s.scalars(select(Message.blob_sha256).where(Message.blob_sha256.in_(wanted))))
    unused = [h for h in wanted if h not in still]
    if unused:
        await s.execute(delete(MimeBlob).where(MimeBlob.sha256.in_(unused)))


async def rewrite(uow: UnitOfWork, message_id: int, raw: bytes, parsed: ParsedMessage) -> None:
    """New content for a message that keeps its id (a draft saved again): its blob, parsed fields and attachments
    are replaced, logged as an update. New references may move it to another thread (joining, as threading does).
    The old blob stays (an action may still need it): schema.drafts drops it when no one does."""
    s = uow.session
    before = (
        await s.execute(
            select(Message.thread_id, Message.references, Message.in_reply_to, Message.message_id_header).where(
                Message.id == message_id, Message.account_id == uow.account_id
            )
        )
    ).first()
    if before is None:
        return
    await blobs.put_many(s, [(raw, None)])
    values = _content(raw, parsed)
    old_refs = (before.references, before.in_reply_to, before.message_id_header)
    if old_refs != (values["references"], values["in_reply_to"], values["message_id_header"]):
        [values["thread_id"]] = await threads.assign(uow, [_thread_key(parsed, None)])
    uow.dirty_threads.update({before.thread_id, values.get("thread_id", before.thread_id)})
    await s.execute(update(Message).where(Message.id == message_id).values(**values))
    await s.execute(delete(Attachment).where(Attachment.message_id == message_id))
    attachments = _attachment_rows(message_id, parsed)
    if attachments:
        await s.execute(insert(table(Attachment)), attachments)
    uow.record(ObjectType.MESSAGE, Op.UPDATE, [message_id])


async def file_copy(
    uow: UnitOfWork, message_id: int, place_id: int, uidvalidity: int, uid: int, identity: str | None
) -> int | None:
    """The server holds the message the mirror showed at a place of its own (a placeholder, or the UID of a
    version it replaced) at (UIDVALIDITY, UID) now: the place takes them, the message the server's identity.

    Returns the id of another message that holds that identity already (the folder sync mirrored the server's
    copy first), changing nothing: the caller decides which of the two stays.
    """
    s = uow.session
    if identity is not None:
        other = await take_identity(uow, message_id, identity)
        if other is not None:
            return other
    folder_id = await s.scalar(
        select(MessagePlace.folder_id).where(MessagePlace.id == place_id, MessagePlace.message_id == message_id)
    )
    if folder_id is None:
        return None
    await s.execute(
        delete(MessagePlace).where(
            MessagePlace.folder_id == folder_id,
            MessagePlace.uidvalidity == uidvalidity,
            MessagePlace.uid == uid,
            MessagePlace.id != place_id,
        )
    )
    await s.execute(update(MessagePlace).where(MessagePlace.id == place_id).values(uidvalidity=uidvalidity, uid=uid))
    uow.dirty_messages.add(message_id)
    uow.dirty_folders.add(folder_id)
    return None


async def take_identity(uow: UnitOfWork, message_id: int, identity: str) -> int | None:
    """The message is known by the server's `identity` from now on. Returns the id of another message that holds
    it already (the folder sync mirrored the server's copy first), changing nothing."""
    s = uow.session
    other = await s.scalar(select(Message.id).where(Message.account_id == uow.account_id, Message.identity == identity))
    if other is not None and other != message_id:
        return int(other)
    await s.execute(update(Message).where(Message.id == message_id).values(identity=identity))
    return None


async def rekey_by_content(uow: UnitOfWork) -> int:
    """Know the account's messages by the SHA-256 of their raw bytes from now on: what is left when the server
    stops giving ids of its own (synccore.identity's content identity, "sha:<hex>"). Ids stay; only the key by
    which the sync finds them changes. A message whose bytes another message holds keeps its old key (IGNORE: the
    unique key), so the sync finds that content as the other message. Returns how many were re-keyed."""
    result = await uow.session.execute(
        update(Message)
        .prefix_with("IGNORE")
        .where(Message.account_id == uow.account_id, Message.identity.not_like("sha:%"))
        .values(identity=func.concat("sha:", func.lower(func.hex(Message.blob_sha256))))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


async def identity_sample(session: AsyncSession, account_id: int) -> str | None:
    """An identity the account's messages are known by, a server's own ("guid:...") before a content hash
    ("sha:..."): what tells the identity mode of an account mirrored before the mode was recorded."""
    for condition in (Message.identity.not_like("sha:%"), Message.identity.like("sha:%")):
        found: str | None = await session.scalar(
            select(Message.identity).where(Message.account_id == account_id, condition).limit(1)
        )
        if found is not None:
            return found
    return None
