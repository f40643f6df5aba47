"""Message mutations: flags and labels, moves (to a folder, to the trash and back), permanent deletion.

Each changes the mirror at once (optimistic, with its change-log entries) and queues its actions in the same
transaction (schema.actions): a flag or label change one action for all the messages it changed (on Gmail, a label
change one per message), a move or deletion one per message; the sync process performs them on the server in
order. The payload names the actions (poll their `state`) and the messages as they are now.

`ids` are global ids of messages or threads (a thread stands for all its messages), at most 1000, all of one
account. An id the token does not grant reads like a missing one: the whole mutation is NOT_FOUND and nothing
changes. A label is 1 to 128 characters without control characters or a leading backslash; on most servers it
is an IMAP keyword (RFC 3501 §2.3.2), an atom, so also without spaces, parentheses, quotes, backslashes,
wildcards, `]`, `{` or non-ASCII (schema.actions.check_keyword); on Gmail it is a label, any name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import strawberry
from sqlalchemy import select

from gateway.errors import BadUserInput, not_found
from gateway.graphql.context import Info
from gateway.graphql.mutations.writes import Result, Work, folder_of, folder_with_role, messages_of, write
from gateway.graphql.types.actions import (
    DeleteMessagesPayload,
    MoveMessagesPayload,
    RestoreMessagesPayload,
    TrashMessagesPayload,
    UpdateMessagesPayload,
)
from gateway.graphql.types.fields import described
from schema import actions
from schema.actions import ActionKind, ActionState
from schema.models import Action, Folder, MessagePlace
from schema.unit import UnitOfWork

MAX_LABEL = 128
SEEN = "\\Seen"
FLAGGED = "\\Flagged"


def check_label(name: str) -> None:
    """1 to 128 characters, no control character, not a system flag (else BAD_USER_INPUT). What else a label
    may hold depends on the account's server: schema.actions.set_flags refuses the rest."""
    if not 0 < len(name) <= MAX_LABEL:
        raise BadUserInput(f"a label is 1 to {MAX_LABEL} characters")
    bad = [c for c in name if c < " " or c == "\x7f"]
    if bad:
        raise BadUserInput(f"a label may not contain {bad[0]!r}")
    if name.startswith("\\"):
        raise BadUserInput("a label may not start with a backslash (system flags are set by unread and starred)")


@strawberry.input
class UpdateMessagesInput:
    ids: list[strawberry.ID] = strawberry.field(description="Messages or threads (a thread: all its messages).")
    unread: bool | None = strawberry.field(default=None, description="false adds \\Seen, true removes it.")
    starred: bool | None = strawberry.field(default=None, description="true adds \\Flagged, false removes it.")
    add_labels: list[str] | None = strawberry.field(default=None, description="IMAP keywords to add.")
    remove_labels: list[str] | None = strawberry.field(default=None, description="IMAP keywords to remove.")
    idempotency_key: str | None = strawberry.field(
        default=None, description="Up to 128 ASCII characters: a retry with the same key gets the first answer."
    )


@strawberry.input
class MoveMessagesInput:
    ids: list[strawberry.ID] = strawberry.field(description="Messages or threads (a thread: all its messages).")
    folder_id: strawberry.ID | None = strawberry.field(default=None, description="The target folder, or:")
    role: str | None = strawberry.field(default=None, description="The target's role: inbox, archive, trash, ...")
    idempotency_key: str | None = strawberry.field(
        default=None, description="Up to 128 ASCII characters: a retry with the same key gets the first answer."
    )


@strawberry.input
class MessagesInput:
    ids: list[strawberry.ID] = strawberry.field(description="Messages or threads (a thread: all its messages).")
    idempotency_key: str | None = strawberry.field(
        default=None, description="Up to 128 ASCII characters: a retry with the same key gets the first answer."
    )


@strawberry.input
class TrashMessagesInput(MessagesInput):
    pass


@strawberry.input
class RestoreMessagesInput(MessagesInput):
    pass


@strawberry.input
class DeleteMessagesInput(MessagesInput):
    pass


def _flag_changes(input: UpdateMessagesInput) -> tuple[list[str], list[str]]:
    add: list[str] = []
    remove: list[str] = []
    if input.unread is not None:
        (remove if input.unread else add).append(SEEN)
    if input.starred is not None:
        (add if input.starred else remove).append(FLAGGED)
    for name in input.add_labels or ():
        check_label(name)
        add.append(name)
    for name in input.remove_labels or ():
        check_label(name)
        remove.append(name)
    if not add and not remove:
        raise BadUserInput("nothing to change: pass unread, starred, addLabels or removeLabels")
    return add, remove


def _result(queued: Sequence[int], message_ids: Sequence[int]) -> Result:
    return {"actions": list(queued), "messages": list(message_ids)}


def _moving(message_ids: list[int], folder_id: int) -> Work:
    async def work(uow: UnitOfWork) -> Result:
        return _result(await actions.move(uow, message_ids, folder_id), message_ids)

    return work


async def _restore_targets(uow: UnitOfWork, message_ids: Sequence[int], trash: int) -> dict[int, list[int]]:
    """Where each message now in the trash goes back to: the folder the latest move into the trash (done or
    pending) took it from, while that folder exists; else INBOX."""
    s = uow.session
    in_trash = set(
        await s.scalars(
            select(MessagePlace.message_id).where(
                MessagePlace.message_id.in_(list(message_ids)), MessagePlace.folder_id == trash
            )
        )
    )
    origins: dict[int, int] = {}
    moves = await s.execute(
        select(Action.message_id, Action.payload)
        .where(
            Action.account_id == uow.account_id,
            Action.kind == ActionKind.MOVE.value,
            Action.folder_id == trash,
            Action.state.in_([ActionState.DONE.value, ActionState.PENDING.value]),
            Action.message_id.in_(sorted(in_trash)),
        )
        .order_by(Action.id.desc())
    )
    for mid, payload in moves:
        if mid in origins or mid is None:
            continue
        source = payload.get("move") or next(iter(payload.get("expunge") or ()), None)
        if source is not None:
            origins[mid] = int(source["folder_id"])
    alive = set(
        await s.scalars(
            select(Folder.id).where(
                Folder.account_id == uow.account_id,
                Folder.id.in_(sorted(set(origins.values()))),
                Folder.sync_state != "deleting",
                Folder.id != trash,
            )
        )
    )
    inbox = await s.scalar(
        select(Folder.id)
        .where(Folder.account_id == uow.account_id, Folder.role == "inbox", Folder.sync_state != "deleting")
        .order_by(Folder.id)
        .limit(1)
    )
    targets: dict[int, list[int]] = defaultdict(list)
    for mid in message_ids:
        if mid not in in_trash:
            continue  # not in the trash: nothing to restore
        target = origins.get(mid) if origins.get(mid) in alive else inbox
        if target is None:
            raise not_found("Folder")
        targets[target].append(mid)
    return targets


@strawberry.type
class MessageMutations:
    @described("Mark messages (or whole threads) read or unread, starred or not, and add or remove labels.")
    async def update_messages(self, info: Info, input: UpdateMessagesInput) -> UpdateMessagesPayload:
        async def plan() -> tuple[int, Work]:
            add, remove = _flag_changes(input)
            account_id, message_ids = await messages_of(info, input.ids)

            async def work(uow: UnitOfWork) -> Result:
                return _result(await actions.set_flags(uow, message_ids, add, remove), message_ids)

            return account_id, work

        done = await write(info, "updateMessages", input.idempotency_key, plan)
        return UpdateMessagesPayload(action_ids=done["actions"], message_ids=done["messages"])

    @described("Move messages (or threads) into a folder, named by id or by role (exactly one of the two).")
    async def move_messages(self, info: Info, input: MoveMessagesInput) -> MoveMessagesPayload:
        async def plan() -> tuple[int, Work]:
            if (input.folder_id is None) == (input.role is None):
                raise BadUserInput("pass exactly one of folderId and role")
            account_id, message_ids = await messages_of(info, input.ids)
            if input.folder_id is not None:
                target = int((await folder_of(info, input.folder_id, account_id)).id)
            else:
                target = await folder_with_role(info, account_id, str(input.role))
            return account_id, _moving(message_ids, target)

        done = await write(info, "moveMessages", input.idempotency_key, plan)
        return MoveMessagesPayload(action_ids=done["actions"], message_ids=done["messages"])

    @described("Move messages (or threads) to the trash (NOT_FOUND when the account has no trash folder).")
    async def trash_messages(self, info: Info, input: TrashMessagesInput) -> TrashMessagesPayload:
        async def plan() -> tuple[int, Work]:
            account_id, message_ids = await messages_of(info, input.ids)
            return account_id, _moving(message_ids, await folder_with_role(info, account_id, "trash"))

        done = await write(info, "trashMessages", input.idempotency_key, plan)
        return TrashMessagesPayload(action_ids=done["actions"], message_ids=done["messages"])

    @described(
        "Move messages out of the trash back to where they were trashed from (else to INBOX); messages that are"
        " not in the trash are left alone."
    )
    async def restore_messages(self, info: Info, input: RestoreMessagesInput) -> RestoreMessagesPayload:
        async def plan() -> tuple[int, Work]:
            account_id, message_ids = await messages_of(info, input.ids)
            trash = await folder_with_role(info, account_id, "trash")

            async def work(uow: UnitOfWork) -> Result:
                queued: list[int] = []
                for target, mids in (await _restore_targets(uow, message_ids, trash)).items():
                    queued += await actions.move(uow, mids, target)
                return _result(sorted(queued), message_ids)

            return account_id, work

        done = await write(info, "restoreMessages", input.idempotency_key, plan)
        return RestoreMessagesPayload(action_ids=done["actions"], message_ids=done["messages"])

    @described("Delete messages (or threads) for good, from every folder (not a move to the trash).")
    async def delete_messages(self, info: Info, input: DeleteMessagesInput) -> DeleteMessagesPayload:
        async def plan() -> tuple[int, Work]:
            account_id, message_ids = await messages_of(info, input.ids)

            async def work(uow: UnitOfWork) -> Result:
                return _result(await actions.expunge(uow, message_ids), message_ids)

            return account_id, work

        done = await write(info, "deleteMessages", input.idempotency_key, plan)
        return DeleteMessagesPayload(action_ids=done["actions"], message_ids=done["messages"])
