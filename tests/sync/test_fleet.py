"""A fleet of real `inboxql sync` processes shares many accounts under a random IMAP workload: one is killed, one
paused past its lease and resumed, one drained, one started; at the end every account is identical, no epoch
committed after the next one was taken, the paused process wrote nothing under the leases it lost, and a
change-feed consumer saw every change once.

The issue asks for 200 accounts; on this test's two shared cores, four sync processes (each with its parse
workers) beside Dovecot and MariaDB take 30 (FLEET_ACCOUNTS) within a few minutes (about 4 on a quiet machine,
up to 10 when five other test runs share the cores: hang_seconds). Every account is compared with its server by
synccore.verify, what `inboxql verify` runs; the command itself runs on a few.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import random
import re
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import changelog
from schema.crypto import CredentialBox
from schema.db import create_database, create_engine, drop_database
from schema.migrate import upgrade
from schema.models import Account, LeaseGrant, SyncProcess
from schema.settings import Settings
from schema.unit import Store
from synccore.supervisor import LEASE_SECONDS
from synccore.verify import verify
from tests.conftest import fresh_database_url, new_user
from tests.sync.support import add_account, connect
from tests.sync.workload import Workload

FLEET_ACCOUNTS = int(os.environ.get("INBOXQL_TEST_FLEET_ACCOUNTS", "30"))
CLI_VERIFIES = 6
INBOXQL = str(Path(sys.executable).with_name("inboxql"))


class _ManyUsersDovecot(DovecotServer):
    """Every account holds two IMAP connections, and a paused process keeps its own open while its accounts'
    new holders open theirs: more than Dovecot's default 100 imap processes."""

    def _prepare(self) -> None:
        super()._prepare()
        with self.config_file.open("a") as config:
            config.write("service imap {\n  process_limit = 1000\n}\n")


@pytest.fixture(scope="module")
def fleet_dovecot() -> Iterator[DovecotServer]:
    root = Path(tempfile.mkdtemp(prefix="inboxql-fleet-dovecot-"))
    server = _ManyUsersDovecot(root)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@dataclass
class Fleet:
    url: str
    store: Store
    env: dict[str, str]
    logs: Path
    procs: dict[str, asyncio.subprocess.Process] = field(default_factory=dict)

    async def start(self, name: str) -> str:
        """Start `inboxql sync` as `name`; its owner name once it has beaten."""
        with (self.logs / f"{name}.log").open("wb") as log:
            self.procs[name] = await asyncio.create_subprocess_exec(
                INBOXQL, "sync", "--poll-interval", "2", env=self.env, stdout=log, stderr=log
            )
        pid = self.procs[name].pid
        async with asyncio.timeout(60):
            while True:
                async with self.store.sessions() as s:
                    found = await s.scalar(select(SyncProcess.owner).where(SyncProcess.owner.like(f"%:{pid}:%")))
                if found is not None:
                    return found
                assert self.procs[name].returncode is None, self.log(name)[-3000:]
                await asyncio.sleep(0.2)

    async def run(self, *args: str) -> int:
        """An `inboxql` command's exit code (killed if the test ends first)."""
        proc = await asyncio.create_subprocess_exec(INBOXQL, *args, env=self.env, stdout=asyncio.subprocess.DEVNULL)
        try:
            return await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")

    async def holders(self) -> dict[int, str | None]:
        """Each account's holder while its lease runs (None: free or expired)."""
        async with self.store.sessions() as s:
            rows = await s.execute(
                select(Account.id, Account.lease_owner, Account.lease_expires_at > func.utc_timestamp(6))
            )
            return {i: (owner if running else None) for i, owner, running in rows}

    async def wait_for(self, what: str, check: Callable[[], Awaitable[bool]], seconds: float = 120) -> float:
        """Poll until `check()` is true; the time it took."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with asyncio.timeout(seconds):
            while not await check():
                for name, proc in self.procs.items():
                    assert proc.returncode in (None, 0, -signal.SIGKILL), f"{name} ended: {self.log(name)[-3000:]}"
                await asyncio.sleep(0.25)
        took = loop.time() - started
        print(f"fleet: {what} after {took:.1f} s")
        return took

    async def db_now(self) -> datetime:
        async with self.store.sessions() as s:
            now: datetime = (await s.execute(text("SELECT UTC_TIMESTAMP(6)"))).scalar_one()
        return now


@contextlib.asynccontextmanager
async def _fleet(settings: Settings, tmp_path: Path) -> AsyncIterator[Fleet]:
    url = fresh_database_url("inboxql_fleet")
    await create_database(url)
    await asyncio.to_thread(upgrade, url)
    engine = create_engine(url, pool_size=4)
    env = {
        **os.environ,
        "INBOXQL_DATABASE_URL": url,
        "INBOXQL_REDIS_URL": settings.redis_url,
        "INBOXQL_SECRET_KEY": settings.secret_key,
    }
    fleet = Fleet(url, Store(engine), env, tmp_path)
    try:
        yield fleet
    finally:
        for proc in fleet.procs.values():
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGCONT)
                    proc.kill()
                await asyncio.wait_for(proc.wait(), timeout=30)
        await engine.dispose()
        await drop_database(url)


class Consumer:
    """A change-feed reader of every account from its cursor, as the gateway's `changes` feed reads."""

    def __init__(self, store: Store, ids: list[int]) -> None:
        self.store = store
        self.seen: dict[int, list[int]] = {i: [] for i in ids}

    async def catch_up(self) -> None:
        async with self.store.sessions() as s:
            for account_id, seqs in self.seen.items():
                for change in await changelog.read(s, account_id, seqs[-1] if seqs else 0):
                    seqs.append(change.seq)

    async def run(self) -> None:
        while True:
            await self.catch_up()
            await asyncio.sleep(0.3)


async def _workload(dovecot: DovecotServer, users: list[tuple[str, str]], extra: asyncio.Queue[int]) -> None:
    """Random IMAP steps on random accounts (a few at a time), and an APPEND to each account put in `extra`."""
    rng = random.Random(11)
    loads: dict[int, Workload] = {}
    mail = generate(100_000, seed=12)
    while True:
        while not extra.empty():
            n = extra.get_nowait()
            client = await connect(dovecot, *users[n])
            await client.append("INBOX", next(mail), [])
            await client.logout()
        n = rng.randrange(len(users))
        client = await connect(dovecot, *users[n])
        load = loads.setdefault(n, Workload(client, seed=100 + n))
        load.client = client
        for _ in range(3):
            await load.step()
        await client.logout()
        await asyncio.sleep(0.2)


async def _identical(store: Store, box: CredentialBox, ids: list[int]) -> bool:
    for account_id in ids:
        if await verify(store, box, account_id):
            return False
    return True


def _handled(log: str, account_id: int) -> bool:
    """The process's log says it let the account go after losing its lease, or refused a write of it."""
    return re.search(rf"account {account_id}: (its lease was taken over|write refused)", log) is not None


@pytest.mark.hang_seconds(900)
async def test_a_fleet_survives_a_kill_a_pause_a_drain_and_a_start_with_every_account_identical(
    settings: Settings, credential_box: CredentialBox, fleet_dovecot: DovecotServer, tmp_path: Path
) -> None:
    dovecot = fleet_dovecot
    async with _fleet(settings, tmp_path) as fleet:
        store = fleet.store
        users = [new_user(dovecot) for _ in range(FLEET_ACCOUNTS)]
        ids = []
        for n, (user, password) in enumerate(users):
            dovecot.append(user, password, "INBOX", list(generate(4 + n % 12, seed=300 + n)))
            ids.append(await add_account(store, credential_box, dovecot, user, password))
        consumer = Consumer(store, ids)
        extra: asyncio.Queue[int] = asyncio.Queue()
        background = [
            asyncio.create_task(consumer.run(), name="consumer"),
            asyncio.create_task(_workload(dovecot, users, extra), name="workload"),
        ]
        try:
            one, two, three = [await fleet.start(name) for name in ("one", "two", "three")]

            # Balanced: every account is held, none of the three more than its share.
            async def all_held() -> bool:
                holders = await fleet.holders()
                counts = [list(holders.values()).count(o) for o in (one, two, three)]
                return None not in holders.values() and max(counts) <= math.ceil(len(ids) / 3)

            await fleet.wait_for("three processes hold every account, balanced", all_held)
            print("fleet: held", {o: list((await fleet.holders()).values()).count(o) for o in (one, two, three)})

            async def ready() -> bool:
                async with store.sessions() as s:
                    states = set(await s.scalars(select(Account.sync_state)))
                return states == {"ready"}

            await fleet.wait_for("every account synced once", ready, 240)

            # Killed: its accounts are taken over once its leases expire.
            killed = {i for i, o in (await fleet.holders()).items() if o == one}
            fleet.procs["one"].kill()

            async def taken_over() -> bool:
                holders = await fleet.holders()
                return all(holders[i] in (two, three) for i in killed)

            failover = await fleet.wait_for(f"{len(killed)} accounts of the killed process taken over", taken_over)
            print(f"fleet: failover {failover:.1f} s (lease {LEASE_SECONDS} s)")

            # Paused past its lease: the other process takes everything; mail comes to the paused one's accounts.
            paused = {i for i, o in (await fleet.holders()).items() if o == two}
            fleet.procs["two"].send_signal(signal.SIGSTOP)
            for n, account_id in enumerate(ids):
                if account_id in paused:
                    extra.put_nowait(n)

            async def all_with_three() -> bool:
                return set((await fleet.holders()).values()) == {three}

            await fleet.wait_for("the paused process's accounts taken over", all_with_three)
            resumed_at = await fleet.db_now()
            fleet.procs["two"].send_signal(signal.SIGCONT)

            async def let_go() -> bool:
                log = fleet.log("two")
                return all(_handled(log, i) for i in paused)

            await fleet.wait_for("the resumed process let every lost account go", let_go)

            # Drained: it hands its accounts over and exits 0.
            assert await fleet.run("fleet", "drain", three) == 0
            assert await asyncio.wait_for(fleet.procs["three"].wait(), timeout=60) == 0
            assert "drained" in fleet.log("three")

            # Started: the two live processes end with half each, handed over gradually.
            four = await fleet.start("four")

            async def halves() -> bool:
                counts = [list((await fleet.holders()).values()).count(o) for o in (two, four)]
                return counts == [len(ids) // 2, len(ids) - len(ids) // 2] or counts == [
                    len(ids) - len(ids) // 2,
                    len(ids) // 2,
                ]

            await fleet.wait_for("the started process holds its half", halves)

            assert not background[1].done(), background[1].exception()
            background[1].cancel()
            await asyncio.gather(background[1], return_exceptions=True)
            await fleet.wait_for("every account identical", lambda: _identical(store, credential_box, ids), 300)
            # The command itself, on the accounts the paused process lost (the others went through the same check).
            for account_id in sorted(paused)[:CLI_VERIFIES]:
                assert await fleet.run("verify", str(account_id)) == 0, account_id
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)

        # A change-feed consumer saw each change once, in order, none missing.
        await consumer.catch_up()
        async with store.sessions() as s:
            for account_id, seqs in consumer.seen.items():
                assert seqs == list(range(1, await changelog.newest_seq(s, account_id) + 1)), account_id

            # One writer at a time: each epoch's last commit came before the next epoch was taken.
            grants = list(await s.scalars(select(LeaseGrant).order_by(LeaseGrant.account_id, LeaseGrant.epoch)))
        by_account: dict[int, list[LeaseGrant]] = {}
        for grant in grants:
            by_account.setdefault(grant.account_id, []).append(grant)
        for account_grants in by_account.values():
            for before, after in itertools.pairwise(account_grants):
                assert after.epoch == before.epoch + 1
                assert before.last_commit_at is None or before.last_commit_at < after.taken_at, (before, after)
        # The paused process wrote nothing under the leases it lost once it woke up.
        for account_id in paused:
            lost = [g for g in by_account[account_id] if g.owner == two and g.taken_at < resumed_at]
            assert lost
            assert all(g.last_commit_at is None or g.last_commit_at < resumed_at for g in lost)
        refusals = sum(fleet.log(name).count("write refused") for name in fleet.procs)
        paused_refusals = fleet.log("two").count("write refused")
        print(f"fleet: {len(grants)} lease grants; {refusals} writes refused ({paused_refusals} by the paused one)")
