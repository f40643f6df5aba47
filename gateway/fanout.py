"""One Redis subscription per gateway process, fanned out to the process's subscribers.

```
Redis PSUBSCRIBE inboxql:<db>:doorbell:*  ──►  Fanout.run  ──►  _Bell(account) ──► subscribers wake, each re-reads
                                                                               the log from its own cursor
```

The doorbell only says "account A has changes up to seq N"; the change log is the truth. So memory per
subscriber is one waiter on its account's bell (a `_Gate` shared by all of them, replaced on each ring, which
wakes them a slice per turn of the event loop so that requests arriving meanwhile are not served after all of them),
not a queue of events; and subscribers of one account at the same cursor share one SQL read (`read`), whose
`Batch` hands them the same event objects, so each event is rendered once for all of them (gateway.render).
A ring wakes thousands of subscribers, but not in one instant: those that reach `read` after the read ended
would read (and render) again. So a batch with entries is kept `keep_seconds` by (account, cursor), and every
subscriber arriving at that cursor meanwhile takes it; entries after a cursor never change once read (seq order
is commit order), so a kept batch is as true as a new read. An empty batch is never kept.

With several shards (schema.shards), an account's log is read on its shard; the sync processes of every shard
ring shard 0's doorbell channels, so this one subscription hears them all.

The process's long-lived heap (thousands of sockets and suspended generators) is kept out of the garbage
collector's way by gateway.heap, started and stopped with the fan-out.

When Redis is gone, nothing is lost: every bell is rung every `poll_seconds` while the doorbell is down (every
subscriber then re-reads the log on that timer), and `run` reconnects with backoff. Even while Redis is up,
every bell is rung every `safety_seconds`, because a doorbell rung while its writer could not reach Redis is
simply lost. One timer task (`_tick`) does it for all: a waiting subscriber holds no timer of its own (10,000
timers set and cancelled at every event were a share of a fan-out's cost).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar, cast

from redis.asyncio import Redis
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from gateway import heap
from gateway.errors import ShardUnavailable
from gateway.graphql.loaders import Loaders, Reader
from gateway.graphql.types.changes import Change
from gateway.shared import Shared
from schema import changelog, doorbell
from schema.redisconn import connect
from schema.shards import HOME, shard_of

log = logging.getLogger(__name__)

BACKOFF_MAX = 5.0
T = TypeVar("T")
CLIENT_NAME = "inboxql-gateway-doorbells"


# Waiters a ring wakes per turn of the event loop (see `_Gate`).
WAKE_SLICE = 32


class _Waiter:
    """A subscriber waiting on its bell: at cursor `after`, wanting the changes `wants` accepts (None: all)."""

    __slots__ = ("after", "future", "wants")

    def __init__(self, after: int | None, wants: Callable[[Change], bool] | None) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.after = after
        self.wants = wants


class _Gate:
    """What a bell's waiters wait on until it rings: like an asyncio.Event, but opening it wakes its waiters
    `WAKE_SLICE` per turn of the event loop, not all in one. A waiter woken sends its events in one step (the batch
    is kept, its renders shared), so a ring at 200 subscribers was 20-40 ms of the loop in one piece, and a
    request that arrived meanwhile waited for all of it (the soak's p99); between slices the loop now reads what
    came in and serves it too. At 10,000 subscribers the slices add a few hundred turns, each a poll with no wait.
    A waiter that left (cancelled) before its slice is skipped.

    Opened with the batch the ring's prefetch read (the whole log after the cursor it read at), a waiter at that
    cursor that wants none of its changes is not woken: its cursor moves past them and it waits on the next gate
    (a `messageAdded` subscriber sleeps through a flag change)."""

    __slots__ = ("opened", "waiters")

    def __init__(self) -> None:
        self.opened = False
        self.waiters: list[_Waiter] = []

    async def wait(self, waiter: _Waiter) -> None:
        if self.opened:
            return
        self.waiters.append(waiter)
        await waiter.future

    def open(self, after: int | None = None, batch: Batch | None = None, successor: _Gate | None = None) -> bool:
        """Wake the waiters (see the class); True when some were moved on to `successor` instead."""
        self.opened = True
        waiters, self.waiters = self.waiters, []
        moved = False
        if batch is not None and successor is not None and batch.changes:
            last = batch.changes[-1].seq
            woken = []
            for waiter in waiters:
                if waiter.after == after and waiter.wants is not None and not any(map(waiter.wants, batch.changes)):
                    waiter.after = last
                    successor.waiters.append(waiter)
                    moved = True
                else:
                    woken.append(waiter)
            waiters = woken
        if waiters:
            _wake(waiters, 0)
        return moved


def _wake(waiters: list[_Waiter], start: int) -> None:
    end = start + WAKE_SLICE
    for waiter in waiters[start:end]:
        if not waiter.future.done():
            waiter.future.set_result(None)
    if end < len(waiters):
        # The next slice after this turn's callbacks, the woken waiters among them: the next turn first polls for
        # I/O, so what arrived meanwhile runs beside the next slice instead of after the last one.
        asyncio.get_running_loop().call_soon(_wake, waiters, end)


class _Bell:
    """An account's doorbell in this process. `rings` counts the rings: a read notes it when it begins, and
    after an empty read a subscriber waits only if no ring came since. The seq a ring carries is not trusted:
    a ring from another deployment (or database) on the same Redis, with a seq this log has not reached,
    would otherwise make every subscriber re-read in a tight loop."""

    __slots__ = ("after", "again", "event", "listeners", "prefetching", "rings")

    def __init__(self) -> None:
        self.event = _Gate()
        self.rings = 0
        self.listeners = 0
        self.after: int | None = None  # the cursor the last subscriber to wait waits at (see `Fanout._prefetch`)
        self.prefetching = False
        self.again = False  # a ring came while the prefetch ran

    def ring(self, after: int | None = None, batch: Batch | None = None) -> None:
        """Wake the waiters; with the batch read at cursor `after` after the commit that rang (complete, no ring
        since), those at that cursor who want none of it wait on, past it."""
        self.rings += 1
        event, self.event = self.event, _Gate()
        if event.open(after, batch, self.event) and batch is not None:
            self.after = batch.changes[-1].seq  # where the moved waiters wait: the next prefetch reads there


class Batch:
    """The entries of one read of an account's log, as the change-feed events every reader of it shares.

    Its loaders are its own (scoped to the account, a connection per statement): an event's `object` is
    loaded when the batch is rendered, and the batch belongs to no subscriber's request.
    """

    __slots__ = ("changes", "complete", "mark")

    def __init__(
        self, engine: AsyncEngine, account_id: int, entries: list[changelog.Change], mark: int, complete: bool = True
    ) -> None:
        loaders = Loaders(Reader(engine, hold=False), frozenset({account_id}))
        self.changes = [Change.of(account_id, entry, loaders) for entry in entries]
        # The bell's ring count when the read began: a ring after it may be a commit the read did not see.
        self.mark = mark
        # The read reached the end of the log (fewer entries than it asked for): until a ring after `mark`,
        # there is nothing after its last entry, and a subscriber that sent them all may wait at once.
        self.complete = complete


class Fanout:
    def __init__(
        self,
        engine: AsyncEngine,
        redis_url: str,
        *,
        poll_seconds: float = 1.0,
        safety_seconds: float = 10.0,
        read_limit: int = 200,
        keep_seconds: float = 5.0,
        engines: Mapping[int, AsyncEngine] | None = None,
    ) -> None:
        self.engine = engine  # shard 0's: the doorbells' namespace (schema.shards)
        # Every shard's engine (shard 0's included): an account's log is read on its shard.
        self.engines: Mapping[int, AsyncEngine] = engines if engines is not None else {HOME: engine}
        self.redis_url = redis_url
        self.doorbells = doorbell.Doorbells.of(engine)
        self.poll_seconds = poll_seconds
        self.safety_seconds = safety_seconds
        self.read_limit = read_limit
        self.keep_seconds = keep_seconds
        self.connected = False
        self.rings = 0
        self.reads = 0
        self._bells: dict[int, _Bell] = {}
        self._reads: dict[tuple[int, int], asyncio.Task[Batch]] = {}
        self._kept: dict[tuple[int, int], Batch] = {}
        self._queries: Shared[tuple[object, ...], Any] = Shared()
        self._ring_callbacks: list[Callable[[int | None], None]] = []
        self._task: asyncio.Task[None] | None = None
        self._heap: asyncio.Task[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._prefetches: set[asyncio.Task[None]] = set()
        self._last_ring = 0.0  # time.monotonic() of the last doorbell heard: the heap keeper sweeps after quiet
        self._publisher: Redis | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="doorbell-fanout")
            self._heap = asyncio.create_task(heap.keep(lambda: self._last_ring), name="heap-keeper")
            self._ticker = asyncio.create_task(self._tick(), name="doorbell-ticker")

    async def stop(self) -> None:
        for task in (self._task, self._heap, self._ticker, *self._prefetches):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._heap = self._ticker = None
        if self._publisher is not None:
            with contextlib.suppress(Exception):
                await self._publisher.aclose()
            self._publisher = None

    async def ring(self, account_id: int) -> None:
        """Ring the account's doorbell for every gateway process, as a commit of the sync core does (e.g. a
        webhook re-enabled with events waiting). Best effort like every ring: the safety polls cover a lost one.
        It carries no seq (0): a ring's seq is never trusted (see `_Bell`)."""
        if self._publisher is None:
            self._publisher = connect(self.redis_url)
        await self.doorbells.ring(self._publisher, account_id, 0)

    async def run(self) -> None:
        backoff = 0.1
        while True:
            # Named, so an operator's CLIENT LIST (and the balancer test) sees each process's one subscription.
            redis: Redis = Redis.from_url(
                self.redis_url,
                socket_connect_timeout=2,
                health_check_interval=5,
                client_name=f"{CLIENT_NAME}:{os.getpid()}",
            )
            try:
                pubsub = redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.psubscribe(self.doorbells.pattern)
                self.connected = True
                backoff = 0.1
                # Anything rung while we were away or subscribing: every subscriber re-reads once.
                self._ring_all()
                while True:
                    message = await pubsub.get_message(timeout=5.0)
                    if message is None:
                        await pubsub.ping()
                        continue
                    self._on_message(message.get("channel"))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected:
                    log.warning("doorbell subscription lost (%s); subscribers poll the change log", exc)
                self.connected = False
                self._ring_all()  # wake waiters so they switch to the short poll timeout at once
            finally:
                self.connected = False
                with contextlib.suppress(Exception):
                    await redis.aclose()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)

    async def _tick(self) -> None:
        """Rings every bell every `safety_seconds`, and every `poll_seconds` while the doorbell is down."""
        rung_at = time.monotonic()
        while True:
            await asyncio.sleep(min(self.poll_seconds, self.safety_seconds))
            now = time.monotonic()
            if self.connected and now - rung_at < self.safety_seconds:
                continue
            rung_at = now
            for bell in list(self._bells.values()):
                bell.ring()

    def _on_message(self, channel: object) -> None:
        self._last_ring = time.monotonic()
        account = self.doorbells.account_of(channel)
        if account is None:
            return
        self._tell(account)
        bell = self._bells.get(account)
        if bell is None:
            return
        self.rings += 1
        if bell.after is None:
            bell.ring()
        elif bell.prefetching:
            # No prefetch of its own: the running one's ring comes after this one, and every read that ring sets
            # off starts after this commit (so that ring may not hand out an empty batch as the answer).
            bell.again = True
        else:
            bell.prefetching = True
            task = asyncio.get_running_loop().create_task(self._prefetch(account, bell, bell.after))
            self._prefetches.add(task)
            task.add_done_callback(self._prefetches.discard)

    async def _prefetch(self, account_id: int, bell: _Bell, after: int) -> None:
        """Reads the log where the subscribers wait, then rings their bell: woken, they find the batch kept
        (`read`) and send at once. Woken first, every one of them would go back to sleep on the same read
        (thousands of wake-ups more, and the first event sent only once the last subscriber had woken)."""
        batch = None
        try:
            with contextlib.suppress(Exception):  # a failed read is forgotten: the subscribers' own reads report it
                batch = await self.read(account_id, after)
        finally:
            again, bell.again, bell.prefetching = bell.again, False, False
            # Waiters may sleep through it only when it is the whole log after their cursor, with no gap before it
            # (a gap may be an expiry, which a subscriber must be woken to report).
            whole = batch is not None and not again and batch.complete
            if whole and batch is not None and batch.changes and batch.changes[0].seq != after + 1:
                whole = False
            bell.ring(after, batch if whole else None)
        if batch is not None and not again:
            # The log as of a read begun after the commit that rang: marked with the ring that wakes them, so the
            # subscribers who send its entries wait after the last one without reading again, and an empty
            # answer is handed to them instead of each asking the database again.
            batch.mark = bell.rings
            if not batch.changes:
                self._keep((account_id, after), batch)

    def _ring_all(self) -> None:
        self._tell(None)
        for bell in self._bells.values():
            bell.ring()

    def on_ring(self, callback: Callable[[int | None], None]) -> Callable[[], None]:
        """callback(account_id) for every doorbell heard (followed or not); callback(None) when the subscription
        is made or lost. Called in the receive loop, so it must not block. Returns a function that removes it."""
        self._ring_callbacks.append(callback)
        return lambda: self._ring_callbacks.remove(callback)

    def _tell(self, account_id: int | None) -> None:
        for callback in list(self._ring_callbacks):
            try:
                callback(account_id)
            except Exception:
                log.exception("doorbell callback failed")

    # -- subscribers --------------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def listen(self, account_id: int) -> AsyncIterator[None]:
        """Keep the account's bell while a subscriber follows it (bells of unfollowed accounts are dropped)."""
        bell = self._bells.get(account_id)
        if bell is None:
            bell = self._bells[account_id] = _Bell()
        bell.listeners += 1
        try:
            yield
        finally:
            bell.listeners -= 1
            if bell.listeners == 0 and self._bells.get(account_id) is bell:
                del self._bells[account_id]

    async def wait(
        self, account_id: int, mark: int, after: int | None = None, wants: Callable[[Change], bool] | None = None
    ) -> int | None:
        """Until the account's doorbell rings after `mark` (an empty batch's), the ticker's rings included; at
        once when it already has. (A fan-out that was not started has no ticker: then a timer of its own.)
        `after`, the cursor the subscriber will read from, is where the next ring's prefetch reads. With `wants`
        (and `after`), rings whose changes it accepts none of pass without waking it: returns the cursor it was
        moved to past them, where it reads from (`after` when none passed)."""
        bell = self._bells.get(account_id)
        if bell is None or bell.rings != mark:
            return after
        if after is not None:
            bell.after = after
        waiter = _Waiter(after, wants if after is not None else None)
        if self._ticker is not None:
            await bell.event.wait(waiter)
            return waiter.after
        timeout = self.safety_seconds if self.connected else self.poll_seconds
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await bell.event.wait(waiter)
        return waiter.after

    async def read(self, account_id: int, after: int) -> Batch:
        """The events after `after`, read once for all subscribers of that account at that cursor.

        The read runs in a task of its own, so a subscriber that leaves mid-read does not cancel it for the
        others who wait on the same one.
        """
        key = (account_id, after)
        kept = self._kept.get(key)
        if kept is not None and (kept.changes or self._rings_of(account_id) == kept.mark):
            return kept  # entries never change once read; an empty answer holds only until the next ring
        pending = self._reads.get(key)
        if pending is None or pending.done():
            # A read that ended is forgotten by its done callback, which runs only once the loop turns: handed
            # out before that, its batch (empty, marked before a ring that woke this caller) would send the
            # caller from `wait` straight back here, round and round without the loop ever turning.
            bell = self._bells.get(account_id)
            mark = -1 if bell is None else bell.rings
            pending = self._reads[key] = asyncio.create_task(self._read(account_id, after, mark))
            pending.add_done_callback(partial(self._done, key))
        return await asyncio.shield(pending)

    def _done(self, key: tuple[int, int], task: asyncio.Task[Batch]) -> None:
        """A read has ended: a batch with entries is kept `keep_seconds` for subscribers who arrive at its cursor
        later (their events are then the same objects, rendered once). An empty one is not: after a ring, the
        next read at that cursor must go to the database."""
        if self._reads.get(key) is task:
            del self._reads[key]
        if task.cancelled() or task.exception() is not None or not task.result().changes:
            return
        self._keep(key, task.result())

    def _keep(self, key: tuple[int, int], batch: Batch) -> None:
        self._kept[key] = batch
        asyncio.get_running_loop().call_later(self.keep_seconds, self._forget, key, batch)

    def _forget(self, key: tuple[int, int], batch: Batch) -> None:
        if self._kept.get(key) is batch:
            del self._kept[key]

    def _rings_of(self, account_id: int) -> int:
        bell = self._bells.get(account_id)
        return -1 if bell is None else bell.rings

    async def _read(self, account_id: int, after: int, mark: int) -> Batch:
        self.reads += 1
        async with self.session(account_id) as session:
            entries = await changelog.read(session, account_id, after, self.read_limit)
        return Batch(self.engine_of(account_id), account_id, entries, mark, len(entries) < self.read_limit)

    @contextlib.asynccontextmanager
    async def session(self, account_id: int) -> AsyncIterator[AsyncSession]:
        """A session on the account's shard; with several shards, one whose server cannot be reached is
        SHARD_UNAVAILABLE (the subscriber's error: it subscribes again from its cursor), the others go on."""
        try:
            async with AsyncSession(self.engine_of(account_id)) as session:
                yield session
        except (OperationalError, InterfaceError, OSError) as exc:
            if len(self.engines) == 1:
                raise
            raise ShardUnavailable(shard_of(account_id)) from exc

    def engine_of(self, account_id: int) -> AsyncEngine:
        """The engine of the account's shard (shard 0's on a single server)."""
        if len(self.engines) == 1:
            return self.engine
        found = self.engines.get(shard_of(account_id))
        if found is None:
            raise ShardUnavailable(shard_of(account_id))
        return found

    async def cursor_valid(self, account_id: int, after: int) -> bool:
        """Whether the log still holds what follows `after`: one query for all who ask it at the same time."""
        return await self._once(("valid", account_id, after), partial(self._cursor_valid, account_id, after))

    async def newest(self, account_id: int) -> int:
        """The account's newest seq ("now" for a subscriber without a cursor): one query for all who ask at once."""
        return await self._once(("newest", account_id), partial(self._newest, account_id))

    async def _once(self, key: tuple[object, ...], query: Callable[[], Awaitable[T]]) -> T:
        """`query()`, run once for every caller that asks with `key` while it runs (gateway.shared): e.g. the
        clients of a gateway that died, reconnecting together."""
        return cast("T", await self._queries.run(key, query))

    async def _cursor_valid(self, account_id: int, after: int) -> bool:
        async with self.session(account_id) as session:
            return await changelog.cursor_valid(session, account_id, after)

    async def _newest(self, account_id: int) -> int:
        async with self.session(account_id) as session:
            return await changelog.newest_seq(session, account_id)
