"""Gmail's model in the mirror: a message once, with labels, and its label folders as views.

Gmail stores a message once (All Mail, or Trash, or Spam) and gives it labels (X-GM-LABELS); its IMAP folders
other than those three (INBOX, Sent Mail, Drafts, Starred, Important, one per user label) are views: a message
is in INBOX while it carries \\Inbox. The sync core downloads All Mail, Trash and Spam only (synccore.account),
so each message is fetched once, and keeps a *real* place there: UIDVALIDITY, UID, flags, MODSEQ and the
labels (`MessagePlace.labels`).

Where is a message, for a client? Clients of this API know folders: `Message.folders`, `messages(folder:)`,
folder counts, a thread's folders, subscriptions filtered by folder. Answering them from labels in each resolver
would put Gmail's model in every read path of the gateway (and in every filter, count and subscription) and make
it differ from what the change log carries. Instead the sync writes **derived places**: for each label of a
message in All Mail, a place in that label's folder with `uidvalidity = VIEW_UIDVALIDITY` (-1: never a server's,
and apart from the write-back's placeholders at 0), the All Mail UID, and the All Mail flags. They are kept
current in the same unit of work that changes the real place (`refresh_views`), so every read path of the API
follows Gmail's model unchanged, and a label change is an UPDATE of the message (its folders changed) in the
change log, never a delete and a create. The label folders' own UIDs are never needed: write-back on Gmail goes
through All Mail (`UID STORE +X-GM-LABELS`), and `inboxql verify` compares label folders by X-GM-MSGID.

Labels become Label rows of kind "gmail"; the system labels carry the role of the folder they stand for.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update

from schema.db import upsert
from schema.models import Folder, Message, MessagePlace, table

if TYPE_CHECKING:
    from schema.unit import UnitOfWork

VIEW_UIDVALIDITY = -1
KIND = "gmail"
# Gmail's system labels and the folder role each stands for (the Starred folder is the \Flagged flag).
SYSTEM_LABELS = {
    "\\Inbox": "inbox",
    "\\Sent": "sent",
    "\\Draft": "drafts",
    "\\Starred": "flagged",
    "\\Important": "important",
    "\\Trash": "trash",
    "\\Spam": "junk",
}
# The folders whose messages the sync downloads: apart from each other, together every message once.
STORED_ROLES = ("all", "trash", "junk")


def labels_text(labels: Iterable[str]) -> str:
    """X-GM-LABELS as stored on a place: sorted, one per line (a label may hold spaces)."""
    return "\n".join(sorted(set(labels)))


def label_role(name: str) -> str | None:
    return SYSTEM_LABELS.get(name)


def place_key(flags: str, labels: str) -> str:
    """What the folder sync compares of a place: its flags and, on Gmail, its labels."""
    return f"{flags}\n{labels}" if labels else flags


async def label_folders(uow: UnitOfWork) -> tuple[int | None, dict[str, int]]:
    """The account's All Mail folder id, and label -> the folder that is its view."""
    all_id: int | None = None
    by_label: dict[str, int] = {}
    by_role = {role: name for name, role in SYSTEM_LABELS.items()}
    rows = await uow.session.execute(
        select(Folder.id, Folder.name, Folder.role).where(
            Folder.account_id == uow.account_id, Folder.sync_state != "deleting"
        )
    )
    for fid, name, role in rows:
        if role == "all":
            all_id = fid
        elif role in STORED_ROLES:
            continue
        elif role in by_role:
            by_label[by_role[role]] = fid
        else:
            by_label.setdefault(name, fid)
    return all_id, by_label


async def refresh_views(uow: UnitOfWork, ids: Sequence[int]) -> None:
    """Bring the derived places of these messages in line with their All Mail place's labels and flags."""
    if not ids:
        return
    s = uow.session
    all_id, by_label = await label_folders(uow)
    for start in range(0, len(ids), 1000):
        chunk = list(ids[start : start + 1000])
        wanted: dict[tuple[int, int], dict[str, Any]] = {}
        if all_id is not None:
            rows = await s.execute(
                select(MessagePlace.message_id, MessagePlace.uid, MessagePlace.flags, MessagePlace.labels).where(
                    MessagePlace.folder_id == all_id, MessagePlace.message_id.in_(chunk)
                )
            )
            for mid, uid, flags, labels in rows:
                names = set(labels.split("\n")) if labels else set()
                if "\\Flagged" in flags.split():
                    names.add("\\Starred")
                for name in names:
                    fid = by_label.get(name)
                    if fid is not None:
                        wanted[(mid, fid)] = {"uid": uid, "flags": flags}
        current: dict[tuple[int, int], Any] = {}
        for row in await s.execute(
            select(
                MessagePlace.id, MessagePlace.message_id, MessagePlace.folder_id, MessagePlace.uid, MessagePlace.flags
            )
            .where(MessagePlace.message_id.in_(chunk), MessagePlace.uidvalidity == VIEW_UIDVALIDITY)
            .with_for_update()
        ):
            current[(row.message_id, row.folder_id)] = row
        gone = [row for key, row in current.items() if key not in wanted]
        if gone:
            await s.execute(delete(MessagePlace).where(MessagePlace.id.in_([r.id for r in gone])))
        new = [
            {
                "account_id": uow.account_id,
                "message_id": mid,
                "folder_id": fid,
                "uidvalidity": VIEW_UIDVALIDITY,
                "uid": v["uid"],
                "flags": v["flags"],
            }
            for (mid, fid), v in wanted.items()
            if (mid, fid) not in current
        ]
        if new:
            await s.execute(upsert(table(MessagePlace), "message_id", "flags"), new)
        changed = [
            (row, wanted[key])
            for key, row in current.items()
            if key in wanted and (row.uid, row.flags) != (wanted[key]["uid"], wanted[key]["flags"])
        ]
        for row, v in changed:
            await s.execute(
                update(MessagePlace).where(MessagePlace.id == row.id).values(uid=v["uid"], flags=v["flags"])
            )
        moved = {r.message_id for r in gone} | {n["message_id"] for n in new}
        uow.moved_messages.update(moved)
        uow.dirty_messages.update(moved | {row.message_id for row, _ in changed})
        uow.dirty_folders.update({r.folder_id for r in gone} | {n["folder_id"] for n in new})
        uow.dirty_folders.update(row.folder_id for row, _ in changed)


async def refresh_all_views(uow: UnitOfWork) -> None:
    """Every message's derived places: after a label folder appeared, was renamed or went away."""
    ids = list(await uow.session.scalars(select(Message.id).where(Message.account_id == uow.account_id)))
    await refresh_views(uow, ids)


@dataclass(frozen=True, slots=True)
class Stored:
    """Where Gmail keeps a message: its real place (All Mail, Trash or Spam) and what the sync compares there."""

    folder_id: int
    uidvalidity: int
    uid: int
    flags: str
    labels: str
    modseq: int | None


async def take_home(uow: UnitOfWork, message_id: int, place_id: int, stored: Stored) -> None:
    """A message of ours that Gmail now keeps at `stored` (a sent message its SMTP filed, a draft APPENDed to a
    label folder): the place the mirror showed it at (a placeholder in Sent Mail or Drafts, or the real place of
    the version it replaced) becomes that real place, and its label folders views of it, as the sync would
    have made them."""
    s = uow.session
    rows = await s.execute(
        select(MessagePlace.id, MessagePlace.folder_id).where(MessagePlace.message_id == message_id).with_for_update()
    )
    places: dict[int, int] = {pid: fid for pid, fid in rows}
    if place_id not in places:
        return
    # Gmail keeps a message once: its other places (the real one of the version it replaced, the views) go, and
    # so does a place another message held at that UID.
    await s.execute(
        delete(MessagePlace).where(
            MessagePlace.id != place_id,
            (MessagePlace.message_id == message_id)
            | (
                (MessagePlace.folder_id == stored.folder_id)
                & (MessagePlace.uidvalidity == stored.uidvalidity)
                & (MessagePlace.uid == stored.uid)
            ),
        )
    )
    await s.execute(
        update(MessagePlace)
        .where(MessagePlace.id == place_id)
        .values(
            folder_id=stored.folder_id,
            uidvalidity=stored.uidvalidity,
            uid=stored.uid,
            flags=stored.flags,
            labels=stored.labels,
            modseq=stored.modseq,
        )
    )
    uow.moved_messages.add(message_id)
    uow.dirty_messages.add(message_id)
    uow.dirty_folders.update({*places.values(), stored.folder_id})
    await refresh_views(uow, [message_id])


def place_labels(rows: Iterable[tuple[int, str]]) -> dict[int, set[str]]:
    """message id -> the Gmail labels its places carry."""
    found: dict[int, set[str]] = defaultdict(set)
    for mid, labels in rows:
        if labels:
            found[mid].update(labels.split("\n"))
    return found
