"""Actions (the write-back queue, schema.actions) as clients see them, and the payloads of the mutations that
queue them.

A payload holds only ids (what the mutation queued and touched, also what an idempotency key stores); its
fields read the objects as they are when it is resolved, so a retry with the same key shows the actions'
current states.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import strawberry
from sqlalchemy.engine import Row

from gateway.errors import BadUserInput
from gateway.graphql.context import Info
from gateway.graphql.pages import DEFAULT_PAGE
from gateway.graphql.types.accounts import Account
from gateway.graphql.types.fields import described, existing, present, utc
from gateway.graphql.types.folders import Folder
from gateway.graphql.types.messages import Message
from gateway.graphql.types.relay import Node
from gateway.ids import to_global
from schema.actions import MAX_IDS, ActionKind, ActionState

strawberry.enum(
    ActionState,
    name="ActionState",
    description="PENDING: applied to the mirror, not yet performed on the server (or waiting out a retry). "
    "DONE: the server did it. FAILED: the server refused; the mirror's change was undone (see `error`).",
)


@strawberry.type(description="A change a mutation queued for the mail server; poll it with `node(id:)` or `actions`.")
class Action(Node):
    # A string like Label.kind: an enum here would clash with it in `... on Label { kind } ... on Action { kind }`.
    kind: str = strawberry.field(
        description="What it asks of the server: " + ", ".join(k.value for k in ActionKind) + "."
    )
    state: ActionState
    error: str | None = strawberry.field(
        description="FAILED: the server's reason. PENDING: the last transient failure (it is retried), if any."
    )
    attempts: int
    created_at: datetime
    finished_at: datetime | None
    row: strawberry.Private[Row[Any]]

    @classmethod
    def of(cls, row: Row[Any]) -> Action:
        return cls(
            id=strawberry.ID(to_global("Action", row.id)),
            kind=row.kind,
            state=ActionState(row.state),
            error=row.error,
            attempts=row.attempts,
            created_at=utc(row.created_at) or datetime.now(UTC),
            finished_at=utc(row.finished_at),
            row=row,
        )

    # Named apart from the `message: Message!` and `folder: Folder!` fields of other nodes, whose selections
    # next to these in one `node { ... on X }` would otherwise conflict (GraphQL's same-response-shape rule).
    @described(
        "The message the action is about (null for folder actions, for a flag change of several messages (see"
        " `affectedMessages`), and once the message is gone)."
    )
    async def affected_message(self, info: Info) -> Message | None:
        if self.row.message_id is None:
            return None
        row = await info.context.loaders.messages.load(self.row.message_id)
        return None if row is None else Message.of(row)

    @described(
        "The messages it is about, the first `first` (20 by default, at most 1,000, a mutation's most) by id:"
        " its message, or the messages of a flag change of several; empty for folder actions (messages gone"
        " since are left out). Costed at `first` messages."
    )
    async def affected_messages(self, info: Info, first: int = DEFAULT_PAGE) -> list[Message]:
        if not 1 <= first <= MAX_IDS:
            raise BadUserInput(f"first must be between 1 and {MAX_IDS}")
        if self.row.message_id is not None:
            ids = [self.row.message_id]
        else:
            ids = (await info.context.loaders.action_message_ids.load(self.row.id))[:first]
        return [Message.of(r) for r in await present(info.context.loaders.messages.load_many(ids))]

    @described("The folder it is about: a move's target, the folder created, renamed or deleted (null once gone).")
    async def affected_folder(self, info: Info) -> Folder | None:
        if self.row.folder_id is None:
            return None
        row = await info.context.loaders.folders.load(self.row.folder_id)
        return None if row is None else Folder.of(row)

    @strawberry.field
    async def account(self, info: Info) -> Account:
        row = await info.context.loaders.accounts.load(self.row.account_id)
        return Account.of(existing(row))


async def actions_of(info: Info, ids: list[int]) -> list[Action]:
    return [Action.of(r) for r in await present(info.context.loaders.actions.load_many(ids))]


@strawberry.type
class MessagesPayload:
    """What a message mutation queued (a flag change: one action for all the messages it changed; a move or
    deletion: one per message; none for a message that already was as asked) and the messages as they are now (a
    deleted message is left out once the server expunged it)."""

    action_ids: strawberry.Private[list[int]]
    message_ids: strawberry.Private[list[int]]

    @described(
        "The actions queued, in the order they run: one for a flag or label change of any number of messages, one"
        " per message moved or deleted; none when nothing needed to change."
    )
    async def actions(self, info: Info) -> list[Action]:
        return await actions_of(info, self.action_ids)

    @described("The messages asked for (threads expanded), as the mirror shows them now.")
    async def messages(self, info: Info) -> list[Message]:
        return [Message.of(r) for r in await present(info.context.loaders.messages.load_many(self.message_ids))]


@strawberry.type
class UpdateMessagesPayload(MessagesPayload):
    pass


@strawberry.type
class MoveMessagesPayload(MessagesPayload):
    pass


@strawberry.type
class TrashMessagesPayload(MessagesPayload):
    pass


@strawberry.type
class RestoreMessagesPayload(MessagesPayload):
    pass


@strawberry.type
class DeleteMessagesPayload(MessagesPayload):
    pass


@strawberry.type
class FolderPayload:
    """The action a folder mutation queued, and the folder as it is now."""

    action_id: strawberry.Private[int]
    folder_id: strawberry.Private[int]

    @strawberry.field
    async def action(self, info: Info) -> Action:
        return Action.of(existing(await info.context.loaders.actions.load(self.action_id)))

    @described("The folder as the mirror shows it now; null once it is gone (deleted, or its creation failed).")
    async def folder(self, info: Info) -> Folder | None:
        row = await info.context.loaders.folders.load(self.folder_id)
        return None if row is None else Folder.of(row)


@strawberry.type
class CreateFolderPayload(FolderPayload):
    pass


@strawberry.type
class RenameFolderPayload(FolderPayload):
    pass


@strawberry.type
class DeleteFolderPayload(FolderPayload):
    pass
