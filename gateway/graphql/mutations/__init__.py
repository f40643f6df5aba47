"""The root Mutation, composed of one class per area (each a `@strawberry.type` of its own mutations).

Adding an area is one line: list its class among the bases below (fields keep the order of the bases).
Every mutation is refused to a read-only token by one schema extension (writes.ReadOnlyTokens), not per field.
"""

from __future__ import annotations

import strawberry

from gateway.graphql.mutations.drafts import DraftMutations
from gateway.graphql.mutations.folders import FolderMutations
from gateway.graphql.mutations.messages import MessageMutations
from gateway.graphql.mutations.operator import OperatorMutations
from gateway.graphql.mutations.sending import SendingMutations
from gateway.graphql.mutations.webhooks import WebhookMutations
from gateway.graphql.mutations.writes import ReadOnlyTokens

__all__ = ["Mutation", "ReadOnlyTokens"]


@strawberry.type
class Mutation(
    MessageMutations,
    FolderMutations,
    DraftMutations,
    SendingMutations,
    WebhookMutations,
    OperatorMutations,
):
    """Every mutation: the fields of the bases, in their order."""
