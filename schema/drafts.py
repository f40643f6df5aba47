"""Drafts: a message being written, kept in the account's Drafts folder under one id however often it is saved.

```
create(draft)   compose (Bcc kept), mirror it in Drafts at once (\\Draft \\Seen, a placeholder place), thread it,
                queue draft_save: APPEND this version
update(id, d)   the same row gets the new content (blob, parsed fields, attachments; logged as an update),
                queue draft_save: APPEND the new version, expunge the server's older copies, same place
the executor    (synccore.actions) APPENDs the blob the action names, expunges the other copies in Drafts that
                carry the draft's Message-ID, then `saved`: the place takes the new UID, the message its identity
refused         a new draft leaves the mirror; an edit's content goes back to the version before it
```

Every version keeps the draft's Message-ID: it is how the executor finds the older copies to expunge, and how
the folder sync knows a copy it sees appear is the pending action's (schema.actions.pending_arrivals), not a
message of its own. While a draft_save is pending the folder sync also leaves the message's place alone
(pending_messages), so neither the old UID's disappearance nor the new UID's arrival is a delete or an add.

What is editable is read back from the mirror: addresses, subject, references from the parsed columns, the text
and html bodies from the stored bytes (so a body given only as html does not grow a text part).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import delete, select, update

from mime.compose import Attachment, Draft, Mailbox, compose
from mime.parse import ParsedMessage, extract_part, parse_message
from schema import actions, blobs, gmail, messages, packing
from schema.actions import ActionRow, Refused
from schema.models import Action, Folder, Message, MessagePlace
from schema.models import Attachment as AttachmentRow

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from schema.unit import UnitOfWork

ROLE = "drafts"
FLAGS = ("\\Draft", "\\Seen")
# Placeholder UIDs of drafts waiting for APPENDUID: below those of the outbox (-(2^40 + entry)) and of moves.
PLACEHOLDER_BASE = 2 << 40


def placeholder_identity(action_id: int) -> str:
    return f"draft:{action_id}"


class Filed(NamedTuple):
    """Where the server keeps a version the executor APPENDed, under the identity it gave it."""

    uidvalidity: int
    uid: int
    identity: str
    # Gmail: the version's real place in All Mail (it was APPENDed to Drafts, a label folder: schema.gmail).
    home: gmail.Stored | None = None


@dataclass(frozen=True, slots=True)
class Saved:
    message_id: int
    action_id: int


async def folder_of(session: AsyncSession, account_id: int) -> int | None:
    """The account's Drafts folder (special-use role \\Drafts), if it has one."""
    found = await session.scalar(
        select(Folder.id)
        .where(Folder.account_id == account_id, Folder.role == ROLE, Folder.sync_state != "deleting")
        .order_by(Folder.id)
        .limit(1)
    )
    return None if found is None else int(found)


def _version(draft: Draft) -> tuple[bytes, ParsedMessage]:
    """The bytes of one version (Bcc kept: RFC 5322 §3.6.3 lets the author's copy carry it) and their parse."""
    raw = compose(replace(draft, date=draft.date or datetime.now(UTC)), include_bcc=True)
    return raw, parse_message(raw)


async def create(uow: UnitOfWork, folder_id: int, draft: Draft) -> Saved:
    """A new draft in `folder_id`, shown at once; raises mime.compose.ComposeError for what cannot be composed."""
    raw, parsed = _version(draft)
    # The action first: its id names the placeholder place (unique, as UIDs in a folder must be).
    action_id = await actions.save_draft(uow, folder_id, {}, None)
    uid = -(PLACEHOLDER_BASE + action_id)
    fetched = messages.Fetched(
        uid=uid,
        flags=FLAGS,
        modseq=None,
        identity=placeholder_identity(action_id),
        internaldate=datetime.now(UTC),
        raw=raw,
        parsed=parsed,
    )
    [message_id] = await messages.add(uow, folder_id, actions.PLACEHOLDER_UIDVALIDITY, [fetched])
    place_id = await uow.session.scalar(
        select(MessagePlace.id).where(
            MessagePlace.folder_id == folder_id,
            MessagePlace.uidvalidity == actions.PLACEHOLDER_UIDVALIDITY,
            MessagePlace.uid == uid,
        )
    )
    payload = {"folder_id": folder_id, **_payload(place_id, raw, None, parsed)}
    await uow.session.execute(
        update(Action).where(Action.id == action_id).values(message_id=message_id, payload=payload)
    )
    return Saved(message_id, action_id)


def _payload(place_id: int | None, raw: bytes, previous: bytes | None, parsed: ParsedMessage) -> dict[str, Any]:
    return {
        "place": place_id,
        "blob": packing.digest(raw).hex(),
        "previous": previous.hex() if previous is not None else None,
        "message_id_header": parsed.message_id,
    }


async def _place(session: AsyncSession, account_id: int, message_id: int) -> MessagePlace | None:
    """The draft's place in a Drafts folder (locked: two saves of one draft queue in turn)."""
    return await session.scalar(
        select(MessagePlace)
        .join(Folder, Folder.id == MessagePlace.folder_id)
        .where(
            MessagePlace.account_id == account_id,
            MessagePlace.message_id == message_id,
            Folder.role == ROLE,
            Folder.sync_state != "deleting",
        )
        .order_by(MessagePlace.id)
        .limit(1)
        .with_for_update()
    )


async def update_draft(uow: UnitOfWork, message_id: int, draft: Draft) -> int:
    """A new version of a draft: the same message row gets it at once; the action replaces the server's copy."""
    s = uow.session
    place = await _place(s, uow.account_id, message_id)
    if place is None:
        raise Refused("the message is not in a Drafts folder: only drafts can be edited")
    before = await s.scalar(select(Message.blob_sha256).where(Message.id == message_id))
    raw, parsed = _version(draft)
    await messages.rewrite(uow, message_id, raw, parsed)
    return await actions.save_draft(uow, place.folder_id, _payload(place.id, raw, before, parsed), message_id)


async def is_draft(session: AsyncSession, account_id: int, message_id: int) -> bool:
    return bool(
        await session.scalar(select(Message.draft).where(Message.id == message_id, Message.account_id == account_id))
    )


async def stored(
    session: AsyncSession, account_id: int, message_id: int, without: frozenset[int] = frozenset()
) -> Draft | None:
    """The draft as the mirror holds it, ready to be changed and composed again (None: no such message).

    Its attachments come back whole (decoded from the stored bytes, by the part each attachment row names), but
    those whose attachment ids are in `without`; an attachment whose part cannot be read back is refused rather
    than dropped.
    """
    row = await session.scalar(select(Message).where(Message.id == message_id, Message.account_id == account_id))
    if row is None:
        return None
    raw = await blobs.get(session, row.blob_sha256)
    text: str | None = row.text_body
    html: str | None = None
    attached: list[Attachment] = []
    if raw is not None:
        parsed = message_from_bytes(raw, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        text = _content(parsed, "plain")
        html = _content(parsed, "html")
        for part in await session.scalars(
            select(AttachmentRow).where(AttachmentRow.message_id == message_id).order_by(AttachmentRow.id)
        ):
            if part.id in without:
                continue
            found = extract_part(raw, part.part_id)
            if found is None:
                raise Refused(f"the draft's attachment {part.filename or part.part_id} cannot be read back")
            data, content_type, filename = found
            name = part.filename or filename or f"attachment-{len(attached) + 1}"
            attached.append(Attachment(name, content_type, data, part.inline, part.content_id))
    elif row.has_attachments:
        raise Refused("the draft's stored bytes are missing: its attachments cannot be read back")

    def boxes(values: list[dict[str, str]]) -> tuple[Mailbox, ...]:
        return tuple(Mailbox(v["address"], v.get("name") or "") for v in values)

    sender = boxes(row.from_addrs)
    return Draft(
        sender=sender[0] if sender else Mailbox(""),
        to=boxes(row.to_addrs),
        cc=boxes(row.cc_addrs),
        bcc=boxes(row.bcc_addrs),
        reply_to=boxes(row.reply_to_addrs),
        subject=row.subject,
        text=text,
        html=html,
        in_reply_to=row.in_reply_to,
        references=tuple(row.references.split()),
        message_id=row.message_id_header,
        attachments=tuple(attached),
    )


def _content(message: EmailMessage, subtype: str) -> str | None:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        return None
    content = part.get_content()
    return content if isinstance(content, str) else None


# -- how a draft_save ends (synccore.actions) ------------------------------------------------------------------


async def saved(uow: UnitOfWork, action: ActionRow, filed: Filed | None) -> None:
    """The version is on the server at (UIDVALIDITY, UID) under an identity: the draft's place and row take them
    (on Gmail, the place becomes the version's real place in All Mail).

    None: there was nothing to save (the draft was deleted meanwhile). A message the folder sync made of the
    server's copy before this ran (it should not: pending_arrivals) yields to the draft, which keeps its id.
    """
    p = action.payload
    mid = action.message_id
    if filed is not None and mid is not None and p.get("place") is not None:
        if filed.home is not None:
            other = await messages.take_identity(uow, mid, filed.identity)
            if other is not None:
                await _forget(uow, other)
                await messages.take_identity(uow, mid, filed.identity)
            await gmail.take_home(uow, mid, p["place"], filed.home)
        else:
            uidvalidity, uid, identity, _ = filed
            other = await messages.file_copy(uow, mid, p["place"], uidvalidity, uid, identity)
            if other is not None:
                await _forget(uow, other)
                await messages.file_copy(uow, mid, p["place"], uidvalidity, uid, identity)
    await _drop_blobs(uow, p)


async def refused(uow: UnitOfWork, action: ActionRow) -> None:
    """The server refused the version for good: a new draft leaves the mirror; an edited one shows the version
    before the edit again, unless a later edit replaced it meanwhile (that one's action decides)."""
    p = action.payload
    mid = action.message_id
    if mid is not None:
        if p.get("previous") is None:
            await _forget(uow, mid)
        else:
            current = await uow.session.scalar(select(Message.blob_sha256).where(Message.id == mid))
            raw = await blobs.get(uow.session, bytes.fromhex(p["previous"]))
            if current is not None and current.hex() == p.get("blob") and raw is not None:
                await messages.rewrite(uow, mid, raw, parse_message(raw))
    await _drop_blobs(uow, p)


async def _forget(uow: UnitOfWork, message_id: int) -> None:
    """Remove a message and its places from the mirror (logged), pending actions or not."""
    s = uow.session
    folders = set(await s.scalars(select(MessagePlace.folder_id).where(MessagePlace.message_id == message_id)))
    await s.execute(delete(MessagePlace).where(MessagePlace.message_id == message_id))
    uow.dirty_folders.update(folders)
    await messages.delete_messages(uow, [message_id])


async def _drop_blobs(uow: UnitOfWork, payload: dict[str, Any]) -> None:
    shas = [bytes.fromhex(payload[k]) for k in ("blob", "previous") if payload.get(k)]
    keep = await actions.pending_blobs(uow.session, uow.account_id)
    await messages.drop_unused_blobs(uow.session, shas, keep)
