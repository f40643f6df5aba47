"""A fleet of `inboxql sync` processes: how long a killed process's accounts wait for a new holder, how long a
joining process takes to reach its share, how long a drain takes.

    .venv/bin/python -m bench.fleet_bench [--accounts 30] [--processes 3] [--messages 8] [--repeat 3]

A private Dovecot gets `--accounts` users with a few generated messages each; a fresh database gets the accounts;
`--processes` sync processes start and share them. Then, `--repeat` times: one process is SIGKILLed and
replaced by a new one, and another is drained (`inboxql fleet drain`) and replaced. Measured:

    failover: from the SIGKILL until every account it held is held by another process;
    its floor, measured in the same run: from the SIGKILL until the last of its leases expired (what no design
        without a second liveness signal can beat; the difference is the survivors' take-over);
    join: from a new process's start until every process holds no more than its share (accounts / processes,
        rounded up);
    drain: from `inboxql fleet drain` until the process exited 0 and each of its accounts is held by another.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import datetime

from sqlalchemy import func, select, text

from bench import common
from inboxql.devmail import DovecotServer
from schema import accounts
from schema.crypto import CredentialBox
from schema.db import create_engine
from schema.models import Account, SyncProcess
from schema.settings import Settings
from schema.unit import Store
from synccore.supervisor import LEASE_SECONDS, RESCAN_SECONDS


class Fleet:
    def __init__(self, store: Store, env: dict[str, str]) -> None:
        self.store = store
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    async def start(self) -> str:
        proc = subprocess.Popen(
            [*common.inboxql_command(), "sync", "--poll-interval", "5"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while True:
            async with self.store.sessions() as s:
                owner = await s.scalar(select(SyncProcess.owner).where(SyncProcess.owner.like(f"%:{proc.pid}:%")))
            if owner is not None:
                self.procs[owner] = proc
                return owner
            if proc.poll() is not None:
                raise common.BenchError(f"inboxql sync exited {proc.returncode}")
            await asyncio.sleep(0.1)

    async def holders(self) -> dict[int, str | None]:
        async with self.store.sessions() as s:
            rows = await s.execute(
                select(Account.id, Account.lease_owner, Account.lease_expires_at > func.utc_timestamp(6))
            )
            return {i: (owner if running else None) for i, owner, running in rows}

    async def db_now(self) -> datetime:
        async with self.store.sessions() as s:
            now: datetime = (await s.execute(text("SELECT UTC_TIMESTAMP(6)"))).scalar_one()
        return now

    async def until(self, check: Callable[[], Awaitable[bool]], limit: float = 180) -> float:
        started = time.monotonic()
        async with asyncio.timeout(limit):
            while not await check():
                await asyncio.sleep(0.05)
        return time.monotonic() - started

    def balanced(self, holders: dict[int, str | None]) -> bool:
        live = list(self.procs)
        share = math.ceil(len(holders) / len(live))
        counts = [list(holders.values()).count(o) for o in live]
        return None not in holders.values() and max(counts) <= share

    async def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


async def _run(args: argparse.Namespace, url: str, dovecot: DovecotServer) -> dict[str, list[float]]:
    env = common.cli_env(url)
    settings = Settings(url, common.REDIS_URL, env["INBOXQL_SECRET_KEY"], None)
    engine = create_engine(url, pool_size=2)
    store = Store(engine)
    box = CredentialBox(settings.key_ring())
    for n in range(args.accounts):
        user, password = common.new_user(dovecot)
        common.seed_mailbox(dovecot, user, password, args.messages, seed=n + 1)
        endpoint = accounts.ImapEndpoint(dovecot.host, dovecot.port, "none", user)
        await accounts.create(store, box, f"{user}@example.test", endpoint, password)
    fleet = Fleet(store, env)
    figures: dict[str, list[float]] = {"failover": [], "floor": [], "join": [], "drain": []}
    try:
        for _ in range(args.processes):
            await fleet.start()

        async def balanced() -> bool:
            return fleet.balanced(await fleet.holders())

        took = await fleet.until(balanced)
        print(f"{args.processes} processes took {args.accounts} accounts, balanced, in {took:.1f} s")
        for run in range(args.repeat):
            victim = next(iter(fleet.procs))
            held = {i for i, o in (await fleet.holders()).items() if o == victim}
            fleet.procs.pop(victim).send_signal(signal.SIGKILL)
            killed_at = await fleet.db_now()
            async with store.sessions() as s:
                expiry = await s.scalar(select(func.max(Account.lease_expires_at)).where(Account.lease_owner == victim))
            floor = max(0.0, ((expiry or killed_at) - killed_at).total_seconds())

            async def taken_over(held: set[int] = held, victim: str = victim) -> bool:
                holders = await fleet.holders()
                return all(holders[i] not in (None, victim) for i in held)

            failover = await fleet.until(taken_over)
            figures["failover"].append(failover)
            figures["floor"].append(floor)
            started = time.monotonic()
            await fleet.start()
            await fleet.until(balanced)
            figures["join"].append(time.monotonic() - started)

            leaving = next(iter(fleet.procs))
            held = {i for i, o in (await fleet.holders()).items() if o == leaving}
            started = time.monotonic()
            common.run_cli(["fleet", "drain", leaving], env, timeout=60)
            proc = fleet.procs.pop(leaving)

            async def drained(
                held: set[int] = held, leaving: str = leaving, proc: subprocess.Popen[bytes] = proc
            ) -> bool:
                holders = await fleet.holders()
                return proc.poll() == 0 and all(holders[i] not in (None, leaving) for i in held)

            await fleet.until(drained)
            figures["drain"].append(time.monotonic() - started)
            await fleet.start()
            await fleet.until(balanced)
            print(
                f"run {run + 1}: failover {failover:.1f} s (floor {floor:.1f} s, {len(held)} accounts), "
                f"join {figures['join'][-1]:.1f} s, drain {figures['drain'][-1]:.1f} s"
            )
    finally:
        await fleet.stop_all()
        await engine.dispose()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=30)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--messages", type=int, default=8, help="messages in each account")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    common.check_services()
    print(common.machine())
    print(f"lease {LEASE_SECONDS} s, a round every {RESCAN_SECONDS} s; load before: {common.load_average()}")
    with common.private_dovecot() as dovecot, common.throwaway_database("inboxql_fleet_bench") as url:
        figures = asyncio.run(_run(args, url, dovecot))
    print(f"load after: {common.load_average()}")
    for name, values in figures.items():
        print(
            f"{name:8s} median {statistics.median(values):5.1f} s, "
            f"min {min(values):5.1f} s, max {max(values):5.1f} s over {len(values)}"
        )
    takeover = [f - b for f, b in zip(figures["failover"], figures["floor"], strict=True)]
    print(f"take-over after the floor: median {statistics.median(takeover):.1f} s, max {max(takeover):.1f} s")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
