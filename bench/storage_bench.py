"""Storage of the whole mirror beside the raw mail: every table, its indexes and its FULLTEXT index, as MariaDB
counts them (pages) and as they take the disk (the .ibd files' allocated blocks).

    .venv/bin/python -m bench.storage_bench [--messages 10000] [--seed 1]

One run: a private Dovecot is seeded with `inboxql.mailgen`'s mailbox; two fresh databases, migrated to the
newest revision, are each filled by the real sync (`inboxql sync --once`, a child process):

- **page compressed**: the tables as the migrations leave them (migration 0015: PAGE_COMPRESSED=1 on the tables
  that grow with the mail);
- **plain**, the baseline: the same database with those tables' PAGE_COMPRESSED set back to 0 before the sync
  (what that migration's downgrade does), i.e. the storage of the code before it.

`inboxql verify` must find the compressed mirror identical to the server. mbsync (Debian's isync, installed when
missing and running as root) copies the same mailbox into a Maildir as the outside baseline. Before measuring,
each table's dirty pages are written out (FLUSH TABLES ... FOR EXPORT), so the files hold what the mirror holds.

What is printed per table: data+index MiB from information_schema after ANALYZE TABLE (the FULLTEXT index's
auxiliary tables are not in information_schema.tables, and InnoDB keeps no statistics of them: their pages are
their files' sizes), and the allocated MiB of its .ibd files (st_blocks: a page-compressed file is sparse, its
size on `ls` stays that of uncompressed pages). Goal (issue 12): the whole mirror within 1.5x the raw size.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, create_engine, make_url, text

from bench import common
from bench.common import MIB, BenchError, Timed
from bench.sync_bench import _mbsync, _mbsync_config, _tree_bytes
from inboxql.devmail import DovecotServer
from schema.models import Base

FTS = "(FULLTEXT index of messages)"


def growing_tables() -> list[str]:
    """The tables the models page compress (migration 0015's)."""
    return sorted(n for n, t in Base.metadata.tables.items() if t.dialect_options["mysql"].get("page_compressed"))


@dataclass(frozen=True, slots=True)
class Sizes:
    pages: dict[str, int]  # table -> data+index bytes (information_schema; FTS tables from INNODB_SYS_TABLESTATS)
    disk: dict[str, int]  # table -> allocated bytes of its .ibd files
    apparent: dict[str, int]  # table -> the files' sizes as `ls` shows them


@dataclass(frozen=True, slots=True)
class Mirror:
    sync: Timed
    flush_seconds: float
    sizes: Sizes


@contextmanager
def _connection(url: str) -> Iterator[Connection]:
    engine = create_engine(make_url(url).set(drivername="mysql+pymysql"))
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def _table_of(space: str) -> str:
    return FTS if space.startswith("FTS_") else space


def measure(url: str) -> tuple[float, Sizes]:
    """Write out each table's dirty pages, then count its pages and its files' blocks. Returns the flush's wall
    seconds and the sizes."""
    name = make_url(url).database or ""
    with _connection(url) as conn:
        tables = [
            str(r[0])
            for r in conn.execute(
                text("SELECT table_name FROM information_schema.tables WHERE table_schema = :db"), {"db": name}
            )
        ]
        start = time.perf_counter()
        for table in tables:
            conn.execute(text(f"FLUSH TABLES `{table}` FOR EXPORT"))
            conn.execute(text("UNLOCK TABLES"))
        flushed = time.perf_counter() - start
        for table in tables:
            conn.execute(text(f"ANALYZE TABLE `{table}`")).fetchall()
        pages = {
            str(r[0]): int(r[1])
            for r in conn.execute(
                text(
                    "SELECT table_name, data_length + index_length FROM information_schema.tables"
                    " WHERE table_schema = :db"
                ),
                {"db": name},
            )
        }
        disk: dict[str, int] = defaultdict(int)
        apparent: dict[str, int] = defaultdict(int)
        for space, allocated, size in conn.execute(
            text(
                "SELECT name, allocated_size, file_size FROM information_schema.innodb_sys_tablespaces"
                " WHERE name LIKE :prefix"
            ),
            {"prefix": f"{name}/%"},
        ):
            table = _table_of(str(space).split("/", 1)[1])
            disk[table] += int(allocated)
            apparent[table] += int(size)
    # InnoDB keeps no statistics of the FULLTEXT tables: their files' sizes count their pages (free ones too).
    pages[FTS] = apparent.get(FTS, 0)
    return flushed, Sizes(pages, dict(disk), dict(apparent))


def _set_page_compression(url: str, on: bool) -> None:
    with _connection(url) as conn:
        for table in growing_tables():
            conn.execute(text(f"ALTER TABLE `{table}` PAGE_COMPRESSED={int(on)}"))


def _sync(server: DovecotServer, user: str, password: str, url: str, *, verify: bool) -> Mirror:
    env = common.cli_env(url)
    account_id = common.add_account(server, user, password, env)
    synced = common.timed_run([*common.inboxql_command(), "sync", "--once", "--account", str(account_id)], env=env)
    if synced.returncode != 0:
        raise BenchError(f"inboxql sync exited {synced.returncode}: {synced.stderr[-3000:]}")
    if verify:
        checked = common.timed_run([*common.inboxql_command(), "verify", str(account_id)], env=env, timeout=600)
        if checked.returncode != 0:
            raise BenchError(f"inboxql verify found differences:\n{checked.stderr[-3000:]}")
    flushed, sizes = measure(url)
    return Mirror(synced, flushed, sizes)


# Bounds tried for the searchable text of a message (messages.text_body, the FULLTEXT index's body column).
PREFIXES = (2000, 1000)


@dataclass(frozen=True, slots=True)
class Copy:
    label: str
    pages: int  # data+index bytes, its FULLTEXT tables included
    disk: int  # allocated bytes of its files, its FULLTEXT tables' included


def _copy_sizes(conn: Connection, db: str, name: str) -> tuple[int, int]:
    conn.execute(text(f"FLUSH TABLES `{name}` FOR EXPORT"))
    conn.execute(text("UNLOCK TABLES"))
    conn.execute(text(f"ANALYZE TABLE `{name}`")).fetchall()
    table_id = int(
        conn.execute(
            text("SELECT table_id FROM information_schema.innodb_sys_tables WHERE name = :n"), {"n": f"{db}/{name}"}
        ).scalar_one()
    )
    fts = f"{db}/FTS\\_{table_id:016x}\\_%"
    pages = int(
        conn.execute(
            text(
                "SELECT data_length + index_length FROM information_schema.tables"
                " WHERE table_schema = :db AND table_name = :n"
            ),
            {"db": db, "n": name},
        ).scalar_one()
    )
    disk, fts_files = conn.execute(
        text(
            "SELECT SUM(allocated_size), SUM(IF(name LIKE :fts, file_size, 0))"
            " FROM information_schema.innodb_sys_tablespaces WHERE name = :n OR name LIKE :fts"
        ),
        {"n": f"{db}/{name}", "fts": fts},
    ).one()
    return pages + int(fts_files), int(disk)


def prefix_copies(url: str) -> list[Copy]:
    """Copies of the compressed mirror's messages table, rebuilt row by row (so all equally compact): as it is,
    and with the searchable text cut to each of PREFIXES characters. Each is measured and dropped."""
    db = make_url(url).database or ""
    found: list[Copy] = []
    with _connection(url) as conn:
        for cut in (None, *PREFIXES):
            name = f"bench_messages_{cut or 'whole'}"
            conn.execute(text(f"CREATE TABLE `{name}` LIKE messages"))
            try:
                body = f"LEFT(text_body, {cut})" if cut else "text_body"
                columns = [str(r[0]) for r in conn.execute(text("SHOW COLUMNS FROM messages"))]
                listed = ", ".join(f"`{c}`" for c in columns)
                chosen = ", ".join(body if c == "text_body" else f"`{c}`" for c in columns)
                conn.execute(text(f"INSERT INTO `{name}` ({listed}) SELECT {chosen} FROM messages"))
                conn.commit()
                pages, disk = _copy_sizes(conn, db, name)
            finally:
                conn.execute(text(f"DROP TABLE `{name}`"))
            found.append(Copy(f"text cut to {cut} characters" if cut else "text whole (as now)", pages, disk))
    return found


def _allocated(root: Path) -> int:
    return sum(os.stat(p).st_blocks * 512 for p in root.rglob("*"))


def run(messages: int, seed: int, prefixes: bool) -> None:
    common.apt_install("mbsync", "isync")
    common.check_services()
    print(f"machine: {common.machine()}")
    print(f"load average at start: {common.load_average()}")
    work = Path(tempfile.mkdtemp(prefix="inboxql-bench-"))
    try:
        with common.private_dovecot() as server:
            user, password = common.new_user(server)
            seeded = common.seed_mailbox(server, user, password, messages, seed)
            total = sum(seeded.counts.values())
            print(f"seeded {total} messages ({seeded.raw_bytes / MIB:.1f} MiB raw): {seeded.counts}")
            with common.throwaway_database("inboxql_storage_plain") as url:
                _set_page_compression(url, False)
                plain = _sync(server, user, password, url, verify=False)
            with common.throwaway_database("inboxql_storage") as url:
                compressed = _sync(server, user, password, url, verify=True)
                copies = prefix_copies(url) if prefixes else []
            config = work / "mbsyncrc"
            maildir = work / "Maildir"
            maildir.mkdir()
            config.write_text(_mbsync_config(server, user, password, maildir))
            config.chmod(0o600)
            _mbsync(config)
            maildir_bytes, maildir_blocks = _tree_bytes(maildir), _allocated(maildir)
        print(f"load average after the runs: {common.load_average()}")
        report(total, seeded.raw_bytes, plain, compressed, maildir_bytes, maildir_blocks)
        if copies:
            report_copies(copies)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _mib(n: int) -> str:
    return f"{n / MIB:8.2f}"


def report(total: int, raw: int, plain: Mirror, compressed: Mirror, maildir: int, maildir_blocks: int) -> None:
    print()
    print(f"== storage of {total} messages: raw {raw / MIB:.1f} MiB ==")
    print("(pages: data+index in information_schema; disk: allocated blocks of the .ibd files; MiB)")
    header = f"{'table':30} {'pages plain':>12} {'pages compr.':>12} {'disk plain':>12} {'disk compr.':>12}"
    print(header)
    tables = sorted(
        set(plain.sizes.pages) | set(plain.sizes.disk),
        key=lambda t: -plain.sizes.disk.get(t, 0),
    )
    for table in tables:
        row = (
            plain.sizes.pages.get(table, 0),
            compressed.sizes.pages.get(table, 0),
            plain.sizes.disk.get(table, 0),
            compressed.sizes.disk.get(table, 0),
        )
        if max(row) >= MIB // 4:
            mark = " *" if table in growing_tables() or table == FTS else ""
            print(f"{table + mark:30} {_mib(row[0]):>12} {_mib(row[1]):>12} {_mib(row[2]):>12} {_mib(row[3]):>12}")
    sums = [
        sum(plain.sizes.pages.values()),
        sum(compressed.sizes.pages.values()),
        sum(plain.sizes.disk.values()),
        sum(compressed.sizes.disk.values()),
    ]
    print(f"{'all tables (smaller ones too)':30} " + " ".join(f"{_mib(s):>12}" for s in sums))
    print(f"{'  x raw (goal <= 1.5)':30} " + " ".join(f"{s / raw:12.2f}" for s in sums))
    print("* page compressed in the compressed mirror (the FULLTEXT index's tables follow messages)")
    print(
        f"files as `ls` sizes them (not sparse): plain {sum(plain.sizes.apparent.values()) / MIB:.1f} MiB,"
        f" compressed {sum(compressed.sizes.apparent.values()) / MIB:.1f} MiB"
    )
    print(
        f"mbsync's Maildir: {maildir / MIB:.1f} MiB of files ({maildir / raw:.2f}x raw),"
        f" {maildir_blocks / MIB:.1f} MiB allocated ({maildir_blocks / raw:.2f}x raw)"
    )
    print()
    print("the syncs that filled them (child process; MariaDB CPU is the server's, shared with other work):")
    print(f"{'':20} {'wall s':>8} {'msg/s':>8} {'CPU s':>7} {'MariaDB CPU s':>14} {'flush s':>8}")
    for label, mirror in (("plain", plain), ("page compressed", compressed)):
        t = mirror.sync
        print(
            f"{label:20} {t.wall:8.2f} {total / t.wall:8,.0f} {t.cpu:7.2f} {t.server_cpu:14.2f}"
            f" {mirror.flush_seconds:8.2f}"
        )
    print("the compressed mirror: `inboxql verify` found it identical")


def report_copies(copies: list[Copy]) -> None:
    print()
    print("== a bounded prefix of each body for search: copies of the compressed messages table (MiB) ==")
    print("(rebuilt row by row, so all equally compact; FULLTEXT tables included; measured, then dropped)")
    print(f"{'messages':34} {'pages':>8} {'disk':>8}")
    for copy in copies:
        print(f"{copy.label:34} {_mib(copy.pages)} {_mib(copy.disk)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-prefixes", action="store_true", help="skip measuring bounded text prefixes")
    args = parser.parse_args(argv)
    try:
        run(args.messages, args.seed, not args.no_prefixes)
    except BenchError as exc:
        print(f"storage_bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
