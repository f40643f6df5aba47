"""Sending: sendMessage queues a message in the account's outbox (schema.outbox), cancelSend takes it back.

```
sendMessage(input)
  plan     the account (NOT_FOUND unless the token grants it), replyTo and forward (messages of the token's
           accounts, else NOT_FOUND), attachments (uploads of that account, else NOT_FOUND), then the account's
           SMTP settings (BAD_USER_INPUT without them) and sendAt
  work     one unit of work: the uploads' bytes and the forwarded message read, the draft composed once
           (mime.compose: a bad address or a line break in a header is BAD_USER_INPUT naming the field), the
           entry queued and the message shown at once in the mirror's Sent folder, in its thread; the
           account's executor is rung (it waits until sendAt)
cancelSend(input)  queued -> cancelled, and out of the mirror's Sent folder; BAD_USER_INPUT once it is being sent
```

Undo send: without `sendAt` a message waits GatewayConfig.undo_send_seconds (INBOXQL_GATEWAY_UNDO_SEND_SECONDS,
5 s) before it goes, the time a client has to call cancelSend. A `sendAt` in the past sends at once.

The sender is the account's address. A reply gets In-Reply-To and References from the replied message and,
without a subject of its own, its subject with "Re: " (mime.compose); the replied message gets \\Answered once
the server accepted the reply. A forward attaches the forwarded message whole, as message/rfc822 (its own
attachments and headers travel with it), and without a subject of its own takes "Fwd: " and its subject.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import strawberry
from sqlalchemy import select
from sqlalchemy.engine import Row

from gateway.errors import BadUserInput, not_found
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
from gateway.graphql.mutations.writes import Result, Work, write
from gateway.graphql.types.fields import described
from gateway.graphql.types.outbox import CancelSendPayload, SendMessagePayload
from gateway.ids import pk_of
from mime.compose import Attachment, ComposeError, Draft, Mailbox, reply_headers, reply_subject
from schema import blobs, outbox, uploads
from schema.models import Account, Outbox
from schema.outbox import OutboxState
from schema.shards import shard_of
from schema.unit import UnitOfWork

# RFC 5321 §4.5.3.1.8: a server must take at least 100 recipients; more may be refused.
MAX_RECIPIENTS = 100
# A send time further ahead than this is more likely a mistake (a year typed wrong) than a plan.
MAX_SEND_AHEAD = timedelta(days=366)
NO_SMTP = "this account has no SMTP settings to send with: add them with `inboxql account add ... --smtp-url`"
_FORWARDED = re.compile(r"^\s*(?:fwd?|wg|tr|vs)\s*:", re.I)
_NOT_IN_A_NAME = re.compile(r"[\x00-\x1f\x7f/\\\u2028\u2029\x85]")
_KEY_HELP = "Up to 128 ASCII characters: a retry with the same key gets the first answer (one entry, one send)."


@strawberry.input
class SendMessageInput:
    account_id: strawberry.ID = strawberry.field(description="The account that sends: its address is the From.")
    to: list[AddressInput] | None = None
    cc: list[AddressInput] | None = None
    bcc: list[AddressInput] | None = strawberry.field(
        default=None, description="Delivered to, but named in no header of the copies delivered (only in Sent)."
    )
    subject: str | None = strawberry.field(
        default=None, description='Without one: the replied ("Re: ") or forwarded ("Fwd: ") message\'s subject.'
    )
    text: str | None = strawberry.field(default=None, description="The plain text body.")
    html: str | None = strawberry.field(default=None, description="The HTML body (with text: both, as alternatives).")
    reply_to: strawberry.ID | None = strawberry.field(
        default=None,
        description="A message this replies to: In-Reply-To and References come from it, and it gets \\Answered "
        "once the reply is sent. (Not the Reply-To header.)",
    )
    forward: strawberry.ID | None = strawberry.field(
        default=None, description="A message to forward: attached whole, as message/rfc822."
    )
    attachments: list[strawberry.ID] | None = strawberry.field(
        default=None, description="Ids of uploads (POST /uploads) of the same account, attached in this order."
    )
    send_at: datetime | None = strawberry.field(
        default=None,
        description="When to send (UTC unless it has an offset). Without it: after the undo window, during which "
        "cancelSend takes it back.",
    )
    idempotency_key: str | None = strawberry.field(default=None, description=_KEY_HELP)


@strawberry.input
class CancelSendInput:
    id: strawberry.ID = strawberry.field(description="The outbox entry (sendMessage's `id`).")
    idempotency_key: str | None = strawberry.field(default=None, description=_KEY_HELP)


@dataclass(frozen=True, slots=True)
class _Plan:
    """What sendMessage resolved before anything is written."""

    account_id: int
    address: str
    parent: Row[Any] | None
    forwarded: Row[Any] | None
    upload_ids: list[int]
    send_at: datetime


def _mailboxes(items: Sequence[AddressInput] | None) -> tuple[Mailbox, ...]:
    return tuple(Mailbox(item.address.strip(), item.name or "") for item in items or ())


def _check_input(input: SendMessageInput, body_limit: int) -> None:
    """Sizes and encodability; what makes a header unsafe is mime.compose's to refuse."""
    for field, value, limit in (
        ("subject", input.subject, MAX_SUBJECT),
        ("text", input.text, body_limit),
        ("html", input.html, body_limit),
    ):
        if value is not None:
            check_text(field, value, limit)
    for name, items in (("to", input.to), ("cc", input.cc), ("bcc", input.bcc)):
        for index, item in enumerate(items or ()):
            check_address(f"{name}[{index}]", item)
    count = sum(len(items or ()) for items in (input.to, input.cc, input.bcc))
    if count > MAX_RECIPIENTS:
        raise BadUserInput(f"at most {MAX_RECIPIENTS} recipients (to, cc and bcc together)")


def _send_time(info: Info, asked: datetime | None) -> datetime:
    now = datetime.now(UTC)
    if asked is None:
        return now + timedelta(seconds=max(0.0, info.context.services.config.undo_send_seconds))
    when = asked if asked.tzinfo is not None else asked.replace(tzinfo=UTC)
    if when > now + MAX_SEND_AHEAD:
        raise BadUserInput(f"sendAt: at most {MAX_SEND_AHEAD.days} days ahead")
    return max(when, now)


async def _plan(info: Info, input: SendMessageInput) -> _Plan:
    account_id = info.context.account_pk(input.account_id)
    parent = None if input.reply_to is None else await message_in(info, input.reply_to, account_id, "replyTo")
    forwarded = None if input.forward is None else await message_in(info, input.forward, account_id, "forward")
    upload_ids = await uploads_of(info, input.attachments or (), account_id)
    account = (
        await info.context.db.rows(
            select(Account.address, Account.smtp_host).where(Account.id == account_id), shard=shard_of(account_id)
        )
    )[0]
    if not account.smtp_host:
        raise BadUserInput(NO_SMTP)
    _check_input(input, info.context.services.config.max_upload_bytes)
    return _Plan(account_id, account.address, parent, forwarded, upload_ids, _send_time(info, input.send_at))


def _subject(input: SendMessageInput, plan: _Plan) -> str:
    if input.subject is not None:
        return input.subject
    if plan.parent is not None:
        return reply_subject(plan.parent.subject or "")
    if plan.forwarded is not None:
        subject = " ".join((plan.forwarded.subject or "").split())
        return subject if _FORWARDED.match(subject) else f"Fwd: {subject}".rstrip()
    return ""


def _eml_name(subject: str) -> str:
    name = _NOT_IN_A_NAME.sub(" ", " ".join(subject.split()))[:100].strip()
    return f"{name or 'message'}.eml"


def _input_field(field: str, uploaded: int) -> str:
    """The input field a ComposeError's field (mime.compose's names) came from, as the client spelled it."""
    if field.startswith(("in_reply_to", "references")):
        return "replyTo"  # the replied message's own ids
    if field.startswith("sender"):
        return "accountId"  # the account's address
    found = re.fullmatch(r"attachments\[(\d+)\](.*)", field)
    if found is not None and int(found.group(1)) >= uploaded:
        return "forward"
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), field)


async def _compose_and_queue(uow: UnitOfWork, input: SendMessageInput, plan: _Plan) -> Result:
    attached = await attachments_of(uow, plan.upload_ids)
    if plan.forwarded is not None:
        raw = await blobs.get(uow.session, plan.forwarded.blob_sha256)
        if raw is None:
            raise not_found("Message")
        attached.append(Attachment(_eml_name(plan.forwarded.subject or ""), "message/rfc822", raw))
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    if plan.parent is not None:
        in_reply_to, references = reply_headers(plan.parent.message_id_header, (plan.parent.references or "").split())
    draft = Draft(
        sender=Mailbox(plan.address),
        to=_mailboxes(input.to),
        cc=_mailboxes(input.cc),
        bcc=_mailboxes(input.bcc),
        subject=_subject(input, plan),
        text=input.text,
        html=input.html,
        attachments=tuple(attached),
        in_reply_to=in_reply_to,
        references=references,
    )
    try:
        entry = await outbox.queue_draft(
            uow,
            draft,
            send_at=plan.send_at,
            reply_to_message_id=None if plan.parent is None else plan.parent.id,
        )
    except ComposeError as exc:
        field = _input_field(exc.field, len(plan.upload_ids))
        raise BadUserInput(f"{field}: {exc.problem}", field=field) from None
    keep = plan.send_at.astimezone(UTC).replace(tzinfo=None) + uploads.KEEP
    await uploads.keep_until(uow.session, plan.upload_ids, keep)
    return {"outbox": entry.id, "message": entry.mirror_message_id}


_REFUSALS = {
    OutboxState.SENDING: "it is already being sent",
    OutboxState.SENT: "it was already sent",
    OutboxState.UNCERTAIN: "it was already being sent (its delivery is uncertain)",
    OutboxState.FAILED: "it failed: nothing to cancel",
}


@strawberry.type
class SendingMutations:
    @described(
        "Send a message from the account: queued in its outbox and shown at once in the mirror's Sent folder; "
        "sent at sendAt, or after the undo window (cancelSend takes it back until then). Poll `outbox { state }`."
    )
    async def send_message(self, info: Info, input: SendMessageInput) -> SendMessagePayload:
        async def plan() -> tuple[int, Work]:
            resolved = await _plan(info, input)

            async def work(uow: UnitOfWork) -> Result:
                return await _compose_and_queue(uow, input, resolved)

            return resolved.account_id, work

        done = await write(info, "sendMessage", input.idempotency_key, plan)
        return SendMessagePayload(outbox_id=done["outbox"], message_id=done["message"])

    @described(
        "Undo send: take back a message that is still QUEUED (CANCELLED, and out of the Sent folder); "
        "BAD_USER_INPUT once it is being sent. Cancelling a cancelled entry changes nothing."
    )
    async def cancel_send(self, info: Info, input: CancelSendInput) -> CancelSendPayload:
        async def plan() -> tuple[int, Work]:
            pk = pk_of(input.id, "OutboxEntry")
            owner = await info.context.db.scalar(
                select(Outbox.account_id).where(
                    Outbox.id == pk, Outbox.account_id.in_(sorted(info.context.account_ids))
                ),
                shard=shard_of(pk),
            )
            if owner is None:
                raise not_found("OutboxEntry")

            async def work(uow: UnitOfWork) -> Result:
                entry = await outbox.get(uow.session, [uow.account_id], pk)
                if entry is None:
                    raise not_found("OutboxEntry")
                if entry.state != OutboxState.CANCELLED.value and not await outbox.cancel(uow, entry):
                    await uow.session.refresh(entry)
                    state = OutboxState(entry.state)
                    raise BadUserInput(f"cannot cancel: {_REFUSALS.get(state, state.value)}", state=state.name)
                return {"outbox": pk}

            return int(owner), work

        done = await write(info, "cancelSend", input.idempotency_key, plan)
        return CancelSendPayload(outbox_id=done["outbox"])
