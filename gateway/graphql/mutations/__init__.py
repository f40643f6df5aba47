"""The root Mutation, composed of one class per area (each a `@strawberry.type` of its own mutations).

Adding an area is one line: list its class among the bases below (fields keep the order of the bases).
"""

from __future__ import annotations

import strawberry

from gateway.graphql.mutations.webhooks import WebhookMutations


@strawberry.type
class Mutation(
    WebhookMutations,
):
    """Every mutation: the fields of the bases, in their order."""
