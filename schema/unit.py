"""The one way mirrored rows are written: a unit of work per account and transaction.

```
async with store.unit(account_id) as uow:
    await messages.add(uow, folder, fetched)
```

On leaving the block the unit brings the aggregates it touched up to date (message flags over their places,
thread aggregates, folder counts), writes the change log rows of everything it changed with the objects'
states, commits, and then rings the account's doorbell in Redis (schema.doorbell). Redis only rings: a lost
PUBLISH loses nothing, because readers re-read the log from their cursor.

The refreshes of messages, threads and folder counts hold the logged states of what they refreshed (they read
and computed every field of them, under lock, after the unit's writes), as do the action queue's bulk writes
(schema.actions: actions queued, flag actions done): those go to the log as they are, and only the states of other
changed objects are read again.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from schema import aggregates, changelog, doorbell, states
from schema.changelog import ChangeSet, ObjectType, Op
from schema.db import session_factory


class Store:
    """What a process needs to write the mirror: the engine, and Redis for the doorbell (optional)."""

    def __init__(
        self, engine: AsyncEngine, redis: Redis | None = None, doorbells: doorbell.Doorbells | None = None
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.sessions = session_factory(engine)
        # Named after the database, unless given: the shards of a deployment ring shard 0's (schema.shards).
        self.doorbells = doorbells or doorbell.Doorbells.of(engine)

    def unit(self, account_id: int) -> UnitOfWork:
        return UnitOfWork(self, account_id)

    async def ring(self, account_id: int, seq: int) -> None:
        if self.redis is not None:
            await self.doorbells.ring(self.redis, account_id, seq)

    async def fence(self, uow: UnitOfWork) -> None:
        """Called in the unit's transaction just before it commits; raising refuses the commit. A sync process's
        store checks its lease there (schema.leases.FencedStore); this one writes for anyone."""

    async def ring_actions(self, account_id: int) -> None:
        """Wake the sync process that performs the account's queued actions (schema.actions)."""
        if self.redis is not None:
            await self.doorbells.ring_actions(self.redis, account_id)


class UnitOfWork:
    def __init__(self, store: Store, account_id: int) -> None:
        self.store = store
        self.account_id = account_id
        self.changes = ChangeSet()
        self.dirty_messages: set[int] = set()  # their places changed: recompute flags and labels
        self.moved_messages: set[int] = set()  # a place was added or removed: their folders changed
        self.dirty_threads: set[int] = set()  # members, their folders or their dates changed: a full refresh
        self.flagged_threads: set[int] = set()  # only their members' flags or labels changed: a recount
        # Of those, what their members' changes did to their counts when that is known without a recount
        # (schema.aggregates): thread id -> (unread members gained, a member starred), None: a recount will tell.
        self.thread_moves: dict[int, tuple[int, bool] | None] = {}
        self.relabelled_threads: set[int] = set()  # of those, threads whose labels are to be listed again
        self.unstarred_threads: set[int] = set()  # of those, threads a member of which lost its star
        self.dirty_folders: set[int] = set()  # their places changed in any way: counted again
        # Folders whose places were only added (schema.messages.add) or changed only in their flags (set_flags):
        # folder id -> (total, unread) gained (negative: lost), moved on the counts the folder's row holds unless the
        # folder is counted again anyway (dirty_folders), instead of counting every place of a large folder.
        self.count_moves: dict[int, tuple[int, int]] = {}
        # Logged states the settle computed already (schema.aggregates), by object.
        self.states: dict[tuple[ObjectType, int], states.State] = {}
        self.last_seq: int | None = None
        self.rang_actions = False  # an action was queued: its executor is rung after commit
        # The server reported a change of a message that a pending action protects (schema.actions), and it was
        # left alone: the folder sync must look at that folder again in full once the action has run.
        self.skipped_pending = False
        # Messages this unit created (schema.messages.add): the sync core counts them once committed (ops.metrics).
        self.new_messages = 0
        self._session: AsyncSession | None = None

    @property
    def session(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("the unit of work is not open")
        return self._session

    def record(self, object_type: ObjectType, op: Op, ids: Iterable[int]) -> None:
        self.changes.record(object_type, op, ids)

    def counts_move(self, folder_id: int, total: int, unread: int) -> None:
        """A folder's places were only added, or changed only in their flags: its counts move by these numbers."""
        before = self.count_moves.get(folder_id, (0, 0))
        self.count_moves[folder_id] = (before[0] + total, before[1] + unread)

    async def __aenter__(self) -> UnitOfWork:
        self._session = self.store.sessions()
        await self._session.begin()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session = self.session
        try:
            if exc_type is not None:
                await session.rollback()
                return
            await self._settle()
            await self.store.fence(self)
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
        finally:
            await session.close()
            self._session = None
        # The executor's bell first: it has the server to tell (a UID STORE, an SMTP submission), while a reader
        # of the log only re-reads it; ringing it second put a Redis round trip before every write-back.
        if self.rang_actions:
            await self.store.ring_actions(self.account_id)
        if self.last_seq is not None:
            await self.store.ring(self.account_id, self.last_seq)

    async def _settle(self) -> None:
        await aggregates.refresh_messages(self, sorted(self.dirty_messages))
        await aggregates.refresh_threads(self, sorted(self.dirty_threads))
        await aggregates.refresh_thread_flags(self, sorted(self.flagged_threads - self.dirty_threads))
        await aggregates.refresh_folder_counts(self, sorted(self.dirty_folders))
        await aggregates.move_folder_counts(
            self, {fid: n for fid, n in self.count_moves.items() if fid not in self.dirty_folders}
        )
        logged = self.states
        for kind in ObjectType:
            ids = [oid for oid in self.changes.ids(kind) if (kind, oid) not in logged]
            if ids:
                for oid, state in (await states.states(self.session, kind, ids)).items():
                    logged[(kind, oid)] = state
        self.last_seq = await changelog.append(self.session, self.account_id, self.changes, logged)
