"""Every Node type by name, for `node(id:)` and a change's `object`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Row

from gateway.graphql.types.accounts import Account
from gateway.graphql.types.actions import Action
from gateway.graphql.types.folders import Folder, Label
from gateway.graphql.types.messages import Attachment, Message, Thread
from gateway.graphql.types.outbox import OutboxEntry
from gateway.graphql.types.relay import Node

NODE_CLASSES: dict[str, Callable[[Row[Any]], Node]] = {
    "Account": Account.of,
    "Folder": Folder.of,
    "Label": Label.of,
    "Thread": Thread.of,
    "Message": Message.of,
    "Attachment": Attachment.of,
    "Action": Action.of,
    "OutboxEntry": OutboxEntry.of,
}
