"""1,000 accounts in one `inboxql sync` process: first full sync, idle memory and CPU, push latency.

    .venv/bin/python -m bench.thousand_bench [--accounts 1000] [--idle-seconds 120] [--appends 300]

A private Dovecot (its process limits raised, `--dovecot-limits`) gets `--accounts` users with 10 to 200
generated messages each (random, seeded; MULTIAPPEND, several users at once); a fresh database gets the accounts.

    baseline: `inboxql sync` with no account: RSS of it and its children, CPU over `--baseline-seconds`;
    first sync: one `inboxql sync` takes every account; from its start until every account is `ready` with every
        message mirrored; the most IMAP connections Dovecot held meanwhile;
    idle: after `--settle` s, RSS of the process and its children (the parse workers) over the account count,
        minus the baseline; their CPU over `--idle-seconds`, scaled to an hour and as a share of one core (Dovecot's
        and MariaDB's CPU meanwhile beside it); IMAP connections per account (Dovecot's `imap` processes); where
        the process's busy samples went meanwhile (its sampler, through `--metrics-port`);
    push: `--appends` APPENDs to INBOX, each to an account drawn at random, spread over time (one every
        `--append-gap` s, at most one at a time per account). For each, from the APPEND's tagged OK: (a) a bare IDLE
        client (a raw IMAP connection IDLE on that account's INBOX, opened before) sees `* n EXISTS`; (b) the
        account's doorbell (Redis, schema.doorbell) rings with a seq above the one before the APPEND. Besides,
        `--archive-appends` APPENDs to Archive (no IDLE there: how long a change in another folder waits).

Every Dovecot `imap` process runs as one user (nobody), and each watches its mailbox with an inotify instance: past
`fs.inotify.max_user_instances` (Debian's default is 128) Dovecot stops watching and looks on a timer, so even a bare
IDLE client hears of new mail seconds late. Run as root, the bench raises that limit to `--inotify-instances` for
its run and puts the old value back at the end (it says so); otherwise it says the push figures are not valid.

Goals (issue 11): <= 200 KB per idle account, idle CPU under 2% of a core, p99 of (b) within 100 ms of (a)'s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import common
from bench.common import BenchError
from bench.push_bench import RawImap
from inboxql.devmail import DovecotServer, free_port
from inboxql.mailgen import generate
from ops.sampler import IDLE
from schema import accounts
from schema.crypto import CredentialBox
from schema.db import create_engine
from schema.doorbell import Doorbells
from schema.settings import Settings
from schema.unit import Store

_EXISTS = re.compile(rb"^\* (\d+) EXISTS")
KB = 1024


# -- processes ----------------------------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    found: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        found.setdefault(ppid, []).append(int(entry.name))
    return found


def tree(pid: int) -> list[int]:
    """The process and its descendants (the sync's fork server and parse workers, its resource tracker)."""
    kids = _children()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def tree_rss(pid: int) -> int:
    return sum(common.rss(p) for p in tree(pid))


def tree_cpu(pid: int) -> dict[int, float]:
    return {p: common._cpu_seconds(p) for p in tree(pid)}


def cpu_between(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two samples by the processes alive at the second (new ones from zero)."""
    return sum(t - before.get(p, 0.0) for p, t in after.items())


def dovecot_pid(server: DovecotServer) -> int:
    return int((server.root / "run" / "master.pid").read_text().split()[0])


def imap_connections(server: DovecotServer) -> int:
    """Logged-in IMAP connections: Dovecot runs one `imap` process for each (service imap, client_limit 1)."""
    return sum(1 for p in tree(dovecot_pid(server)) if _comm(p) == "imap")


# -- set-up -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    name: str
    password: str
    messages: int


def seed(server: DovecotServer, count: int, low: int, high: int, rng: random.Random) -> list[User]:
    users = [
        User(f"u{n:04d}{secrets.token_hex(2)}", secrets.token_urlsafe(12), rng.randint(low, high)) for n in range(count)
    ]
    for u in users:
        server.add_user(u.name, u.password)

    def one(n: int) -> int:
        u = users[n]
        return sum(common.seed_mailbox(server, u.name, u.password, u.messages, seed=n + 1).counts.values())

    with ThreadPoolExecutor(4) as pool:
        seeded = list(pool.map(one, range(count)))
    if seeded != [u.messages for u in users]:
        raise BenchError("seeding appended fewer messages than asked")
    return users


@contextmanager
def sync_process(env: dict[str, str], *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], IO[bytes]]]:
    log = tempfile.TemporaryFile()  # noqa: SIM115 - read and closed by report_log
    proc = subprocess.Popen(
        [*common.inboxql_command(), "sync", *extra], env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
    )
    try:
        yield proc, log
    finally:
        common.stop_process(proc)


def report_log(name: str, log: IO[bytes]) -> None:
    """How many warnings and errors the process logged, by kind, and the first of each kind."""
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()
    log.close()
    kinds: Counter[str] = Counter()
    first: dict[str, str] = {}
    for line in lines:
        if " WARNING " not in line and " ERROR " not in line and "Traceback" not in line:
            continue
        kind = re.sub(r"\d+", "N", line.split(": ", 2)[-1])[:90]
        kinds[kind] += 1
        first.setdefault(kind, line)
    if not kinds:
        print(f"{name}: no warnings or errors logged")
    for kind, n in kinds.most_common(8):
        print(f"{name}: {n} x {first[kind][:300]}")


async def scalar(engine: AsyncEngine, sql: str, params: dict[str, object] | None = None) -> int:
    async with engine.connect() as conn:
        value = (await conn.execute(text(sql), params or {})).scalar()
    return int(value or 0)


async def wait_started(engine: AsyncEngine, proc: subprocess.Popen[bytes]) -> None:
    async with asyncio.timeout(60):
        while not await scalar(engine, "SELECT COUNT(*) FROM sync_processes"):
            if proc.poll() is not None:
                raise BenchError(f"inboxql sync exited {proc.returncode} at start")
            await asyncio.sleep(0.1)


_OURS = ("synccore.", "schema.", "ops.", "mime.", "inboxql.")


async def print_idle_profile(port: int, seconds: float, top: int = 12) -> None:
    """Where the idle process spent its samples (its always-on sampler, ops.sampler, through `--metrics-port`):
    the functions found in the most sampled stacks, the event loop's wait left out."""
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"http://127.0.0.1:{port}/debug/profile",
            params={"seconds": f"{max(1.0, seconds):g}", "format": "collapsed"},
            timeout=60,
        )
    if response.status_code != 200:
        print(f"idle profile: the sync process answered {response.status_code}")
        return
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    busy = 0
    for line in response.text.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or frames[-1] == IDLE:
            continue
        busy += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    print(
        f"idle profile: {busy} busy samples in {seconds:.0f} s (the loop's wait left out); inboxql's functions in "
        "the most stacks:"
    )
    ours = Counter({f: n for f, n in inclusive.items() if f.startswith(_OURS) and not f.startswith("inboxql.cli")})
    for frame, n in ours.most_common(top):
        print(f"  {100 * n / max(1, busy):5.1f}%  {frame[:110]}")
    print("  most samples of their own:")
    for frame, n in own.most_common(top // 2):
        print(f"  {100 * n / max(1, busy):5.1f}%  {frame[:110]}")


# -- the phases ---------------------------------------------------------------------------------------------


@dataclass
class Idle:
    rss_main: int
    rss_tree: int
    cpu: float  # seconds, sync process and children
    seconds: float
    dovecot_cpu: float
    mariadb_cpu: float
    connections: int


async def measure_idle(proc: subprocess.Popen[bytes], server: DovecotServer, seconds: float) -> Idle:
    dovecot = dovecot_pid(server)
    sync_before, dovecot_before = tree_cpu(proc.pid), tree_cpu(dovecot)
    mariadb_before = common._cpu_seconds(common.MARIADB_PID)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    sync_after, dovecot_after = tree_cpu(proc.pid), tree_cpu(dovecot)
    elapsed = time.monotonic() - started
    return Idle(
        common.rss(proc.pid),
        tree_rss(proc.pid),
        cpu_between(sync_before, sync_after),
        elapsed,
        cpu_between(dovecot_before, dovecot_after),
        common._cpu_seconds(common.MARIADB_PID) - mariadb_before,
        imap_connections(server),
    )


@dataclass
class Watch:
    """What the bare IDLE clients and the doorbells reported, by account."""

    exists: dict[int, list[tuple[float, int]]] = field(default_factory=dict)
    bells: dict[int, list[tuple[float, int]]] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, book: dict[int, list[tuple[float, int]]], account: int, value: int) -> None:
        book.setdefault(account, []).append((time.monotonic(), value))
        self.changed.set()

    async def first(
        self, book: dict[int, list[tuple[float, int]]], account: int, above: int, deadline: float
    ) -> float | None:
        while True:
            found = next((t for t, v in book.get(account, ()) if v > above), None)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                return None
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), min(0.05, max(0.001, deadline - time.monotonic())))


async def bare_idle(server: DovecotServer, user: User, account: int, watch: Watch, ready: asyncio.Event) -> None:
    conn = await RawImap.open(server, user.name, user.password)
    try:
        for line in await conn.command(b"SELECT INBOX"):
            if m := _EXISTS.match(line):
                watch.note(watch.exists, account, int(m.group(1)))
        conn.writer.write(b"idle IDLE\r\n")
        await conn.writer.drain()
        await conn.reader.readline()  # + idling
        ready.set()
        while line := await conn.reader.readline():
            if m := _EXISTS.match(line):
                watch.note(watch.exists, account, int(m.group(1)))
        raise BenchError(f"the bare IDLE connection of {user.name} closed")
    finally:
        await conn.close()


async def listen_bells(redis: Redis, bells: Doorbells, watch: Watch, subscribed: asyncio.Event) -> None:
    pubsub = redis.pubsub()
    await pubsub.psubscribe(bells.pattern)
    subscribed.set()
    try:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                continue
            account = bells.account_of(message.get("channel"))
            data = message.get("data")
            if account is not None and isinstance(data, bytes | str):
                watch.note(watch.bells, account, int(data))
    finally:
        await pubsub.aclose()


@dataclass(frozen=True, slots=True)
class Sample:
    mailbox: str
    idle: float | None  # seconds from the APPEND's OK to the bare IDLE client's EXISTS (INBOX only)
    bell: float | None  # ... to the doorbell


async def push(
    server: DovecotServer,
    engine: AsyncEngine,
    users: dict[int, User],
    plan: Sequence[tuple[int, str]],
    gap: float,
    timeout: float,
    watch: Watch,
) -> list[Sample]:
    pool = list(generate(len(plan), 4242))
    locks = {a: asyncio.Lock() for a in users}

    async def one(i: int, account: int, mailbox: str) -> Sample:
        await asyncio.sleep(i * gap * random.uniform(0.8, 1.2))
        async with locks[account]:
            user = users[account]
            seq = await scalar(
                engine, "SELECT COALESCE(MAX(seq), 0) FROM change_log WHERE account_id = :a", {"a": account}
            )
            exists = max((n for _, n in watch.exists.get(account, ())), default=0)
            conn = await RawImap.open(server, user.name, user.password)
            try:
                await conn.command(f'APPEND "{mailbox}"'.encode(), pool[i])
                t0 = time.monotonic()
            finally:
                await conn.close()
            deadline = t0 + timeout
            idle = await watch.first(watch.exists, account, exists, deadline) if mailbox == "INBOX" else None
            bell = await watch.first(watch.bells, account, seq, deadline)
            return Sample(mailbox, None if idle is None else idle - t0, None if bell is None else bell - t0)

    return await asyncio.gather(*(one(i, a, m) for i, (a, m) in enumerate(plan)))


# -- the run ------------------------------------------------------------------------------------------------


def _kb(n: float) -> str:
    return f"{n / KB:,.0f} KB"


async def run(args: argparse.Namespace, server: DovecotServer, url: str) -> int:
    rng = random.Random(args.seed)
    env = common.cli_env(url)
    settings = Settings(url, common.REDIS_URL, env["INBOXQL_SECRET_KEY"], None)
    engine = create_engine(url, pool_size=4)
    store = Store(engine)
    box = CredentialBox(settings.key_ring())
    redis: Redis = Redis.from_url(common.REDIS_URL)
    try:
        started = time.monotonic()
        users_list = await asyncio.to_thread(seed, server, args.accounts, args.min_messages, args.max_messages, rng)
        total = sum(u.messages for u in users_list)
        print(f"seeded {args.accounts} users, {total:,} messages, in {time.monotonic() - started:.1f} s")

        # The empty process: what an `inboxql sync` costs before it holds any account.
        with sync_process(env) as (proc, log):
            await wait_started(engine, proc)
            await asyncio.sleep(args.settle)
            base = await measure_idle(proc, server, args.baseline_seconds)
        report_log("empty sync process", log)
        print(
            f"baseline (no account): RSS {base.rss_main / common.MIB:.1f} MiB, with children "
            f"{base.rss_tree / common.MIB:.1f} MiB; CPU {base.cpu:.2f} s in {base.seconds:.0f} s"
        )

        users: dict[int, User] = {}
        for u in users_list:
            endpoint = accounts.ImapEndpoint(server.host, server.port, "none", u.name)
            users[await accounts.create(store, box, f"{u.name}@example.test", endpoint, u.password)] = u

        metrics_port = free_port()
        extra = ["--metrics-port", str(metrics_port), *(["--notify"] if args.notify else [])]
        with sync_process(env, *extra) as (proc, log):
            started = time.monotonic()
            peak_connections = 0
            ready = mirrored = 0
            async with asyncio.timeout(args.sync_timeout):
                while ready < len(users) or mirrored < total:
                    if proc.poll() is not None:
                        raise BenchError(f"inboxql sync exited {proc.returncode}")
                    await asyncio.sleep(1.0)
                    peak_connections = max(peak_connections, imap_connections(server))
                    ready = await scalar(engine, "SELECT COUNT(*) FROM accounts WHERE sync_state = 'ready'")
                    mirrored = await scalar(engine, "SELECT COUNT(*) FROM message_places")
                    if args.verbose:
                        print(
                            f"  {time.monotonic() - started:6.1f} s: {ready} ready, {mirrored:,} places",
                            file=sys.stderr,
                        )
            first_sync = time.monotonic() - started
            print(
                f"first full sync of {len(users)} accounts ({total:,} messages): {first_sync:.1f} s "
                f"({total / first_sync:,.0f} msg/s); at most {peak_connections} IMAP connections at once; "
                f"load {common.load_average()}"
            )

            await asyncio.sleep(args.settle)
            idle = await measure_idle(proc, server, args.idle_seconds)
            per_account = (idle.rss_tree - base.rss_tree) / len(users)
            per_account_main = (idle.rss_main - base.rss_main) / len(users)
            cpu = idle.cpu - base.cpu * idle.seconds / base.seconds
            share = idle.cpu / idle.seconds
            print(
                f"idle: RSS {idle.rss_main / common.MIB:.0f} MiB ({idle.rss_tree / common.MIB:.0f} MiB with children): "
                f"{_kb(per_account)} per account over the baseline ({_kb(per_account_main)} in the process itself); "
                "goal <= 200 KB"
            )
            print(
                f"idle CPU: {idle.cpu:.1f} s in {idle.seconds:.0f} s = {share * 3600:.0f} s per hour, "
                f"{100 * share:.1f}% "
                f"of a core ({cpu * 3600 / idle.seconds:.0f} s per hour over the empty process's); goal under 2%; "
                f"meanwhile Dovecot {100 * idle.dovecot_cpu / idle.seconds:.1f}% and MariaDB "
                f"{100 * idle.mariadb_cpu / idle.seconds:.1f}% of a core; load {common.load_average()}"
            )
            print(f"idle: {idle.connections} IMAP connections, {idle.connections / len(users):.2f} per account")
            await print_idle_profile(metrics_port, idle.seconds)

            ids = list(users)
            plan = [(rng.choice(ids), "INBOX") for _ in range(args.appends)]
            plan += [(rng.choice(ids), "Archive") for _ in range(args.archive_appends)]
            rng.shuffle(plan)
            watch = Watch()
            subscribed = asyncio.Event()
            bells = Doorbells.for_url(url)
            tasks = [asyncio.create_task(listen_bells(redis, bells, watch, subscribed))]
            idlers = sorted({a for a, m in plan if m == "INBOX"})
            try:
                await asyncio.wait_for(subscribed.wait(), 10)
                for chunk in range(0, len(idlers), 20):  # a ramp: Dovecot's login processes are limited too
                    ready_events = []
                    for account in idlers[chunk : chunk + 20]:
                        ready_event = asyncio.Event()
                        ready_events.append(ready_event)
                        tasks.append(
                            asyncio.create_task(bare_idle(server, users[account], account, watch, ready_event))
                        )
                    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in ready_events)), 60)
                print(f"{len(idlers)} bare IDLE clients idling; {len(plan)} APPENDs, one every {args.append_gap} s")
                samples = await push(server, engine, users, plan, args.append_gap, args.push_timeout, watch)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            alive = proc.poll() is None
        report_log("the sync process", log)
        if not alive:
            raise BenchError("inboxql sync exited during the benchmark")
        report_push(samples, args.push_timeout)
        print(f"load at the end: {common.load_average()}")
        return 0
    finally:
        await redis.aclose()
        await engine.dispose()


def report_push(samples: Sequence[Sample], timeout: float) -> None:
    inbox = [s for s in samples if s.mailbox == "INBOX"]
    idle = [s.idle for s in inbox if s.idle is not None]
    bell = [s.bell for s in inbox if s.bell is not None]
    diff = [s.bell - s.idle for s in inbox if s.bell is not None and s.idle is not None]
    archive = [s.bell for s in samples if s.mailbox == "Archive" and s.bell is not None]
    print(f"push, ms from the APPEND's tagged OK:{'':16} {'p50':>7} {'p99':>7} {'max':>7} {'seen':>9}")
    rows = (
        ("(a) INBOX: bare IDLE client's EXISTS", idle, len(inbox)),
        ("(b) INBOX: inboxql's doorbell", bell, len(inbox)),
        ("(b) - (a), per APPEND", diff, len(inbox)),
        ("Archive: inboxql's doorbell", archive, len(samples) - len(inbox)),
    )
    for name, values, of in rows:
        if of:
            ps = f"{common.ms(values, 50)} {common.ms(values, 99)} {common.ms(values, 100)}"
            print(f"{name:53} {ps} {len(values):4d}/{of}")
    if idle and bell:
        p99 = 1000 * (common.percentile(bell, 99) - common.percentile(idle, 99))
        print(f"p99 of (b) - p99 of (a): {p99:.0f} ms; goal within 100 ms; misses count after {timeout:.0f} s")


def report_dovecot(server: DovecotServer) -> None:
    """Dovecot's warnings and errors (a limit reached says so here), by kind."""
    if not server.log_file.exists():
        return
    kinds: Counter[str] = Counter()
    first: dict[str, str] = {}
    for line in server.log_file.read_text(errors="replace").splitlines():
        if "Warning:" not in line and "Error:" not in line and "Fatal:" not in line:
            continue
        kind = re.sub(r"\d+", "N", line.split(": ", 1)[-1])[:80]
        kinds[kind] += 1
        first.setdefault(kind, line)
    for kind, n in kinds.most_common(6):
        print(f"dovecot: {n} x {first[kind][:300]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--min-messages", type=int, default=10)
    parser.add_argument("--max-messages", type=int, default=200)
    parser.add_argument("--settle", type=float, default=15.0, help="seconds between a phase and its measurement")
    parser.add_argument("--baseline-seconds", type=float, default=30.0)
    parser.add_argument("--idle-seconds", type=float, default=120.0)
    parser.add_argument("--appends", type=int, default=300, help="APPENDs to INBOX (measured beside a bare IDLE)")
    parser.add_argument("--archive-appends", type=int, default=20, help="APPENDs to Archive")
    parser.add_argument("--append-gap", type=float, default=0.2, help="seconds between APPENDs")
    parser.add_argument("--push-timeout", type=float, default=90.0, help="seconds an APPEND waits for its events")
    parser.add_argument("--sync-timeout", type=float, default=1800.0)
    parser.add_argument(
        "--dovecot-limits",
        type=int,
        default=4000,
        help="Dovecot's default_process_limit (one process per IMAP connection); 0 keeps Dovecot's 100",
    )
    parser.add_argument("--notify", action="store_true", help="run `inboxql sync --notify` (RFC 5465 NOTIFY)")
    parser.add_argument(
        "--inotify-instances",
        type=int,
        default=8192,
        help="fs.inotify.max_user_instances for the run, as root (0: leave it); the old value is put back",
    )
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--verbose", action="store_true", help="print progress of the first sync")
    args = parser.parse_args(argv)
    common.check_services()
    print(common.machine())
    files = os.sysconf("SC_OPEN_MAX")
    print(f"{args.accounts} accounts; load at start: {common.load_average()}; open files limit {files}")
    root = Path(tempfile.mkdtemp(prefix="inboxql-thousand-"))
    server = DovecotServer(root, process_limit=args.dovecot_limits or None)
    try:
        with inotify_instances(args.inotify_instances, needed=2 * args.accounts + 100):
            server.start()
            with common.throwaway_database("inboxql_thousand") as url:
                return asyncio.run(run(args, server, url))
    except BenchError as exc:
        print(f"thousand_bench: {exc}", file=sys.stderr)
        return 1
    finally:
        report_dovecot(server)
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


INOTIFY_INSTANCES = Path("/proc/sys/fs/inotify/max_user_instances")


@contextmanager
def inotify_instances(wanted: int, needed: int) -> Iterator[None]:
    """The inotify instance limit raised to `wanted` for the run (module docstring), put back after it."""
    old = int(INOTIFY_INSTANCES.read_text())
    if wanted <= old:
        if old < needed:
            print(f"fs.inotify.max_user_instances is {old}: under {needed}, push figures below are NOT valid")
        yield
        return
    try:
        INOTIFY_INSTANCES.write_text(f"{wanted}\n")
    except OSError as exc:
        print(f"fs.inotify.max_user_instances stays {old} ({exc}): push figures below are NOT valid")
        yield
        return
    print(f"fs.inotify.max_user_instances raised from {old} to {wanted} for this run")
    try:
        yield
    finally:
        INOTIFY_INSTANCES.write_text(f"{old}\n")
        print(f"fs.inotify.max_user_instances put back to {old}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
