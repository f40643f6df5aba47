"""Change-log entries as the `changes` query and subscriptions return them.

The enums are the change log's own (schema.changelog.ObjectType and Op), exposed under GraphQL names: a new
kind of object in the log is a new enum value here; its Node type and loader are named in TYPES below.

Beside the mirror's objects, the log carries actions (ACTION: `Action`) and outbox entries (OUTBOX:
`OutboxEntry`): a client follows a mutation or a send to its end in the feed.
"""

from __future__ import annotations

from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from gateway.graphql.loaders import Loaders
from gateway.graphql.types.fields import described
from gateway.graphql.types.nodes import NODE_CLASSES
from gateway.graphql.types.relay import Node
from gateway.ids import encode_change_cursor, to_global
from schema import changelog
from schema.changelog import ObjectType, Op

strawberry.enum(Op, name="ChangeOperation", description="What happened to the object.")
strawberry.enum(
    ObjectType,
    name="ChangeObjectType",
    description="The kinds of objects the change log tracks: the mirror's, actions (ACTION), outbox entries (OUTBOX).",
)

# Each kind of object: its Node type's name (global ids, node(id:)) and its loader (gateway.graphql.loaders).
TYPES: dict[ObjectType, tuple[str, str]] = {
    ObjectType.ACCOUNT: ("Account", "accounts"),
    ObjectType.FOLDER: ("Folder", "folders"),
    ObjectType.LABEL: ("Label", "labels"),
    ObjectType.THREAD: ("Thread", "threads"),
    ObjectType.MESSAGE: ("Message", "messages"),
    ObjectType.OUTBOX: ("OutboxEntry", "outbox"),
    ObjectType.ACTION: ("Action", "actions"),
}


@strawberry.type(description="One entry of an account's change log.")
class Change:
    cursor: str = strawberry.field(description="Resume after this change by passing it as `after`.")
    operation: Op
    object_type: ObjectType
    object_id: strawberry.ID = strawberry.field(description="The global id of the object that changed.")
    state: JSON | None = strawberry.field(
        description="The object's logged state right after this change (null for a delete)."
    )
    seq: strawberry.Private[int]
    pk: strawberry.Private[int]
    data: strawberry.Private[dict[str, Any] | None]
    loaders: strawberry.Private[Loaders]
    # Its renders, shared by every subscriber handed this event (gateway.render).
    renders: strawberry.Private[dict[Any, Any]]

    @classmethod
    def of(cls, account_id: int, entry: changelog.Change, loaders: Loaders) -> Change:
        return cls(
            cursor=encode_change_cursor(account_id, entry.seq),
            operation=entry.op,
            object_type=entry.object_type,
            object_id=strawberry.ID(to_global(TYPES[entry.object_type][0], entry.object_id)),
            state=cast("JSON | None", entry.data),
            seq=entry.seq,
            pk=entry.object_id,
            data=entry.data,
            loaders=loaders,
            renders={},
        )

    @described("The object as it is NOW (not as it was at this change); null once deleted.")
    async def object(self) -> Node | None:
        if self.operation is Op.DELETE:
            return None
        name, loader_name = TYPES[self.object_type]
        loader: Any = getattr(self.loaders, loader_name)
        row = await loader.load(self.pk)
        return None if row is None else NODE_CLASSES[name](row)


@strawberry.type(description="A page of changes, oldest first.")
class ChangePage:
    changes: list[Change]
    cursor: str = strawberry.field(description="The newest cursor of this page (the one given when it is empty).")
    has_more: bool = strawberry.field(description="More changes follow: ask again with `after: cursor`.")
