"""Shards: the MariaDB servers a deployment spreads its accounts over, and the id layout that routes to them.

Shard 0 is INBOXQL_DATABASE_URL, always: a single-server deployment is shard 0 alone and configures nothing more.
More shards are listed in INBOXQL_SHARDS (schema.settings), numbered 1 to MAX_SHARD.

The shard number is in the high bits of every id (SHARD_BITS): `inboxql db upgrade` starts each AUTO_INCREMENT
counter of shard s at s << SHARD_BITS (prepare_ids), so an account, its folders, labels, messages, threads,
places, actions, outbox entries, uploads and webhooks made on shard s all decode to s (`shard_of`, no lookup),
and so does a change cursor, which names its account. Shard 0's counters start at 1 as they always did: the ids
of a database made before sharding are shard 0's, and its counters are never touched.

Why 48 bits and at most 32 shards: ids stay below 2**53, exact as JSON numbers in any client (JavaScript's
Number; the change log's states and webhook bodies carry ids as numbers), and far within BIGINT and the
gateway's global ids (gateway.ids, up to 2**63 - 1); 2**48 ids per table and shard is about 280 trillion.

What lives where (every shard has every table, made by the same migrations; what matters is which rows are
written where):

    on the account's shard    accounts and everything that has an account_id: folders, labels, messages,
                              message_places, message_labels, attachments, threads, thread_refs, change_seq,
                              change_log, actions, outbox, skipped_messages, uploads, webhooks and their
                              deliveries; lease_grants; mime_blobs and upload_blobs (deduplicated per shard);
                              mutation_keys (written with the mutation they keep, naming a token of shard 0)
    on each shard             sync_processes: each shard is a lease domain of its own (a process beats and
                              balances on every shard it serves, so one shard down stops only its accounts)
    on shard 0 (global)       api_tokens, api_token_accounts, oauth2_flows

Tokens and their grants stay on shard 0, and a grant names an account of any shard: no foreign key holds it to
`accounts` (migration 0018). `inboxql token create` looks for each account on its shard (schema.accounts.existing)
and refuses an unknown one, and account removal revokes the tokens granting it and deletes its grants on shard 0
(schema.accounts.remove).

    Shards(urls)        the engines, one per shard (made once, connecting on first use), and a Store per shard
                        sharing shard 0's doorbell channels (one namespace per deployment, schema.doorbell)
    shard_of(id)        the shard of an account's or object's id, by its bits alone

New accounts are placed by schema.accounts.place (the shard with the fewest accounts).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from redis.asyncio import Redis
from sqlalchemy import Table, func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.db import create_engine
from schema.doorbell import Doorbells
from schema.models import Base
from schema.settings import MAX_SHARD, Settings
from schema.unit import Store

SHARD_BITS = 48
assert (MAX_SHARD + 1) << SHARD_BITS <= 2**53
HOME = 0  # INBOXQL_DATABASE_URL: the global tables, and the only shard of a single-server deployment


class ShardError(ValueError):
    """An id of a shard this deployment does not list, or a database prepared as another shard."""


def shard_of(object_id: int) -> int:
    """The shard that made this id (of an account or of any of its objects)."""
    return object_id >> SHARD_BITS


def first_id(shard: int) -> int:
    """The first id shard `shard` hands out in each table."""
    return max(1, shard << SHARD_BITS)


def id_tables() -> list[Table]:
    """The tables whose rows are numbered by an AUTO_INCREMENT counter."""
    return [t for t in Base.metadata.sorted_tables if t.autoincrement_column is not None]


async def prepare_ids(engine: AsyncEngine, shard: int) -> None:
    """Start every AUTO_INCREMENT counter of this database at shard `shard`'s first id (a counter already past it
    is left where it is). ShardError when the database holds ids of another shard (two URLs swapped in the
    configuration). Shard 0's counters are left as they are."""
    async with engine.connect() as conn:
        for table in id_tables():
            column = table.autoincrement_column
            assert column is not None
            top = await conn.scalar(select(func.max(column)))
            if top is not None and shard_of(int(top)) != shard:
                raise ShardError(
                    f"the database configured as shard {shard} holds ids of shard {shard_of(int(top))} "
                    f"(table {table.name}): is INBOXQL_SHARDS listing the right URL under the right number?"
                )
        if shard == HOME:
            return
        for table in id_tables():
            # InnoDB keeps the counter (MariaDB 10.2.4+ persists it across restarts); never lowered below max + 1.
            await conn.execute(text(f"ALTER TABLE `{table.name}` AUTO_INCREMENT = {first_id(shard)}"))
        await conn.commit()


class Shards:
    """The engines of a deployment's shards, by number, made once and disposed of together.

    `configure` is called with each engine as it is made (the sync process asks its connections to end idle
    transactions: schema.leases.end_idle_transactions)."""

    def __init__(
        self,
        urls: Mapping[int, str],
        *,
        pool_size: int = 10,
        configure: Callable[[AsyncEngine], None] | None = None,
    ) -> None:
        if HOME not in urls:
            raise ShardError("shard 0 (INBOXQL_DATABASE_URL) is missing")
        self.urls = dict(sorted(urls.items()))
        self._engines: dict[int, AsyncEngine] = {}
        for number, url in self.urls.items():
            engine = self._engines[number] = create_engine(url, pool_size=pool_size)
            if configure is not None:
                configure(engine)
        # One namespace of doorbells for the deployment, whichever shard rings.
        self.doorbells = Doorbells.for_url(self.urls[HOME])

    @property
    def numbers(self) -> list[int]:
        return list(self.urls)

    @property
    def home(self) -> AsyncEngine:
        return self._engines[HOME]

    def engine(self, shard: int) -> AsyncEngine:
        found = self._engines.get(shard)
        if found is None:
            raise ShardError(f"shard {shard} is not configured (INBOXQL_SHARDS lists {self.numbers[1:] or 'none'})")
        return found

    def engine_of(self, object_id: int) -> AsyncEngine:
        """The engine of the shard that holds this account (or object)."""
        return self.engine(shard_of(object_id))

    def engines(self) -> Iterator[tuple[int, AsyncEngine]]:
        yield from self._engines.items()

    def store(self, shard: int, redis: Redis | None = None) -> Store:
        return Store(self.engine(shard), redis, doorbells=self.doorbells)

    def store_of(self, object_id: int, redis: Redis | None = None) -> Store:
        return self.store(shard_of(object_id), redis)

    @classmethod
    def of(
        cls, settings: Settings, *, pool_size: int = 10, configure: Callable[[AsyncEngine], None] | None = None
    ) -> Shards:
        return cls(settings.shard_urls(), pool_size=pool_size, configure=configure)

    async def dispose(self) -> None:
        for engine in self._engines.values():
            await engine.dispose()
