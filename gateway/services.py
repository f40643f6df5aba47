"""The process's long-lived services, built once by `create_app` and handed to every request's context."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth import TokenCache
from gateway.config import GatewayConfig
from gateway.errors import ShardUnavailable
from gateway.limits import RateLimiter, StreamSlots
from gateway.signing import Signer
from schema.crypto import CredentialBox
from schema.fulltext import VocabularyCache
from schema.shards import shard_of
from schema.unit import Store

if TYPE_CHECKING:
    # Only a type here: the fan-out builds the GraphQL change events (gateway.graphql), whose context holds
    # these services.
    from gateway.fanout import Fanout


@dataclass(frozen=True, slots=True)
class Services:
    # Shard 0's: the global tables (tokens and their grants, consent flows), and a single server's everything.
    engine: AsyncEngine
    # Rate limits and readiness; the doorbell has connections of its own (gateway.fanout).
    redis: Redis
    config: GatewayConfig
    tokens: TokenCache
    # Download links (gateway.signing).
    signer: Signer
    # Seals webhook secrets at rest (schema.crypto).
    box: CredentialBox
    # The process's one doorbell subscription, which subscriptions wait on.
    fanout: Fanout
    # Mutations write through it: a unit of work per account, rung after commit (schema.unit).
    store: Store
    # Websockets and event streams open per token (gateway.websocket, gateway.sse).
    streams: StreamSlots
    # What the FULLTEXT index holds (token sizes, stopwords), read from the server at the first search.
    vocabulary: VocabularyCache
    # Subscriptions running per token, over all its websockets and event streams (gateway.limits.SubscriptionCap).
    subscriptions: StreamSlots
    # Each token's budget of cost points (gateway.limits): queries spend it, and every subscription event.
    limiter: RateLimiter
    # Every shard's engine and store by number, shard 0's included (schema.shards); one entry on a single server.
    engines: Mapping[int, AsyncEngine]
    stores: Mapping[int, Store]

    def store_of(self, account_id: int) -> Store:
        """The store of the shard holding this account: mutations write through it (SHARD_UNAVAILABLE for a
        shard no longer configured)."""
        found = self.stores.get(shard_of(account_id))
        if found is None:
            raise ShardUnavailable(shard_of(account_id))
        return found
