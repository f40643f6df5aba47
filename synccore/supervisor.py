"""The sync process: owns accounts through leases in MySQL (schema.leases) and runs one task per account.

A fleet of these processes shares the accounts. Every round (RESCAN_SECONDS) a process beats in
`sync_processes`, renews its leases for LEASE_SECONDS, and takes or gives up accounts toward its share: the
accounts of its group (`--group`, or those pinned to no group) divided by the live processes of that group,
rounded up. It takes at most a step of them a round (a third of its share, at least 4), picked at random among
free leases and skipping rows another process is taking, and gives surplus back a step at a time when another
process joins: hand-overs are gradual, never a stampede.

An idle round costs one transaction: the heartbeat with the renewal (4 statements). The account list (with the
queue depths) is read and balanced only when something may have changed: the accounts bell rang, the count of live
processes changed (one joined, drained or died), the leases held changed, the last balance left this process off
its share or gave something back, an account task ended; and every LIST_ROUNDS rounds in any case (a ring lost,
or a change made without Redis, is seen within 10 s; the gauges of accounts by state and of the queues too). An
idle sync process's CPU went mostly to its rounds' statements (bench.empty_idle_bench; a round read the list,
renewed and beat in four sessions, 7 statements).

Liveness is renewal only: a process that stops renewing (killed, paused, cut off) loses its leases LEASE_SECONDS
after its last renewal, and the others take its accounts over within a round or a few after that (failover
within LEASE_SECONDS + 3 rounds = 16 s at most, 10-12 s in practice). Writes are fenced (schema.leases): a unit of
work under a lease this process lost is refused and rolled back, and that account's task is stopped.

An operator drains a process with `inboxql fleet drain OWNER`: at its next round it stops its account tasks,
releases their leases for the others to take, and returns (`inboxql sync` exits 0).

An account being removed (schema.accounts.remove marks it REMOVING, then deletes it) is let go at the next round:
its task is cancelled and its lease released, and it is never taken again. Adding, removing or re-authorizing an
account rings the accounts bell (synccore.bells): the next round starts at once, not when its timer says.

Accounts start on a ramp: at most START_SLOTS of them connect and run their first pass at once (synccore.account),
in the order they asked; the others wait their turn without a connection. A process that takes a thousand accounts
thus opens a few connections at a time, not a thousand, and its database pool serves the few (without the ramp, a
process given 1,000 accounts had every one of them time out waiting for the pool of 20 connections, then retry in a
herd: bench.thousand_bench). Accounts caught up follow their changes outside the ramp, in slots of their own
(PASS_SLOTS, in the order they asked): one account's initial sync of a large mailbox holds one slot of the ramp,
never the others' new mail, and 300 accounts told of mail at once run their passes a few at a time instead of
taking the pool from each other (unbounded, they did: bench.thousand_bench).

MySQL going away (a restart, a failover) does not end the process: the supervisor waits for it with backoff,
the account tasks retry with theirs, and an account whose lease another process took meanwhile is let go.

Shards (schema.shards): a process serves the accounts of every shard configured. Each shard is a lease domain of
its own, served by a Lane with a round loop of its own: the process beats, renews, balances and expires the log on
each shard apart, and each account's task writes through its shard's fenced store. A shard whose server is away
waits for it alone, with backoff: the other shards' rounds and accounts go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from ops import metrics
from schema import actions, changelog, idempotency, leases, outbox
from schema.accounts import AUTH_FAILED, NEEDS_CONSENT, REMOVING, STOPPED
from schema.crypto import CredentialBox
from schema.db import pool_use
from schema.models import utcnow
from schema.redisconn import connect
from schema.settings import Settings
from schema.shards import HOME, ShardError, Shards, shard_of
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.actions import SAFETY_WAKE
from synccore.backoff import Backoff
from synccore.bells import Bells
from synccore.parsing import ParsePool, default_workers
from synccore.tokens import TokenKeeper

log = logging.getLogger(__name__)

LEASE_SECONDS = 10
RESCAN_SECONDS = 2  # a round: heartbeat and renewal (one transaction), then the balance when something changed
# A round reads the account list (and the queue depths) when something may have changed (module docstring), and
# at least every LIST_ROUNDS rounds in any case: the gauges' and a pin's delay, and the net under a lost ring.
LIST_ROUNDS = 5
# Accounts connecting and running their first pass at once (the ramp), and passes after the first at once (a change
# told of, a poll): together below the database pool's size (10 + 10).
START_SLOTS = 8
PASS_SLOTS = 8
# How often a round's heartbeat also deletes the rows of processes silent for an hour (schema.leases).
FORGET_EVERY = 60.0
# Change-log entries older than INBOXQL_CHANGE_LOG_DAYS (30) are deleted this often (schema.changelog.expire).
EXPIRE_SECONDS = 3600
# What the driver raises while MySQL is unreachable (refused, reset, gone away): wait, then go on.
DATABASE_DOWN = (OperationalError, InterfaceError, OSError)


def step_of(share: int) -> int:
    """How many leases a process takes or gives up in one round: a share moves in about three rounds."""
    return max(4, math.ceil(share / 3))


@dataclass(eq=False)
class Lane:
    """One shard as this process serves it: the rounds' own connections, the fenced store its accounts' tasks
    write through (it holds the epochs of the leases taken on that shard), its OAuth2 token keeper, its round
    bell and timers, and what its last listing read (the gauges add the shards up) and left as it was."""

    shard: int
    rounds: Store
    store: leases.FencedStore
    tokens: TokenKeeper
    bell: asyncio.Event
    present: list[leases.Listed] = field(default_factory=list)
    depths: tuple[int, int] = (0, 0)  # actions pending, outbox entries waiting
    expire_due: float = 0.0  # the loop time of the next change-log expiry
    sweep_due: float = 0.0  # ... and of the next sweep of the write-back queues
    forget_due: float = 0.0  # ... and of the next heartbeat that forgets processes long silent
    unlisted: int = 0  # rounds since the account list was last read
    # The live processes, the leases held and the tasks ended (left so) when it was.
    listed: tuple[int, frozenset[int], frozenset[int]] | None = None
    settled: bool = False  # ... and whether its balance left this process at its share, with nothing to let go


def _end_idle(engine: AsyncEngine) -> None:
    leases.end_idle_transactions(engine, LEASE_SECONDS)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        tuning: Tuning | None = None,
        group: str | None = None,
        start_slots: int = START_SLOTS,
        pass_slots: int = PASS_SLOTS,
    ) -> None:
        self.settings = settings
        self.tuning = tuning or Tuning()
        self.group = group
        # A name for operators (`inboxql fleet list`); liveness never reads the host or pid in it.
        self.owner = f"{socket.gethostname()[:32]}:{os.getpid()}:{secrets.token_hex(4)}"
        self.shards = Shards.of(settings, configure=_end_idle)
        # The rounds' own connections: a renewal never waits behind the account tasks' writes for the pool (an
        # initial sync of many accounts held all of it, and leases expired while their holder was alive).
        self._round_shards = Shards.of(settings, pool_size=2, configure=_end_idle)
        self._untrack_pool = metrics.track_pool(self._pool_use)
        # Short timeouts (schema.redisconn): rings are bounded; the action bells read with their own timeout.
        self.redis: Redis = connect(settings.redis_url)
        self.box = CredentialBox(settings.key_ring())
        self.parser = ParsePool(default_workers())
        self.bells = Bells(self.redis, self.shards.doorbells)
        self.lanes = {n: self._lane(n) for n in self.shards.numbers}
        # Shard 0's store (the demo announces its account's progress through it).
        self.store = self.lanes[HOME].store
        self.ramp = asyncio.Semaphore(start_slots)
        self.pass_slots = asyncio.Semaphore(pass_slots)
        self._bells_task: asyncio.Task[None] | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self.change_log_days = float(os.environ.get("INBOXQL_CHANGE_LOG_DAYS", "30"))

    def _lane(self, shard: int) -> Lane:
        store = leases.FencedStore(self.shards.engine(shard), self.redis, self._refused, self.shards.doorbells)
        # One keeper of OAuth2 access tokens for every account of this process and shard (synccore.tokens).
        tokens = TokenKeeper(store, self.box)
        return Lane(shard, self._round_shards.store(shard), store, tokens, self.bells.round_bell())

    def _pool_use(self) -> tuple[int, int]:
        uses = [pool_use(engine) for _, engine in self.shards.engines()]
        return sum(u[0] for u in uses), sum(u[1] for u in uses)

    def _lane_of(self, account_id: int) -> Lane:
        lane = self.lanes.get(shard_of(account_id))
        if lane is None:
            raise ShardError(f"account {account_id} is on shard {shard_of(account_id)}, which is not configured")
        return lane

    def _held(self) -> int:
        return sum(len(lane.store.held) for lane in self.lanes.values())

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *([self._bells_task] if self._bells_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for lane in self.lanes.values():
            try:
                await self._release(lane, list(lane.store.held))
                await leases.leave(lane.rounds, self.owner)
            except DATABASE_DOWN as exc:  # the leases expire by themselves
                log.warning("shard %s: leases not released: %s", lane.shard, _short(exc))
        await self.redis.aclose()
        await self.shards.dispose()
        await self._round_shards.dispose()
        self._untrack_pool()
        # Joining the worker processes takes over half a second: off the loop (the stall detector caught it).
        await asyncio.to_thread(self.parser.close)

    async def accounts(self, only: Sequence[int] | None = None) -> list[leases.Listed]:
        """The accounts to sync (those of `only`, when given), of every shard, by id."""
        found: list[leases.Listed] = []
        for lane in self.lanes.values():
            found += await self._accounts(lane, only)
        return found

    async def _accounts(self, lane: Lane, only: Sequence[int] | None) -> list[leases.Listed]:
        if not only:
            return await leases.accounts(lane.rounds)
        mine = [i for i in only if shard_of(i) == lane.shard]
        return await leases.accounts(lane.rounds, mine) if mine else []

    def _unknown_shards(self, only: Sequence[int] | None) -> list[int]:
        """The accounts of `only` on shards this process is not configured with (said in the log)."""
        unknown = [i for i in only or () if shard_of(i) not in self.lanes]
        for account_id in unknown:
            log.error("account %s is on shard %s, which is not configured", account_id, shard_of(account_id))
        return unknown

    async def acquire(self, account_id: int) -> bool:
        lane = self._lane_of(account_id)
        epoch = await leases.acquire(lane.rounds, account_id, self.owner, LEASE_SECONDS)
        if epoch is None:
            return False
        lane.store.held[account_id] = epoch
        return True

    def _refused(self, account_id: int) -> None:
        """A unit of work of this account was refused (its lease was lost): stop the account's task."""
        metrics.LEASE_REFUSALS.inc()
        task = self._tasks.pop(account_id, None)
        if task is not None:
            task.cancel()

    async def _stop(self, ids: Sequence[int]) -> None:
        tasks = [t for t in (self._tasks.pop(i, None) for i in ids) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _renew(self, lane: Lane) -> None:
        await self._renewed(lane, await leases.renew(lane.rounds, self.owner, LEASE_SECONDS))

    async def _renewed(self, lane: Lane, held: dict[int, int]) -> None:
        """After a renewal that found these leases held by this process: let go of the accounts whose lease it
        lost, give back the leases it did not know it held."""
        # A lease that expired (this process paused, or MySQL away) may have been taken by another process: its
        # account is theirs. Its units are refused already (fencing); the task is stopped here too.
        lost = [i for i, epoch in lane.store.held.items() if held.get(i) != epoch]
        for account_id in lost:
            log.warning("account %s: its lease was taken over; letting it go", account_id)
            lane.store.held.pop(account_id)
        await self._stop(lost)
        # Leases this process does not know it holds (a claim whose commit's answer was lost): given back.
        await leases.release(lane.rounds, self.owner, [i for i in held if i not in lane.store.held])
        metrics.LEASES_HELD.set(self._held())

    async def _release(self, lane: Lane, ids: Sequence[int]) -> None:
        """Stop these accounts' tasks, then give their leases up."""
        await self._stop(ids)
        for account_id in ids:
            lane.store.held.pop(account_id, None)
        await leases.release(lane.rounds, self.owner, ids)

    async def _let_go(self, lane: Lane, present: Sequence[leases.Listed]) -> None:
        """Stop the tasks of the shard's accounts that are gone or being removed, and release their leases."""
        live = {a.id for a in present if a.sync_state != REMOVING}
        running = {i for i in self._tasks if shard_of(i) == lane.shard}
        gone = [account_id for account_id in {*running, *lane.store.held} if account_id not in live]
        if gone:
            await self._release(lane, gone)
            for account_id in sorted(gone):
                log.info("account %s: removed, let go", account_id)

    async def sweep(self) -> None:
        """The write-back executors' safety net, one for the process: ring the bell of every account held whose
        action queue or outbox holds something, so a ring lost (Redis away) delays its work by SAFETY_WAKE at most;
        also in a round that started account tasks, whose executors look at their queue only when rung. (Each
        executor looking at start and on its own timer cost 1,000 accounts four queries each, all at once: at start
        they took the database pool from the syncs until these timed out; bench.thousand_bench.)"""
        for lane in self.lanes.values():
            await self._sweep(lane)

    async def _sweep(self, lane: Lane) -> None:
        async with lane.rounds.sessions() as s:
            waiting = await actions.accounts_pending(s) | await outbox.accounts_queued(s)
        for account_id in waiting & lane.store.held.keys():
            self.bells.event(account_id).set()

    async def expire_changes(self) -> int:
        """Delete change-log entries past the retention on every shard; a client with an older cursor gets
        CURSOR_EXPIRED."""
        return sum([await self._expire(lane) for lane in self.lanes.values()])

    async def _expire(self, lane: Lane) -> int:
        before = utcnow() - timedelta(days=self.change_log_days)
        async with lane.store.sessions() as s, s.begin():
            expired = await changelog.expire(s, None, before)
            keys = await idempotency.expire(s)
            await leases.forget_grants(s, before)  # the lease history is kept as long as the log
        if keys:
            log.info("%d idempotency keys expired", keys)
        return expired

    async def measure(self, present: Sequence[leases.Listed]) -> None:
        """The gauges read from the database (ops.metrics): accounts by state, the action and outbox queues, over
        every shard. A failure costs the figures, never the round."""
        for lane in self.lanes.values():
            lane.present = [a for a in present if shard_of(a.id) == lane.shard]
            await self._depths(lane)
        self._gauges()

    async def _depths(self, lane: Lane) -> None:
        try:
            async with lane.rounds.sessions() as s:
                lane.depths = await _queue_depths(s)
        except DATABASE_DOWN as exc:
            log.info("shard %s: queue depths not measured: %s", lane.shard, _short(exc))

    async def _list(self, lane: Lane, only: Sequence[int] | None) -> list[leases.Listed]:
        """The shard's accounts (those of `only`) and its queue depths, in one session."""
        mine = [i for i in only or () if shard_of(i) == lane.shard]
        async with lane.rounds.sessions() as s:
            present = [] if only and not mine else await leases.listed(s, mine)
            lane.depths = await _queue_depths(s)
        return present

    def _must_list(self, lane: Lane, live: int, rung: bool) -> bool:
        """Whether this round reads the account list: when the accounts bell rang (an account added, removed or
        re-authorized), the live processes changed (one joined, left or died: shares move, leases come free),
        the leases held changed (one lost or refused), the last balance left this process off its share (it
        takes or gives a step a round), an account task ended (its account's state decides whether it starts
        again), and at least every LIST_ROUNDS rounds. An idle round otherwise is the heartbeat alone: the
        balance of an unchanged list and unchanged live count would do nothing."""
        if rung or lane.unlisted + 1 >= LIST_ROUNDS or not lane.settled:
            return True
        return lane.listed != (live, frozenset(lane.store.held), self._ended(lane))

    def _ended(self, lane: Lane) -> frozenset[int]:
        """The shard's accounts whose task ended and was not started again (their account is stopped)."""
        return frozenset(i for i, task in self._tasks.items() if task.done() and shard_of(i) == lane.shard)

    def _gauges(self) -> None:
        lanes = self.lanes.values()
        metrics.set_accounts(a.sync_state for lane in lanes for a in lane.present)
        metrics.ACTION_QUEUE.set(sum(lane.depths[0] for lane in lanes))
        metrics.OUTBOX.set(sum(lane.depths[1] for lane in lanes))

    async def run_once(self, only: Sequence[int] | None = None) -> int:
        """Sync the accounts until caught up; returns a process exit code."""
        failures = len(self._unknown_shards(only))
        present: list[leases.Listed] = []
        for lane in self.lanes.values():
            try:
                present += await self._accounts(lane, only)
            except DATABASE_DOWN as exc:  # the other shards' accounts are synced all the same
                log.error("shard %s: unavailable, its accounts are not synced: %s", lane.shard, _short(exc))
                failures += 1
        await self.measure(present)
        renewing = asyncio.create_task(self._keep_renewing(), name="lease-renewal")
        try:
            failures += await self._sync_each_once(present)
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
        return 1 if failures else 0

    async def _sync_each_once(self, present: Sequence[leases.Listed]) -> int:
        failures = 0
        for account in present:
            if account.sync_state == REMOVING:
                continue
            if account.sync_state in (AUTH_FAILED, NEEDS_CONSENT):
                log.warning("account %s: skipped, its login was refused (%s)", account.id, account.sync_state)
                failures += 1
                continue
            if not await self._wait_for_lease(account.id):
                log.error("account %s is being synced by another process", account.id)
                failures += 1
                continue
            lane = self._lane_of(account.id)
            try:
                await AccountSync(
                    lane.store, self.box, account.id, self.tuning, self.parser, tokens=lane.tokens
                ).run_once()
            except Exception as exc:
                log.error("account %s: %s: %s", account.id, type(exc).__name__, exc)
                failures += 1
            finally:
                await self._release(lane, [account.id])
        return failures

    async def _wait_for_lease(self, account_id: int) -> bool:
        """Take the account's lease, waiting out one that its holder stopped renewing (a process killed or
        paused): liveness is renewal, so such a lease is free within a lease period. False: still held after it
        (another process is syncing the account)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LEASE_SECONDS + RESCAN_SECONDS
        told = False
        while not await self.acquire(account_id):
            if loop.time() >= deadline:
                return False
            if not told:
                log.info("account %s: its lease is held; waiting up to %d s for it", account_id, LEASE_SECONDS)
                told = True
            await asyncio.sleep(0.5)
        return True

    async def _keep_renewing(self) -> None:
        """Renew the leases of a `--once` run as the rounds of a following process do: a sync longer than a lease
        period keeps its account, and its units stay unrefused."""
        while True:
            await asyncio.sleep(RESCAN_SECONDS)
            for lane in self.lanes.values():
                try:
                    await self._renew(lane)
                except DATABASE_DOWN as exc:
                    log.info("shard %s: leases not renewed: %s", lane.shard, _short(exc))

    async def run_forever(self, only: Sequence[int] | None = None) -> None:
        """Sync until cancelled, or until an operator drains this process (then its leases are handed over).

        Each shard has a round loop of its own (`_follow`): a shard whose server is away waits for it with
        backoff while the others' rounds go on."""
        if self._bells_task is None:
            self._bells_task = asyncio.create_task(self.bells.run(), name="action-bells")
        self._unknown_shards(only)
        log.info("sync process %s (group %s) started", self.owner, self.group or "-")
        follows = [
            asyncio.create_task(self._follow(lane, only), name=f"shard-{lane.shard}") for lane in self.lanes.values()
        ]
        try:
            done, _ = await asyncio.wait(follows, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in follows:
                task.cancel()
            await asyncio.gather(*follows, return_exceptions=True)
        for task in done:
            task.result()  # a round's unexpected error ends the process, as it always did
        # An operator asked this process to drain (fleet drain asks every shard): hand every shard's accounts over.
        count = self._held()
        for lane in self.lanes.values():
            try:
                await self._release(lane, list(lane.store.held))
                await leases.leave(lane.rounds, self.owner)
            except DATABASE_DOWN as exc:  # they expire by themselves
                log.warning("shard %s: leases not handed over: %s", lane.shard, _short(exc))
        log.info("drained: %d accounts handed over", count)

    async def _follow(self, lane: Lane, only: Sequence[int] | None) -> None:
        """The rounds of one shard, until an operator drains this process."""
        lane.expire_due = 0.0
        waiting = Backoff(0.5, 30.0)
        loop = asyncio.get_running_loop()
        while True:
            began = loop.time()
            try:
                if not await self._round(lane, only):
                    return
            except DATABASE_DOWN as exc:
                delay = waiting.next()
                log.warning(
                    "shard %s: database unavailable (%s); trying again in %.1f s", lane.shard, _short(exc), delay
                )
                await asyncio.sleep(delay)
                continue
            if waiting.attempt:
                log.info("shard %s: database available again", lane.shard)
                waiting.reset()
            # Rounds keep their pace however long one took (renewals must not drift toward the lease's end); an
            # account added, removed or re-authorized (the accounts bell, synccore.bells) starts the next at once.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lane.bell.wait(), max(0.1, began + RESCAN_SECONDS - loop.time()))

    async def _round(self, lane: Lane, only: Sequence[int] | None) -> bool:
        """Beat, renew the shard's leases, take or give up its accounts toward this process's share, start a task
        for each account held that has none, expire the log. False when an operator asked this process to drain."""
        loop = asyncio.get_running_loop()
        rung = lane.bell.is_set()
        lane.bell.clear()  # a ring from now on is for the next round
        # Renewal first (with the heartbeat): a round of a busy process can take seconds, and the lease must not
        # wait for the rest.
        forget = loop.time() >= lane.forget_due
        beat = await leases.heartbeat(lane.rounds, self.owner, self.group, LEASE_SECONDS, forget=forget)
        if forget:
            lane.forget_due = loop.time() + FORGET_EVERY
        if beat.draining:
            return False
        await self._renewed(lane, beat.held)
        listing = self._must_list(lane, beat.live, rung)
        if listing:
            lane.unlisted = 0
            present = await self._list(lane, only)
            await self._let_go(lane, present)
            lane.present = present
            self._gauges()
            lane.settled = await self._balance(lane, present, beat.live, everything=bool(only))
        else:
            lane.unlisted += 1
        started = False
        for account in lane.present:
            if account.id not in lane.store.held or account.sync_state in STOPPED:
                continue
            task = self._tasks.get(account.id)
            if task is not None and not task.done():
                continue
            if task is not None and not task.cancelled() and task.exception() is not None:
                log.warning("account %s: its task ended: %s; starting it again", account.id, task.exception())
            bell = self.bells.event(account.id)
            sync = AccountSync(
                lane.store,
                self.box,
                account.id,
                self.tuning,
                self.parser,
                bell,
                lane.tokens,
                self.ramp,
                self.pass_slots,
            )
            self._tasks[account.id] = asyncio.create_task(sync.run_forever(), name=f"account-{account.id}")
            started = True
            log.info("account %s: syncing (lease epoch %s)", account.id, lane.store.held[account.id])
        if listing:
            lane.listed = (beat.live, frozenset(lane.store.held), self._ended(lane))
        if started or loop.time() >= lane.sweep_due:  # an executor started looks at its queue when rung
            await self._sweep(lane)
            lane.sweep_due = loop.time() + SAFETY_WAKE
        if loop.time() >= lane.expire_due:
            try:
                log.info("change log: %s entries expired", await self._expire(lane))
            except Exception as exc:  # the next round tries again
                log.warning("change log expiry failed: %s", exc)
            lane.expire_due = loop.time() + EXPIRE_SECONDS
        return True

    async def _balance(self, lane: Lane, present: Sequence[leases.Listed], live: int, *, everything: bool) -> bool:
        """Take free leases of the shard up to this process's share of it, or give surplus back, a step a round.
        Accounts pinned to another group are given back at once. With `everything` (`--account`), the share is all
        of them. (Each shard is balanced on its own: its live processes are those beating on it.) True when this
        process holds its share (or every account it could) and gave nothing back: settled."""
        held = lane.store.held
        ours = [a for a in present if a.lease_group == self.group and a.sync_state != REMOVING]
        foreign = [a.id for a in present if a.lease_group != self.group and a.id in held]
        if foreign:
            await self._release(lane, foreign)
            log.info("accounts %s: pinned to another group, let go", foreign)
        share = len(ours) if everything else math.ceil(len(ours) / max(1, live))
        step = len(ours) if everything else step_of(share)
        mine = sorted(a.id for a in ours if a.id in held)
        settled = not foreign
        if len(mine) > share:
            surplus = mine[share:][:step]
            await self._release(lane, surplus)
            log.info("accounts %s: handed over (share %d of %d live processes)", surplus, share, live)
            settled = False
        elif len(mine) < share:
            candidates = [a.id for a in ours if a.id not in held and a.sync_state not in STOPPED]
            taken = await leases.claim(lane.rounds, self.owner, candidates, LEASE_SECONDS, min(step, share - len(mine)))
            held.update(taken)
            # Short of its share with accounts left to take (free, or held elsewhere: one may come free any time).
            settled = settled and not candidates
        metrics.LEASES_HELD.set(self._held())
        return settled


async def _queue_depths(s: AsyncSession) -> tuple[int, int]:
    """The write-back queue's and the outbox's depths (ops.metrics), in one statement."""
    row = (await s.execute(select(actions.pending_count(), outbox.waiting_count()))).one()
    return int(row[0] or 0), int(row[1] or 0)


def _short(exc: BaseException) -> str:
    # SQLAlchemy's text of a driver error adds the statement and a link: the first line says what happened.
    return str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
