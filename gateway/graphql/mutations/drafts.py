"""Draft mutations: create, update, delete and send a draft (schema.drafts, schema.outbox).

```
createDraft   compose (mime.compose, Bcc kept) -> a Message in the account's Drafts folder at once (\\Draft \\Seen),
              joined to its thread; a draft_save action APPENDs it
updateDraft   the fields given replace the draft's, the others stay; the same Message (same id) shows the new
              version at once; a draft_save action APPENDs it and expunges the server's older copy
deleteDraft   an expunge action (a message that is not a draft: BAD_USER_INPUT)
sendDraft     the draft's content goes to the outbox (schema.outbox.queue_draft), the draft leaves Drafts (expunge)
```

One unit of work each (writes.write: ids resolved as reads resolve them, idempotency keys). What cannot be
composed (a line break in a header field, an address that is not local@domain, no recipient to send to) is
BAD_USER_INPUT naming the field.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import strawberry
from sqlalchemy import select
from sqlalchemy.engine import Row

from gateway.errors import BadUserInput
from gateway.graphql.context import Info
from gateway.graphql.mutations.composing import (
    MAX_SUBJECT,
    AddressInput,
    attachments_of,
    check_address,
    check_text,
    message_in,
    uploads_of,
)
from gateway.graphql.mutations.writes import Result, Work, folder_with_role, messages_of, write
from gateway.graphql.types.actions import Action
from gateway.graphql.types.fields import described, existing
from gateway.graphql.types.messages import Message
from gateway.ids import pk_of, to_global
from mime.compose import ComposeError, Draft, Mailbox, reply_headers, reply_subject
from schema import actions, drafts, outbox
from schema.actions import Refused
from schema.models import Account, MessagePlace, Outbox
from schema.models import Attachment as AttachmentRow
from schema.models import Message as MessageRow
from schema.shards import shard_of
from schema.unit import UnitOfWork

MAX_ADDRESSES = 100
MAX_BODY = 1_000_000
KEY = "Up to 128 ASCII characters: a retry with the same key gets the first answer."


@strawberry.input
class CreateDraftInput:
    account_id: strawberry.ID
    to: list[AddressInput] | None = None
    cc: list[AddressInput] | None = None
    bcc: list[AddressInput] | None = strawberry.field(default=None, description="Kept in the Drafts copy.")
    subject: str | None = strawberry.field(default=None, description="Default for a reply: Re: and the original's.")
    text: str | None = None
    html: str | None = None
    reply_to: strawberry.ID | None = strawberry.field(
        default=None, description="A message this answers: In-Reply-To and References name it; threaded with it."
    )
    attachments: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Ids of uploads (POST /uploads) of the same account, attached in this order."
    )
    idempotency_key: str | None = strawberry.field(default=None, description=KEY)


@strawberry.input
class UpdateDraftInput:
    id: strawberry.ID = strawberry.field(description="The draft (a Message); it keeps this id.")
    to: list[AddressInput] | None = None
    cc: list[AddressInput] | None = None
    bcc: list[AddressInput] | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    reply_to: strawberry.ID | None = None
    add_attachments: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Ids of uploads (POST /uploads) of the same account, attached after the others."
    )
    remove_attachments: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Ids of the draft's own attachments (Message.attachments) to leave out."
    )
    idempotency_key: str | None = strawberry.field(default=None, description=KEY)


@strawberry.input
class DeleteDraftInput:
    id: strawberry.ID
    idempotency_key: str | None = strawberry.field(default=None, description=KEY)


@strawberry.input
class SendDraftInput:
    id: strawberry.ID
    send_at: datetime | None = strawberry.field(default=None, description="Send later (UTC when no offset given).")
    idempotency_key: str | None = strawberry.field(default=None, description=KEY)


@strawberry.type
class DraftPayload:
    """The action queued, and the draft as the mirror shows it now."""

    action_id: strawberry.Private[int]
    message_id: strawberry.Private[int]

    @described("The draft_save (or, deleting, the expunge) queued: poll its state.")
    async def action(self, info: Info) -> Action:
        return Action.of(existing(await info.context.loaders.actions.load(self.action_id)))

    @described("The draft as the mirror shows it now (the same id across updates); null once it is gone.")
    async def draft(self, info: Info) -> Message | None:
        row = await info.context.loaders.messages.load(self.message_id)
        return None if row is None else Message.of(row)


@strawberry.type
class CreateDraftPayload(DraftPayload):
    pass


@strawberry.type
class UpdateDraftPayload(DraftPayload):
    pass


@strawberry.type
class DeleteDraftPayload(DraftPayload):
    pass


@strawberry.type
class SendDraftPayload:
    """The outbox entry the draft became, and the expunge of the draft from Drafts."""

    outbox_pk: strawberry.Private[int]
    action_id: strawberry.Private[int]

    @described("The outbox entry's id.")
    def outbox_id(self) -> strawberry.ID:
        return strawberry.ID(to_global("OutboxEntry", self.outbox_pk))

    @described("The outbox entry's state now: queued, sending, sent, failed, uncertain or cancelled.")
    async def state(self, info: Info) -> str:
        found = await info.context.db.scalar(
            select(Outbox.state).where(Outbox.id == self.outbox_pk), shard=shard_of(self.outbox_pk)
        )
        return str(found)

    @described("The expunge of the draft from Drafts.")
    async def action(self, info: Info) -> Action:
        return Action.of(existing(await info.context.loaders.actions.load(self.action_id)))


# -- input -> Draft ------------------------------------------------------------------------------------------


def _mailboxes(field: str, values: Sequence[AddressInput] | None) -> tuple[Mailbox, ...] | None:
    if values is None:
        return None
    if len(values) > MAX_ADDRESSES:
        raise BadUserInput(f"{field}: at most {MAX_ADDRESSES} addresses")
    for n, v in enumerate(values):
        check_address(f"{field}[{n}]", v)
    return tuple(Mailbox(v.address, v.name or "") for v in values)


def _changes(input: CreateDraftInput | UpdateDraftInput) -> dict[str, Any]:
    """The Draft fields the input gives (None: not given)."""
    found: dict[str, Any] = {
        "to": _mailboxes("to", input.to),
        "cc": _mailboxes("cc", input.cc),
        "bcc": _mailboxes("bcc", input.bcc),
        "subject": None if input.subject is None else check_text("subject", input.subject, MAX_SUBJECT),
        "text": None if input.text is None else check_text("text", input.text, MAX_BODY),
        "html": None if input.html is None else check_text("html", input.html, MAX_BODY),
    }
    return {k: v for k, v in found.items() if v is not None}


async def _message_pk(info: Info, gid: str) -> tuple[int, int]:
    """(account, message) of a Message id the token grants: NOT_FOUND otherwise, BAD_USER_INPUT for a non-Message."""
    pk_of(gid, "Message")
    account_id, [message_id] = await messages_of(info, [gid])
    return account_id, message_id


async def _parent(info: Info, gid: str | None, account_id: int) -> Row[Any] | None:
    return None if gid is None else await message_in(info, gid, account_id, "replyTo")


def _reply(parent: Row[Any], draft: Draft, subject_given: bool) -> Draft:
    in_reply_to, references = reply_headers(parent.message_id_header, parent.references.split())
    if not in_reply_to:
        raise BadUserInput("replyTo: the message has no Message-ID to answer")
    subject = draft.subject if subject_given else reply_subject(parent.subject)
    return replace(draft, in_reply_to=in_reply_to, references=references, subject=subject)


async def _account(info: Info, account_id: int) -> Row[Any]:
    rows = await info.context.db.rows(
        select(Account.id, Account.address, Account.smtp_host).where(Account.id == account_id),
        shard=shard_of(account_id),
    )
    return existing(rows[0] if rows else None)


def _composing(work: Callable[[UnitOfWork], Awaitable[Result]]) -> Work:
    """What mime.compose refuses is the client's to fix: BAD_USER_INPUT naming the field (nothing is written)."""

    async def run(uow: UnitOfWork) -> Result:
        try:
            return await work(uow)
        except ComposeError as exc:
            raise Refused(str(exc)) from None

    return run


async def _draft_of(uow: UnitOfWork, message_id: int, verb: str, without: frozenset[int] = frozenset()) -> Draft:
    """The draft as stored (but the attachments named in `without`), locked against a concurrent edit;
    BAD_USER_INPUT for a message that is not one, or an attachment id that is not one of the draft's."""
    s = uow.session
    await s.scalar(select(MessageRow.id).where(MessageRow.id == message_id).with_for_update())
    placed = await s.scalar(select(MessagePlace.id).where(MessagePlace.message_id == message_id).limit(1))
    if placed is None:
        raise Refused("the draft is being deleted")
    if not await drafts.is_draft(s, uow.account_id, message_id):
        raise Refused(f"the message is not a draft (\\Draft): only drafts can be {verb}")
    if without:
        own = set(await s.scalars(select(AttachmentRow.id).where(AttachmentRow.message_id == message_id)))
        if not without <= own:
            raise Refused("removeAttachments: not an attachment of this draft (read the draft's attachments again)")
    found = await drafts.stored(s, uow.account_id, message_id, without)
    if found is None:
        raise Refused("the draft is gone")
    return found


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@strawberry.type
class DraftMutations:
    @described("Write a draft: it shows at once in the account's Drafts folder and is saved on the server next.")
    async def create_draft(self, info: Info, input: CreateDraftInput) -> CreateDraftPayload:
        async def plan() -> tuple[int, Work]:
            account_id = info.context.account_pk(input.account_id)
            changes = _changes(input)
            parent = await _parent(info, input.reply_to, account_id)
            folder = await folder_with_role(info, account_id, drafts.ROLE)
            account = await _account(info, account_id)
            draft = replace(Draft(sender=Mailbox(account.address)), **changes)
            if parent is not None:
                draft = _reply(parent, draft, "subject" in changes)
            upload_ids = await uploads_of(info, input.attachments or (), account_id)

            async def work(uow: UnitOfWork) -> Result:
                attached = await attachments_of(uow, upload_ids)
                saved = await drafts.create(uow, folder, replace(draft, attachments=tuple(attached)))
                return {"action": saved.action_id, "draft": saved.message_id}

            return account_id, _composing(work)

        done = await write(info, "createDraft", input.idempotency_key, plan)
        return CreateDraftPayload(action_id=done["action"], message_id=done["draft"])

    @described(
        "Change a draft: the fields given replace the draft's, the others stay. The draft keeps its id; the"
        " server's copy is replaced."
    )
    async def update_draft(self, info: Info, input: UpdateDraftInput) -> UpdateDraftPayload:
        async def plan() -> tuple[int, Work]:
            account_id, message_id = await _message_pk(info, input.id)
            changes = _changes(input)
            parent = await _parent(info, input.reply_to, account_id)
            account = await _account(info, account_id)

            added = await uploads_of(info, input.add_attachments or (), account_id, "addAttachments")
            removed = frozenset(pk_of(gid, "Attachment") for gid in input.remove_attachments or ())

            async def work(uow: UnitOfWork) -> Result:
                current = await _draft_of(uow, message_id, "edited", removed)
                if not current.sender.address:
                    current = replace(current, sender=Mailbox(account.address))
                attached = (*current.attachments, *await attachments_of(uow, added))
                draft = replace(current, **changes, attachments=attached)
                if parent is not None:
                    draft = _reply(parent, draft, True)
                return {"action": await drafts.update_draft(uow, message_id, draft), "draft": message_id}

            return account_id, _composing(work)

        done = await write(info, "updateDraft", input.idempotency_key, plan)
        return UpdateDraftPayload(action_id=done["action"], message_id=done["draft"])

    @described("Delete a draft for good (UID EXPUNGE). A message that is not a draft is refused.")
    async def delete_draft(self, info: Info, input: DeleteDraftInput) -> DeleteDraftPayload:
        async def plan() -> tuple[int, Work]:
            account_id, message_id = await _message_pk(info, input.id)

            async def work(uow: UnitOfWork) -> Result:
                await _draft_of(uow, message_id, "deleted with deleteDraft (deleteMessages deletes any message)")
                [action] = await actions.expunge(uow, [message_id])
                return {"action": action, "draft": message_id}

            return account_id, work

        done = await write(info, "deleteDraft", input.idempotency_key, plan)
        return DeleteDraftPayload(action_id=done["action"], message_id=done["draft"])

    @described(
        "Send a draft (now, or at sendAt): its content goes to the outbox and the draft leaves Drafts. Needs the"
        " account's SMTP settings."
    )
    async def send_draft(self, info: Info, input: SendDraftInput) -> SendDraftPayload:
        async def plan() -> tuple[int, Work]:
            account_id, message_id = await _message_pk(info, input.id)
            account = await _account(info, account_id)
            if account.smtp_host is None:
                raise BadUserInput("the account has no SMTP settings (inboxql account add ... --smtp-url)")
            send_at = _utc(input.send_at)

            async def work(uow: UnitOfWork) -> Result:
                current = await _draft_of(uow, message_id, "sent")
                # A new Message-ID and Date: the message sent is not the draft's copy that leaves Drafts.
                draft = replace(current, sender=Mailbox(account.address, current.sender.name), message_id=None)
                answered = None
                if draft.in_reply_to:
                    answered = await uow.session.scalar(
                        select(MessageRow.id)
                        .where(
                            MessageRow.account_id == account_id,
                            MessageRow.message_id_header == draft.in_reply_to.strip("<>"),
                            MessageRow.id != message_id,
                        )
                        .limit(1)
                    )
                entry = await outbox.queue_draft(uow, draft, send_at=send_at, reply_to_message_id=answered)
                [action] = await actions.expunge(uow, [message_id])
                return {"outbox": entry.id, "action": action}

            return account_id, _composing(work)

        done = await write(info, "sendDraft", input.idempotency_key, plan)
        return SendDraftPayload(outbox_pk=done["outbox"], action_id=done["action"])
