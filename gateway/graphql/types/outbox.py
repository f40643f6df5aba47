"""The outbox (schema.outbox) as clients see it: OutboxEntry, its states, and the payloads of sendMessage and
cancelSend.

Like the other payloads, these hold only ids (what an idempotency key stores) and read the entry as it is when
they are resolved, so a retry with the same key shows the entry's current state.

`state` here is an OutboxState and `message` may be null, while Action.state is an ActionState and
Attachment.message is never null: a `node` selection that asks both types for them in one selection set must
give one of the two an alias (GraphQL's same-response-shape rule).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import strawberry
from sqlalchemy.engine import Row

from gateway.graphql.context import Info
from gateway.graphql.pages import Window
from gateway.graphql.types.accounts import Account
from gateway.graphql.types.fields import described, existing, utc
from gateway.graphql.types.messages import Message
from gateway.graphql.types.relay import Connection, Node, connection
from gateway.ids import to_global
from schema.outbox import OutboxState

strawberry.enum(
    OutboxState,
    name="OutboxState",
    description="QUEUED: waiting for sendAt (cancelSend can still take it back), or for a retry after a temporary "
    "refusal (see `error`). SENDING: the SMTP transaction is under way. SENT: the server accepted it "
    "(`smtpResponse`). FAILED: the server refused it for good (`error`); it left the Sent folder. UNCERTAIN: the "
    "connection broke after the message was handed over, or the sending process stopped meanwhile: it may have "
    "been delivered, so it is never sent again on its own (check with a recipient, then send again if need be). "
    "CANCELLED: taken back with cancelSend before it was sent.",
)


@strawberry.type(description="A message to send, and what became of it (poll it with `node(id:)` or `outbox`).")
class OutboxEntry(Node):
    state: OutboxState
    send_at: datetime = strawberry.field(description="When it goes out (the undo window's end when not given).")
    sent_at: datetime | None = strawberry.field(description="When the server accepted it.")
    created_at: datetime
    error: str | None = strawberry.field(
        description="FAILED or UNCERTAIN: why. QUEUED after a temporary refusal: the last one (it is retried)."
    )
    smtp_response: str | None = strawberry.field(
        description="The server's reply to the message, e.g. `250 2.0.0 Ok: queued as 4XyZ`, with refused recipients."
    )
    recipients: list[str] = strawberry.field(
        description="The envelope's recipients (To, Cc and Bcc, each once): who the server is asked to deliver to."
    )
    attempts: int
    message_id_header: str = strawberry.field(description="The Message-ID it is sent with (without brackets).")
    row: strawberry.Private[Row[Any]]

    @classmethod
    def of(cls, row: Row[Any]) -> OutboxEntry:
        return cls(
            id=strawberry.ID(to_global("OutboxEntry", row.id)),
            state=OutboxState(row.state),
            send_at=utc(row.send_at) or datetime.now(UTC),
            sent_at=utc(row.sent_at),
            created_at=utc(row.created_at) or datetime.now(UTC),
            error=row.error,
            smtp_response=row.smtp_response,
            recipients=list(row.recipients or ()),
            attempts=row.attempts,
            message_id_header=row.message_id_header,
            row=row,
        )

    @described(
        "The message as the mirror shows it in the Sent folder, from the moment it was queued (with its Bcc); "
        "null once a cancelled or failed send took it out, or when the account has no Sent folder."
    )
    async def message(self, info: Info) -> Message | None:
        if self.row.mirror_message_id is None:
            return None
        row = await info.context.loaders.messages.load(self.row.mirror_message_id)
        return None if row is None else Message.of(row)

    @described("The message it replies to (it gets \\Answered once this is sent); null when not a reply.")
    async def replied_message(self, info: Info) -> Message | None:
        if self.row.reply_to_message_id is None:
            return None
        row = await info.context.loaders.messages.load(self.row.reply_to_message_id)
        return None if row is None else Message.of(row)

    @strawberry.field
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.accounts.load(self.row.account_id)
        return Account.of(existing(row))


@strawberry.type(description="A page of an account's outbox, newest first.")
class OutboxConnection(Connection[OutboxEntry]):
    pass


def outbox_connection(window: Window, count: Callable[[], Awaitable[int]]) -> OutboxConnection:
    found = connection(window, OutboxEntry.of, count)
    return OutboxConnection(edges=found.edges, page_info=found.page_info, count=found.count)


async def entry_of(info: Info, entry_id: int) -> OutboxEntry:
    return OutboxEntry.of(existing(await info.context.loaders.outbox.load(entry_id)))


@strawberry.type(description="The entry sendMessage queued, and the message as the mirror shows it at once.")
class SendMessagePayload:
    outbox_id: strawberry.Private[int]
    message_id: strawberry.Private[int | None]

    @described("The outbox entry's id (also `outbox { id }`).")
    def id(self) -> strawberry.ID:
        return strawberry.ID(to_global("OutboxEntry", self.outbox_id))

    @described("The outbox entry's state now (also `outbox { state }`).")
    async def state(self, info: Info) -> OutboxState:
        return (await entry_of(info, self.outbox_id)).state

    @strawberry.field
    async def outbox(self, info: Info) -> OutboxEntry:
        return await entry_of(info, self.outbox_id)

    @described(
        "The message in the account's Sent folder of the mirror, in its thread (a reply: the original's), at once "
        "and before it is sent; null when the account has no Sent folder, or once a cancel took it out."
    )
    async def message(self, info: Info) -> Message | None:
        if self.message_id is None:
            return None
        row = await info.context.loaders.messages.load(self.message_id)
        return None if row is None else Message.of(row)


@strawberry.type(description="The entry cancelSend took back (CANCELLED), as it is now.")
class CancelSendPayload:
    outbox_id: strawberry.Private[int]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(to_global("OutboxEntry", self.outbox_id))

    @strawberry.field
    async def state(self, info: Info) -> OutboxState:
        return (await entry_of(info, self.outbox_id)).state

    @strawberry.field
    async def outbox(self, info: Info) -> OutboxEntry:
        return await entry_of(info, self.outbox_id)
