"""The delta feed: an account's changes after a cursor, as the `changes` query and subscription return them.

A change cursor is opaque to clients: base64url("changes:ACCOUNT:SEQ"). It names its account, so a cursor of
one account passed for another is BAD_USER_INPUT rather than a silent jump. A cursor older than what the log
keeps is CURSOR_EXPIRED: the client re-reads what it caches and starts again from `changesCursor`.
"""

from __future__ import annotations

import binascii
from collections.abc import Sequence
from enum import Enum
from typing import Any, cast

import strawberry
from sqlalchemy.ext.asyncio import AsyncSession
from strawberry.scalars import JSON

from gateway.context import Context
from gateway.errors import BadUserInput, CursorExpired
from gateway.ids import _b64decode, _b64encode, to_global
from gateway.loaders import Loaders
from gateway.nodes import NODE_CLASSES, Node, described
from schema import changelog
from schema.changelog import ObjectType

Info = strawberry.Info[Context, None]
MAX_CHANGES = 500
DEFAULT_CHANGES = 100


@strawberry.enum(description="What happened to the object.")
class ChangeOperation(Enum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@strawberry.enum(description="The kinds of objects the change log tracks.")
class ChangeObjectType(Enum):
    ACCOUNT = "account"
    FOLDER = "folder"
    LABEL = "label"
    THREAD = "thread"
    MESSAGE = "message"


_TYPE_NAMES = {
    ObjectType.ACCOUNT: "Account",
    ObjectType.FOLDER: "Folder",
    ObjectType.LABEL: "Label",
    ObjectType.THREAD: "Thread",
    ObjectType.MESSAGE: "Message",
}


def encode_cursor(account_id: int, seq: int) -> str:
    return _b64encode(f"changes:{account_id}:{seq}".encode())


def decode_cursor(cursor: str, account_id: int) -> int:
    """The seq of a change cursor of that account; BadUserInput when it is not one."""
    try:
        kind, account, seq = _b64decode(cursor).decode("ascii").split(":")
        found_account, found_seq = int(account), int(seq)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadUserInput("not a valid change cursor") from None
    if kind != "changes" or found_seq < 0 or seq != str(found_seq):
        raise BadUserInput("not a valid change cursor")
    if found_account != account_id:
        raise BadUserInput("the change cursor belongs to another account")
    return found_seq


def expired() -> CursorExpired:
    return CursorExpired("the change cursor is older than the change log keeps: re-read and start from changesCursor")


@strawberry.type(description="One entry of an account's change log.")
class Change:
    cursor: str = strawberry.field(description="Resume after this change by passing it as `after`.")
    operation: ChangeOperation
    object_type: ChangeObjectType
    object_id: strawberry.ID = strawberry.field(description="The global id of the object that changed.")
    state: JSON | None = strawberry.field(
        description="The object's logged state right after this change (null for a delete)."
    )
    seq: strawberry.Private[int]
    kind: strawberry.Private[ObjectType]
    pk: strawberry.Private[int]
    data: strawberry.Private[dict[str, Any] | None]
    loaders: strawberry.Private[Loaders]
    # Its renders, shared by every subscriber handed this event (gateway.render).
    renders: strawberry.Private[dict[Any, Any]]

    @classmethod
    def of(cls, account_id: int, entry: changelog.Change, loaders: Loaders) -> Change:
        return cls(
            cursor=encode_cursor(account_id, entry.seq),
            operation=ChangeOperation(entry.op.value),
            object_type=ChangeObjectType(entry.object_type.value),
            object_id=strawberry.ID(to_global(_TYPE_NAMES[entry.object_type], entry.object_id)),
            state=cast("JSON | None", entry.data),
            seq=entry.seq,
            kind=entry.object_type,
            pk=entry.object_id,
            data=entry.data,
            loaders=loaders,
            renders={},
        )

    @described("The object as it is NOW (not as it was at this change); null once deleted.")
    async def object(self) -> Node | None:
        if self.operation is ChangeOperation.DELETE:
            return None
        loader: Any = getattr(self.loaders, _TYPE_NAMES[self.kind].lower() + "s")
        row = await loader.load(self.pk)
        return None if row is None else NODE_CLASSES[_TYPE_NAMES[self.kind]](row)


@strawberry.type(description="A page of changes, oldest first.")
class ChangePage:
    changes: list[Change]
    cursor: str = strawberry.field(description="The newest cursor of this page (the one given when it is empty).")
    has_more: bool = strawberry.field(description="More changes follow: ask again with `after: cursor`.")


def object_types(types: Sequence[ChangeObjectType] | None) -> list[ObjectType] | None:
    return [ObjectType(t.value) for t in types] if types else None


async def read_page(
    info: Info, account_id: int, after: str | None, first: int | None, types: Sequence[ChangeObjectType] | None
) -> ChangePage:
    limit = DEFAULT_CHANGES if first is None else first
    if not 0 < limit <= MAX_CHANGES:
        raise BadUserInput(f"first must be between 1 and {MAX_CHANGES}")
    seq = decode_cursor(after, account_id) if after is not None else 0
    async with AsyncSession(info.context.db.engine) as session:
        newest = await changelog.newest_seq(session, account_id)
        entries = await changelog.read(session, account_id, seq, limit + 1, object_types(types))
        # Checked after the read: an expiry racing with it makes the check fail, never the page silently short.
        if after is not None and not await changelog.cursor_valid(session, account_id, seq):
            raise expired()
    more = len(entries) > limit
    entries = entries[:limit]
    loaders = info.context.loaders
    changes = [Change.of(account_id, e, loaders) for e in entries]
    # Without more, everything up to `newest` was scanned, also the entries a `types` filter left out.
    last = changes[-1].seq if more else max([seq, newest, *(c.seq for c in changes)])
    return ChangePage(changes=changes, cursor=encode_cursor(account_id, last), has_more=more)


async def current_cursor(info: Info, account_id: int) -> str:
    async with AsyncSession(info.context.db.engine) as session:
        return encode_cursor(account_id, await changelog.newest_seq(session, account_id))
