"""Push latency: from APPEND's tagged OK to a bare IDLE client's EXISTS, to inboxql's doorbell, to the row in MariaDB.

    .venv/bin/python -m bench.push_bench [--messages 500] [--appends 100]

A private Dovecot gets a small generated mailbox; a fresh database gets the account; `inboxql sync --once`
does the initial sync; then `inboxql sync --account ID` follows (IDLE on INBOX, polls the other folders).
Alongside it: a bare IDLE client on INBOX (its own connection, raw asyncio socket), a Redis subscriber on
`inboxql:<db>:doorbell:{id}`, and a poller of `message_places` (every 5 ms). Then, `--appends` times, a third
connection APPENDs a message to INBOX and we record, from the APPEND's tagged OK:

    (a) the bare IDLE client's `* n EXISTS`;
    (b) the first doorbell whose seq covers the change-log row that created the message;
    (c) the message's place row being visible in MariaDB.

Two scenarios: "quiet" (right after the initial sync) and "busy" (a fourth connection keeps changing flags
in INBOX and appending to Archive the whole time).

Baselines (FIELD-NOTES): a bare IDLE client sees EXISTS ~480 ms after APPEND (Dovecot holds notifications
back about half a second); the Nylas fork 0.56 s when its IDLE worked; EmailEngine 1.5 s quiet, ~15 s busy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench import common
from bench.common import BenchError
from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema.doorbell import Doorbells

STEP_TIMEOUT = 20.0  # seconds to wait for each of (a), (b), (c) before counting a miss
POLL_SECONDS = 0.005
FIELD_NOTES_IDLE_P50_MS = 481
FIELD_NOTES_IDLE_P99_MS = 482
_EXISTS = re.compile(rb"^\* (\d+) EXISTS")
_APPENDUID = re.compile(rb"\[APPENDUID (\d+) (\d+)\]")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class RawImap:
    """Just enough IMAP over an asyncio socket: LOGIN, SELECT, APPEND (LITERAL+), STORE, IDLE."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._tag = 0

    @classmethod
    async def open(cls, server: DovecotServer, user: str, password: str) -> RawImap:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        conn = cls(reader, writer)
        await conn.reader.readline()  # greeting
        await conn.command(f"LOGIN {_quote(user)} {_quote(password)}".encode())
        return conn

    def _next_tag(self) -> bytes:
        self._tag += 1
        return f"t{self._tag}".encode()

    async def command(self, line: bytes, literal: bytes | None = None) -> list[bytes]:
        tag = self._next_tag()
        if literal is None:
            self.writer.write(tag + b" " + line + b"\r\n")
        else:
            self.writer.write(tag + b" " + line + f" {{{len(literal)}+}}\r\n".encode() + literal + b"\r\n")
        await self.writer.drain()
        lines: list[bytes] = []
        while True:
            got = await asyncio.wait_for(self.reader.readline(), 60)
            if not got:
                raise BenchError("IMAP connection closed")
            lines.append(got)
            if got.startswith(tag + b" "):
                if not got.startswith(tag + b" OK"):
                    raise BenchError(f"IMAP {line[:40]!r} failed: {got!r}")
                return lines

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.write(b"z LOGOUT\r\n")
            await self.writer.drain()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@dataclass
class Observations:
    exists: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, n) of each `* n EXISTS`
    doorbells: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, seq)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self) -> None:
        self.changed.set()


async def idle_watcher(server: DovecotServer, user: str, password: str, seen: Observations) -> None:
    conn = await RawImap.open(server, user, password)
    try:
        for line in await conn.command(b"SELECT INBOX"):
            if m := _EXISTS.match(line):
                seen.exists.append((time.monotonic(), int(m.group(1))))
        conn.writer.write(b"idle IDLE\r\n")
        await conn.writer.drain()
        while True:
            line = await conn.reader.readline()
            now = time.monotonic()
            if not line:
                raise BenchError("the bare IDLE connection closed")
            if m := _EXISTS.match(line):
                seen.exists.append((now, int(m.group(1))))
                seen.note()
    finally:
        await conn.close()


async def doorbell_listener(redis: Redis, channel: str, seen: Observations, subscribed: asyncio.Event) -> None:
    pubsub = redis.pubsub()
    await pubsub.subscribe(channel)
    subscribed.set()
    try:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                continue
            now = time.monotonic()
            data = message.get("data")
            if isinstance(data, bytes | str):
                seen.doorbells.append((now, int(data)))
                seen.note()
    finally:
        await pubsub.aclose()


async def busy_load(server: DovecotServer, user: str, password: str, pool: Sequence[bytes], ops: list[int]) -> None:
    """Flag changes in INBOX and appends to Archive, back to back, until cancelled."""
    rng = random.Random(7)
    conn = await RawImap.open(server, user, password)
    try:
        selected = await conn.command(b"SELECT INBOX")
        count = next((int(m.group(1)) for line in selected if (m := _EXISTS.match(line))), 0)
        n = 0
        while True:
            seq = rng.randint(1, max(1, count))
            sign = rng.choice((b"+", b"-"))
            await conn.command(b"STORE %d %sFLAGS.SILENT (\\Flagged)" % (seq, sign))
            ops[0] += 1
            if n % 3 == 0:
                await conn.command(b'APPEND "Archive"', pool[n % len(pool)])
                ops[1] += 1
            n += 1
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


@dataclass(frozen=True, slots=True)
class Sample:
    idle: float | None
    doorbell: float | None
    row: float | None


def _first_exists_above(seen: Observations, count: int) -> float | None:
    return next((t for t, n in seen.exists if n > count), None)


def _first_bell_covering(seen: Observations, seq: int | None, since: float) -> float | None:
    if seq is None:
        return None
    return next((t for t, s in seen.doorbells if s >= seq and t >= since - 1.0), None)


async def _wait_for(seen: Observations, check: Callable[[], float | None], deadline: float) -> float | None:
    while True:
        found = check()
        if found is not None:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        seen.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(seen.changed.wait(), min(remaining, 0.05))


async def measure(
    server: DovecotServer,
    user: str,
    password: str,
    engine: AsyncEngine,
    account_id: int,
    inbox_id: int,
    seen: Observations,
    messages: Sequence[bytes],
    pause: float,
) -> list[Sample]:
    appender = await RawImap.open(server, user, password)
    samples: list[Sample] = []
    try:
        for raw in messages:
            before_exists = max((n for _, n in seen.exists), default=0)
            lines = await appender.command(b"APPEND INBOX", raw)
            t0 = time.monotonic()
            m = _APPENDUID.search(lines[-1])
            if m is None:
                raise BenchError(f"no APPENDUID in {lines[-1]!r}")
            uidvalidity, uid = int(m.group(1)), int(m.group(2))
            deadline = t0 + STEP_TIMEOUT

            # (c) the row: poll MariaDB
            row_at: float | None = None
            message_id: int | None = None
            async with engine.connect() as conn:
                while time.monotonic() < deadline:
                    found = (
                        await conn.execute(
                            text(
                                "SELECT message_id FROM message_places "
                                "WHERE folder_id = :f AND uidvalidity = :v AND uid = :u"
                            ),
                            {"f": inbox_id, "v": uidvalidity, "u": uid},
                        )
                    ).scalar()
                    await conn.commit()  # a fresh snapshot for the next poll
                    if found is not None:
                        row_at = time.monotonic()
                        message_id = int(found)
                        break
                    await asyncio.sleep(POLL_SECONDS)
                first_seq: int | None = None
                if message_id is not None:
                    got = (
                        await conn.execute(
                            text(
                                "SELECT MIN(seq) FROM change_log WHERE account_id = :a AND object_type = 'message' "
                                "AND object_id = :m AND op = 'create'"
                            ),
                            {"a": account_id, "m": message_id},
                        )
                    ).scalar()
                    first_seq = int(got) if got is not None else None

            # (a) the bare IDLE client's EXISTS; (b) the doorbell that covers the creating change
            idle_check = functools.partial(_first_exists_above, seen, before_exists)
            bell_check = functools.partial(_first_bell_covering, seen, first_seq, t0)
            idle_at = await _wait_for(seen, idle_check, deadline)
            bell_at = await _wait_for(seen, bell_check, deadline) if first_seq is not None else None
            samples.append(
                Sample(
                    None if idle_at is None else idle_at - t0,
                    None if bell_at is None else bell_at - t0,
                    None if row_at is None else row_at - t0,
                )
            )
            # A random pause: an append that lands while Dovecot's notification timer from the previous
            # one's activity is still pending reaches the bare IDLE client early (see BENCHMARKS.md).
            await asyncio.sleep(pause * random.uniform(1.0, 1.5))
    finally:
        await appender.close()
    return samples


# -- the run -----------------------------------------------------------------------------------------------


async def _scalar(engine: AsyncEngine, sql: str, params: dict[str, object]) -> object:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def _wait_ready(engine: AsyncEngine, account_id: int, follower: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if follower.poll() is not None:
            raise BenchError(f"inboxql sync exited {follower.returncode} while starting")
        state = await _scalar(engine, "SELECT sync_state FROM accounts WHERE id = :a", {"a": account_id})
        if state == "ready":
            return
        await asyncio.sleep(0.1)
    raise BenchError(f"the follower did not reach 'ready' in {timeout} s")


async def scenario(
    label: str,
    server: DovecotServer,
    user: str,
    password: str,
    engine: AsyncEngine,
    account_id: int,
    inbox_id: int,
    seen: Observations,
    messages: Sequence[bytes],
    pause: float,
    busy_pool: Sequence[bytes] | None,
) -> tuple[list[Sample], list[int], float]:
    busy_ops = [0, 0]
    busy: asyncio.Task[None] | None = None
    if busy_pool is not None:
        busy = asyncio.create_task(busy_load(server, user, password, busy_pool, busy_ops))
        await asyncio.sleep(2.0)  # let the load settle into its stride
    start = time.monotonic()
    try:
        samples = await measure(server, user, password, engine, account_id, inbox_id, seen, messages, pause)
    finally:
        if busy is not None:
            busy.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await busy
    elapsed = time.monotonic() - start
    print(f"{label}: {len(samples)} appends in {elapsed:.1f} s", file=sys.stderr)
    return samples, busy_ops, elapsed


def report(label: str, samples: Sequence[Sample], busy_ops: list[int], elapsed: float) -> None:
    idle = [s.idle for s in samples if s.idle is not None]
    bell = [s.doorbell for s in samples if s.doorbell is not None]
    row = [s.row for s in samples if s.row is not None]
    diff = [s.doorbell - s.idle for s in samples if s.doorbell is not None and s.idle is not None]
    print()
    print(f"== {label}: {len(samples)} APPENDs to INBOX, ms from the tagged OK ==")
    if busy_ops[0]:
        print(
            f"   (background: {busy_ops[0]} flag changes in INBOX and {busy_ops[1]} appends to Archive"
            f" in {elapsed:.0f} s)"
        )
    print(f"{'':44} {'p50':>7} {'p99':>7} {'max':>7} {'seen':>5}")
    for name, values in (
        ("(a) bare IDLE client: * n EXISTS", idle),
        ("(b) inboxql doorbell (Redis PUBLISH)", bell),
        ("(c) message row visible in MariaDB", row),
        ("(b) - (a), per append", diff),
    ):
        print(f"{name:44} {common.ms(values, 50)} {common.ms(values, 99)} {common.ms(values, 100)} {len(values):5d}")
    if idle and bell:
        p50 = 1000 * (common.percentile(bell, 50) - common.percentile(idle, 50))
        p99 = 1000 * (common.percentile(bell, 99) - common.percentile(idle, 99))
        print(f"{'p(b) - p(a)':44} {p50:7.0f} {p99:7.0f}")
    misses = len(samples) - min(len(idle), len(bell), len(row))
    if misses:
        print(f"   {misses} appends missed an event within {STEP_TIMEOUT:.0f} s")


async def run_async(
    server: DovecotServer,
    user: str,
    password: str,
    url: str,
    account_id: int,
    appends: int,
    pause: float,
    samples_out: str | None,
) -> None:
    engine = create_async_engine(url, pool_size=2, isolation_level="READ COMMITTED")
    redis: Redis = Redis.from_url(common.REDIS_URL)
    seen = Observations()
    subscribed = asyncio.Event()
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    follower = subprocess.Popen(
        [*common.inboxql_command(), "sync", "--account", str(account_id)],
        env=common.cli_env(url),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    tasks: list[asyncio.Task[None]] = []
    try:
        channel = Doorbells.for_url(url).channel(account_id)
        tasks.append(asyncio.create_task(doorbell_listener(redis, channel, seen, subscribed)))
        tasks.append(asyncio.create_task(idle_watcher(server, user, password, seen)))
        await asyncio.wait_for(subscribed.wait(), 10)
        await _wait_ready(engine, account_id, follower, 120)
        found = await _scalar(
            engine, "SELECT id FROM folders WHERE account_id = :a AND role = 'inbox'", {"a": account_id}
        )
        if not isinstance(found, int):
            raise BenchError("the mirror has no inbox folder")
        inbox_id = found
        pool = list(generate(2 * appends + 60, 99))
        # Warm-up: the follower must be IDLE on INBOX before we start the clock.
        warm = await measure(server, user, password, engine, account_id, inbox_id, seen, pool[:3], 0.5)
        if any(s.row is None for s in warm):
            raise BenchError("the follower did not mirror the warm-up messages")
        quiet = await scenario(
            "quiet", server, user, password, engine, account_id, inbox_id, seen, pool[3 : 3 + appends], pause, None
        )
        busy = await scenario(
            "busy",
            server,
            user,
            password,
            engine,
            account_id,
            inbox_id,
            seen,
            pool[3 + appends : 3 + 2 * appends],
            pause,
            pool[-50:],
        )
        report("quiet, right after the initial sync", *quiet)
        report("busy (flag changes in INBOX + appends to Archive)", *busy)
        if samples_out:
            with open(samples_out, "w") as out:
                out.write("scenario,idle_s,doorbell_s,row_s\n")
                for label, (samples, _, _) in (("quiet", quiet), ("busy", busy)):
                    for x in samples:
                        out.write(f"{label},{x.idle},{x.doorbell},{x.row}\n")
        print()
        print(
            f"baselines (FIELD-NOTES): bare IDLE p50 {FIELD_NOTES_IDLE_P50_MS} ms, p99 {FIELD_NOTES_IDLE_P99_MS} ms;"
            " Nylas fork 0.56 s when its IDLE worked (50-176 s after its initial sync); EmailEngine 1.5 s quiet,"
            " ~15 s busy"
        )
        if follower.poll() is not None:
            raise BenchError(f"inboxql sync exited {follower.returncode} during the benchmark")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(common.stop_process, follower)
        common.report_errors("the follower", log)
        await redis.aclose()
        await engine.dispose()


def run(messages: int, appends: int, pause: float, timeout: float, samples_out: str | None) -> None:
    with common.synced_mailbox(messages, "inboxql_pushbench") as m:
        work = run_async(m.server, m.user, m.password, m.url, m.account_id, appends, pause, samples_out)
        asyncio.run(asyncio.wait_for(work, timeout))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=500, help="size of the mailbox synced first")
    parser.add_argument("--appends", type=int, default=100, help="APPENDs measured per scenario")
    parser.add_argument(
        "--pause", type=float, default=1.0, help="seconds (x1-1.5, random) from one append's last event to the next"
    )
    parser.add_argument("--timeout", type=float, default=900, help="give up after this many seconds")
    parser.add_argument("--samples-out", help="write every sample (seconds) to this CSV file")
    args = parser.parse_args(argv)
    try:
        run(args.messages, args.appends, args.pause, args.timeout, args.samples_out)
    except (BenchError, TimeoutError) as exc:
        print(f"push_bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
