"""What a pass over a followed folder costs as the folder grows: a no-op pass and a pass after 1,000 flag changes, on
a 1,000-message INBOX and on a 100,000-message one (issue 12: the larger within 1.5x of the smaller).

    .venv/bin/python -m bench.resync_bench [--messages 1000 100000] [--passes 7] [--rounds 3] [--folder Archive]
                                          [--buffer-pool 2G]

For each size: a private Dovecot gets that many generated messages (`inboxql.mailgen`), all in INBOX (or in
`--folder`: in `inboxql sync` the inbox has an IDLE connection of its own, and the passes go over the others); a fresh
database gets the account and `inboxql sync --once` mirrors it. Then, in this process, one IMAP connection and the
sync core's own pass (`AccountSync.full_pass`, CONDSTORE/QRESYNC as Dovecot offers them): a warm-up pass, `--passes`
no-op passes, then `--rounds` times 1,000 flag changes made from another IMAP connection (~70% \\Seen, ~30%
\\Flagged toggled) followed by one pass. Printed: the median wall time of each kind of pass, its SQL statements and
the time spent in them, the baseline measured beside each pass (a bare client on a second connection asking what the
pass asks of Dovecot from the same state: the STATUS of every folder in one round trip, and after flag changes the
SELECT of the folder with QRESYNC; what Dovecot takes to answer, which grows with the mailbox for any client), and the
ratio of the largest size to the smallest, with and without that server share. `inboxql verify` must then say
identical. The statements counted include the bulk commands of schema.bulk (the change log's rows, a flag change's
places and threads), and each pass after flag changes prints its slowest statements.
With `--buffer-pool SIZE` each mailbox is mirrored a second time, into a private mariadbd (no config file read, its
own datadir) whose InnoDB buffer pool is SIZE, and the same passes are timed there, after the shared server's, on
the same Dovecot and mailbox: what a server whose pool holds the mirror's hot part gives, reported beside the shared
server's (128 MiB by default: a pass after flag changes reads and writes random message, thread and place rows of a
mirror several times that size).
Process start-up is left out: it is the same at every size (bench.sync_bench times whole `sync --once` processes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import event

from bench import common
from bench.common import BenchError
from bench.sync_bench import change_flags
from inboxql.mailgen import generate
from schema import bulk
from schema.crypto import CredentialBox
from schema.db import create_engine
from schema.settings import Settings
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.planning import STATUS_ITEMS
from synccore.verify import verify

FLAG_CHANGES = 1000
SLOWEST = 8  # statements of each pass after flag changes printed, slowest first (--slowest)


@dataclass(frozen=True, slots=True)
class Pass:
    wall: float  # seconds
    statements: int
    sql: float  # seconds inside statements (cursor execute)
    server: float = 0.0  # a bare client asking what the pass asks, from the same state on another connection: Dovecot's
    slowest: tuple[tuple[float, str], ...] = ()  # its slowest statements (seconds, head), slowest first


@dataclass(frozen=True, slots=True)
class Sized:
    messages: int
    database: str  # which MariaDB held the mirror: the shared server, or a private one and its buffer pool
    initial: float  # the `inboxql sync --once` that mirrored it, wall s
    noop: list[Pass]
    flags: list[Pass]


class Statements:
    """Counts the statements an engine runs, and the time inside them, each one's kept (`timed`: seconds, the
    statement's head) since `timed` was last cleared. The bulk commands of schema.bulk (the change log's rows, a
    flag change's places and threads), which the driver sends without a cursor, are counted too: their time is
    SQL time."""

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.timed: list[tuple[float, str]] = []
        self._started: list[float] = []

    def before(self, *args: Any) -> None:
        self._started.append(time.perf_counter())

    def after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self._done(time.perf_counter() - self._started.pop(), statement)

    def _done(self, seconds: float, statement: str) -> None:
        self.count += 1
        self.seconds += seconds
        self.timed.append((seconds, " ".join(statement.split())[:150]))

    @contextmanager
    def on(self, engine: Any) -> Iterator[None]:
        event.listen(engine, "before_cursor_execute", self.before)
        event.listen(engine, "after_cursor_execute", self.after)
        insert = bulk.insert

        async def timed_insert(session: Any, table: Any, rows: Any, **options: Any) -> bool:
            start = time.perf_counter()
            try:
                return await insert(session, table, rows, **options)
            finally:
                update = f" ON DUPLICATE KEY UPDATE {', '.join(options['update'])}" if options.get("update") else ""
                self._done(time.perf_counter() - start, f"(bulk) INSERT INTO {table.name}: {len(rows)} rows{update}")

        bulk.insert = timed_insert  # schema's callers look it up on the module
        try:
            yield
        finally:
            bulk.insert = insert
            event.remove(engine, "before_cursor_execute", self.before)
            event.remove(engine, "after_cursor_execute", self.after)


async def _passes(
    url: str,
    env: dict[str, str],
    account_id: int,
    server: Any,
    user: str,
    password: str,
    passes: int,
    rounds: int,
    folder: str,
) -> tuple[list[Pass], list[Pass]]:
    engine = create_engine(url)
    counter = Statements()
    try:
        store = Store(engine)
        box = CredentialBox(Settings.from_env(env).key_ring())
        sync = AccountSync(store, box, account_id, Tuning())
        client = await sync._connect()

        async def timed() -> Pass:
            before_count, before_sql = counter.count, counter.seconds
            counter.timed.clear()
            start = time.perf_counter()
            if not await sync.full_pass(client):
                raise BenchError("a pass did not reach every folder")
            wall = time.perf_counter() - start
            slowest = tuple(sorted(counter.timed, reverse=True)[:SLOWEST])
            return Pass(wall, counter.count - before_count, counter.seconds - before_sql, slowest=slowest)

        bare = await sync._connect()
        names = [m.name for m in await bare.list_folders() if "\\Noselect" not in m.flags]

        async def server_share(modseq: int | None) -> float:
            """What Dovecot alone takes to answer what a pass asks of it (synccore.account: STATUS first): the STATUS
            of every folder in one round trip, no mailbox selected (the pass leaves the one it had), and when the inbox
            changed (`modseq`: its HIGHESTMODSEQ before the change) the SELECT of it with QRESYNC from there.
            Opening a mailbox is what grows with it on the server; Dovecot answers STATUS of a folder from its list
            index without opening it, but opens INBOX for it (its default `mailbox_list_index_include_inbox = no`)."""
            if bare.selected is not None:
                await bare.unselect()
            start = time.perf_counter()
            await asyncio.gather(*(bare.status(name, STATUS_ITEMS) for name in names))
            if modseq is not None:
                await bare.select(folder, qresync=(uidvalidity, modseq, None))
            return time.perf_counter() - start

        with counter.on(engine.sync_engine):
            await timed()  # warm-up: the identity mode, the pool's connections
            state = await bare.select(folder, condstore=True)
            assert state.uidvalidity is not None
            assert state.highestmodseq is not None
            uidvalidity = state.uidvalidity
            noop = []
            for _ in range(passes):
                ours = await timed()
                noop.append(replace(ours, server=await server_share(None)))
            flags = []
            for n in range(rounds):
                before = await bare.select(folder, condstore=True)
                assert before.highestmodseq is not None
                await asyncio.to_thread(change_flags, server, user, password, FLAG_CHANGES, 100 + n, folder)
                ours = await timed()
                flags.append(replace(ours, server=await server_share(before.highestmodseq)))
        await bare.logout()
        await client.logout()
        diffs = await verify(store, box, account_id)
        if diffs:
            raise BenchError("inboxql verify found differences:\n" + "\n".join(diffs[:20]))
        return noop, flags
    finally:
        await engine.dispose()


SHARED = "the shared server"


def measure(messages: int, seed: int, passes: int, rounds: int, folder: str, databases: dict[str, str]) -> list[Sized]:
    """One mailbox of `messages`, mirrored into a fresh database on each of `databases` (what to call it -> the
    server's URL, no database named) in turn, and the passes over each mirror: the same Dovecot and mailbox."""
    found = []
    with common.private_dovecot() as server:
        user, password = common.new_user(server)
        start = time.perf_counter()
        server.append(user, password, folder, generate(messages, seed))
        print(f"seeded {messages} messages in {folder} in {time.perf_counter() - start:.1f} s", flush=True)
        for database, db_server in databases.items():
            with common.throwaway_database("inboxql_resync", db_server) as url:
                env = common.cli_env(url)
                account_id = common.add_account(server, user, password, env)
                initial = common.timed_run(
                    [*common.inboxql_command(), "sync", "--once", "--account", str(account_id)], env=env, timeout=3600
                )
                if initial.returncode != 0:
                    raise BenchError(f"initial sync failed: {initial.stderr[-2000:]}")
                print(
                    f"initial sync of {messages} into {database}: {initial.wall:.1f} s;"
                    f" load average {common.load_average()}",
                    flush=True,
                )
                noop, flags = asyncio.run(_passes(url, env, account_id, server, user, password, passes, rounds, folder))
                print(
                    f"{messages}, {database}: no-op passes (ms) {[round(1000 * p.wall) for p in noop]}, after flag"
                    f" changes {[round(1000 * p.wall) for p in flags]}; load average {common.load_average()}",
                    flush=True,
                )
                for n, flag_pass in enumerate(flags, 1):
                    print(f"  slowest statements of flag pass {n} ({1000 * flag_pass.wall:.0f} ms):")
                    for seconds, head in flag_pass.slowest:
                        print(f"    {1000 * seconds:8.1f} ms  {head}")
                found.append(Sized(messages, database, initial.wall, noop, flags))
    return found


def _median(passes: list[Pass]) -> Pass:
    return Pass(
        statistics.median(p.wall for p in passes),
        int(statistics.median(p.statements for p in passes)),
        statistics.median(p.sql for p in passes),
        statistics.median(p.server for p in passes),
    )


def report(results: list[Sized], folder: str, database: str) -> None:
    print()
    print(
        f"== a pass over a followed {folder}, the mirror on {database} (in-process AccountSync.full_pass; medians) =="
    )
    head = (
        "messages",
        "no-op ms",
        "stmts",
        "in SQL ms",
        "Dovecot ms",
        "1k flags ms",
        "stmts",
        "in SQL ms",
        "Dovecot ms",
    )
    widths = (9, 9, 6, 10, 10, 12, 6, 10, 10)
    print(" ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True)))
    for r in results:
        noop, flags = _median(r.noop), _median(r.flags)
        print(
            f"{r.messages:9d} {1000 * noop.wall:9.1f} {noop.statements:6d} {1000 * noop.sql:10.1f}"
            f" {1000 * noop.server:10.1f} {1000 * flags.wall:12.1f} {flags.statements:6d} {1000 * flags.sql:10.1f}"
            f" {1000 * flags.server:10.1f}"
        )
    print(
        "(Dovecot ms: a bare client asking what the pass asks from the same state: STATUS of every folder, and after"
        " flag changes the SELECT of the folder with QRESYNC; the server's share of a pass)"
    )
    small, large = results[0], results[-1]
    if large is not small:
        for name, a, b in (
            ("no-op", _median(small.noop), _median(large.noop)),
            (f"after {FLAG_CHANGES} flag changes", _median(small.flags), _median(large.flags)),
        ):
            print(
                f"ratio {large.messages} / {small.messages}, {name}: {b.wall / a.wall:.2f}x;"
                f" without Dovecot's share {(b.wall - b.server) / (a.wall - a.server):.2f}x (goal <= 1.5x)"
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--passes", type=int, default=7, help="no-op passes timed per size")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of 1,000 flag changes per size")
    parser.add_argument(
        "--folder", default="INBOX", help="the folder that holds the messages (one of the test Dovecot's)"
    )
    parser.add_argument(
        "--buffer-pool",
        metavar="SIZE",
        help="also mirror each mailbox into a private mariadbd whose innodb_buffer_pool_size is SIZE (e.g. 2G) and"
        " time the same passes there, reported beside the shared server's (whose pool is what its configuration says)",
    )
    args = parser.parse_args(argv)
    common.check_services()
    print(f"machine: {common.machine()}")
    print(f"load average at start: {common.load_average()}", flush=True)
    with contextlib.ExitStack() as stack:
        pool = common.buffer_pool_size(common.DB_SERVER)
        databases = {f"{SHARED} (buffer pool {pool // common.MIB} MiB)": common.DB_SERVER}
        if args.buffer_pool:
            private = stack.enter_context(common.private_mariadb(args.buffer_pool))
            databases[f"a private mariadbd (buffer pool {args.buffer_pool})"] = private
        results = [
            sized
            for n in args.messages
            for sized in measure(n, args.seed, args.passes, args.rounds, args.folder, databases)
        ]
    for database in databases:
        report([r for r in results if r.database == database], args.folder, database)
    print(f"load average at the end: {common.load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
