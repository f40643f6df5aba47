"""The sync process: owns accounts through leases in MySQL and runs one task per account.

A lease names its owner as host:pid:nonce and lasts LEASE_SECONDS unless renewed. A lease whose owner ran
on this host and is dead (killed, crashed) is taken over at once, so a restart does not wait it out.

An account being removed (schema.accounts.remove marks it REMOVING, then deletes it) is let go at the next rescan:
its task is cancelled and its lease released, and it is never taken again.

MySQL going away (a restart, a failover) does not end the process: the supervisor waits for it with backoff,
the account tasks retry with theirs, and an account whose lease another process took meanwhile is let go.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Sequence
from datetime import timedelta

from redis.asyncio import Redis
from sqlalchemy.exc import InterfaceError, OperationalError

from ops import metrics
from schema import actions, changelog, idempotency, leases, outbox
from schema.accounts import AUTH_FAILED, NEEDS_CONSENT, REMOVING, STOPPED
from schema.crypto import CredentialBox
from schema.db import create_engine, pool_use
from schema.models import Account, utcnow
from schema.redisconn import connect
from schema.settings import Settings
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.backoff import Backoff
from synccore.bells import Bells
from synccore.parsing import ParsePool, default_workers
from synccore.tokens import TokenKeeper

log = logging.getLogger(__name__)

LEASE_SECONDS = 60
RENEW_SECONDS = 20
RESCAN_SECONDS = 10
# Change-log entries older than INBOXQL_CHANGE_LOG_DAYS (30) are deleted this often (schema.changelog.expire).
EXPIRE_SECONDS = 3600
# What the driver raises while MySQL is unreachable (refused, reset, gone away): wait, then go on.
DATABASE_DOWN = (OperationalError, InterfaceError, OSError)


def _owner_alive(owner: str) -> bool:
    host, _, rest = owner.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return True  # another machine's: trust its expiry
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Supervisor:
    def __init__(self, settings: Settings, tuning: Tuning | None = None) -> None:
        self.settings = settings
        self.tuning = tuning or Tuning()
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self.engine = create_engine(settings.database_url)
        self._untrack_pool = metrics.track_pool(lambda: pool_use(self.engine))
        # Short timeouts (schema.redisconn): rings are bounded; the action bells read with their own timeout.
        self.redis: Redis = connect(settings.redis_url)
        self.store = Store(self.engine, self.redis)
        self.box = CredentialBox(settings.key_ring())
        # One keeper of OAuth2 access tokens for every account of this process (synccore.tokens).
        self.tokens = TokenKeeper(self.store, self.box)
        self.parser = ParsePool(default_workers())
        self.bells = Bells(self.redis, self.store.doorbells)
        self._bells_task: asyncio.Task[None] | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._renew_due = self._expire_due = 0.0  # loop times of run_forever's next renewal and expiry
        self.change_log_days = float(os.environ.get("INBOXQL_CHANGE_LOG_DAYS", "30"))

    async def close(self) -> None:
        tasks = [*self._tasks.values(), *([self._bells_task] if self._bells_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._release(list(self._tasks))
        await self.redis.aclose()
        await self.engine.dispose()
        self._untrack_pool()
        # Joining the worker processes takes over half a second: off the loop (the stall detector caught it).
        await asyncio.to_thread(self.parser.close)

    async def accounts(self, only: Sequence[int] | None = None) -> list[Account]:
        return await leases.accounts(self.store, only)

    async def acquire(self, account_id: int) -> bool:
        return await leases.acquire(self.store, account_id, self.owner, LEASE_SECONDS, _owner_alive)

    async def _renew(self) -> None:
        held = await leases.renew(self.store, self.owner, LEASE_SECONDS)
        # A lease that expired while MySQL was away may have been taken by another process: its account is theirs.
        for account_id, task in self._tasks.items():
            if account_id not in held and not task.done():
                log.warning("account %s: its lease was taken over; letting it go", account_id)
                task.cancel()

    async def _release(self, ids: list[int]) -> None:
        await leases.release(self.store, self.owner, ids)

    async def _let_go(self, present: Sequence[Account]) -> None:
        """Stop the tasks of accounts that are gone or being removed, and release their leases."""
        live = {a.id for a in present if a.sync_state != REMOVING}
        gone = [account_id for account_id in self._tasks if account_id not in live]
        for account_id in gone:
            task = self._tasks.pop(account_id)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            log.info("account %s: removed, let go", account_id)
        await self._release(gone)

    async def expire_changes(self) -> int:
        """Delete change-log entries past the retention; a client with an older cursor gets CURSOR_EXPIRED."""
        before = utcnow() - timedelta(days=self.change_log_days)
        async with self.store.sessions() as s, s.begin():
            expired = await changelog.expire(s, None, before)
            keys = await idempotency.expire(s)
        if keys:
            log.info("%d idempotency keys expired", keys)
        return expired

    async def measure(self, present: Sequence[Account]) -> None:
        """The gauges read from the database (ops.metrics): accounts by state, the action and outbox queues.
        A failure costs the figures, never the round."""
        metrics.set_accounts(a.sync_state for a in present)
        try:
            async with self.store.sessions() as s:
                metrics.ACTION_QUEUE.set(await actions.pending_count(s))
                metrics.OUTBOX.set(await outbox.waiting_count(s))
        except DATABASE_DOWN as exc:
            log.info("queue depths not measured: %s", _short(exc))

    async def run_once(self, only: Sequence[int] | None = None) -> int:
        """Sync the accounts until caught up; returns a process exit code."""
        failures = 0
        present = await self.accounts(only)
        await self.measure(present)
        for account in present:
            if account.sync_state == REMOVING:
                continue
            if account.sync_state in (AUTH_FAILED, NEEDS_CONSENT):
                log.warning("account %s: skipped, its login was refused (%s)", account.id, account.sync_state)
                failures += 1
                continue
            if not await self.acquire(account.id):
                log.error("account %s is being synced by another process", account.id)
                failures += 1
                continue
            try:
                await AccountSync(
                    self.store, self.box, account.id, self.tuning, self.parser, tokens=self.tokens
                ).run_once()
            except Exception as exc:
                log.error("account %s: %s: %s", account.id, type(exc).__name__, exc)
                failures += 1
            finally:
                await self._release([account.id])
        return 1 if failures else 0

    async def run_forever(self, only: Sequence[int] | None = None) -> None:
        self._renew_due = self._expire_due = 0.0
        if self._bells_task is None:
            self._bells_task = asyncio.create_task(self.bells.run(), name="action-bells")
        waiting = Backoff(0.5, 30.0)
        while True:
            try:
                await self._round(only)
            except DATABASE_DOWN as exc:
                delay = waiting.next()
                log.warning("database unavailable (%s); trying again in %.1f s", _short(exc), delay)
                await asyncio.sleep(delay)
                continue
            if waiting.attempt:
                log.info("database available again")
                waiting.reset()
            await asyncio.sleep(RESCAN_SECONDS if not only else min(RESCAN_SECONDS, RENEW_SECONDS))

    async def _round(self, only: Sequence[int] | None) -> None:
        """Start a task for each account that has none and whose lease is free; renew leases; expire the log."""
        loop = asyncio.get_running_loop()
        present = await self.accounts(only)
        await self._let_go(present)
        await self.measure(present)
        for account in present:
            task = self._tasks.get(account.id)
            if task is not None and not task.done():
                continue
            if task is not None and not task.cancelled() and task.exception() is not None:
                log.warning("account %s: its task ended: %s; starting it again", account.id, task.exception())
            if account.sync_state in STOPPED:
                continue
            if await self.acquire(account.id):
                bell = self.bells.event(account.id)
                sync = AccountSync(self.store, self.box, account.id, self.tuning, self.parser, bell, self.tokens)
                self._tasks[account.id] = asyncio.create_task(sync.run_forever(), name=f"account-{account.id}")
                log.info("account %s: syncing", account.id)
        if loop.time() >= self._renew_due:
            await self._renew()
            self._renew_due = loop.time() + RENEW_SECONDS
        if loop.time() >= self._expire_due:
            try:
                log.info("change log: %s entries expired", await self.expire_changes())
            except Exception as exc:  # the next round tries again
                log.warning("change log expiry failed: %s", exc)
            self._expire_due = loop.time() + EXPIRE_SECONDS


def _short(exc: BaseException) -> str:
    # SQLAlchemy's text of a driver error adds the statement and a link: the first line says what happened.
    return str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
