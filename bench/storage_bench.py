"""Storage of the whole mirror beside the raw mail: every table, its indexes and its FULLTEXT index, as MariaDB
counts them (pages) and as they take the disk (the .ibd files' allocated blocks).

    .venv/bin/python -m bench.storage_bench [--messages 10000] [--seed 1] [--compressed-first] [--no-alternatives]

One run: a private Dovecot is seeded with `inboxql.mailgen`'s mailbox; two fresh databases, migrated to the
newest revision, are each filled by the real sync (`inboxql sync --once`, a child process):

- **page compressed**: the tables as the migrations leave them (migration 0015: PAGE_COMPRESSED=1 on the tables
  that grow with the mail);
- **plain**, the baseline: the same database with those tables' PAGE_COMPRESSED set back to 0 before the sync
  (what that migration's downgrade does), i.e. the storage of the code before it.

The plain one is synced first unless --compressed-first (the machine's load changes between the two).

`inboxql verify` must find the compressed mirror identical to the server. mbsync (Debian's isync, installed when
missing and running as root) copies the same mailbox into a Maildir as the outside baseline. Before measuring,
each table's dirty pages are written out (FLUSH TABLES ... FOR EXPORT), so the files hold what the mirror holds.

What is printed per table: data+index MiB from information_schema after ANALYZE TABLE (the FULLTEXT index's
auxiliary tables are not in information_schema.tables, and InnoDB keeps no statistics of them: their pages are
their files' sizes), and the allocated MiB of its .ibd files (st_blocks: a page-compressed file is sparse, its
size on `ls` stays that of uncompressed pages). Goal (issue 12): the whole mirror within 1.5x the raw size.

Then what compression costs: zlib over every page of the plain mirror in this process, priced per page against
the pages the server counted compressing (Innodb_num_pages_page_compressed); the blobs' own zlib levels; and,
unless --no-alternatives, other ways measured on copies of the compressed mirror's tables (a bounded text
prefix for search, a rebuilt FULLTEXT index, ROW_FORMAT=COMPRESSED, column compression) and the server's CPU
writing copies of its largest tables plain and page compressed in turn.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import zlib
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
from inboxql.mailgen import generate
from schema.models import Base

FTS = "(FULLTEXT index of messages)"


def growing_tables() -> list[str]:
    """The tables the models page compress (migration 0015's)."""
    return sorted(n for n, t in Base.metadata.tables.items() if t.dialect_options["mysql"].get("page_compressed"))


@dataclass(frozen=True, slots=True)
class Sizes:
    pages: dict[str, int]  # table -> data+index bytes (information_schema; FTS tables: their files' sizes)
    disk: dict[str, int]  # table -> allocated bytes of its .ibd files
    apparent: dict[str, int]  # table -> the files' sizes as `ls` shows them


@dataclass(frozen=True, slots=True)
class Mirror:
    sync: Timed
    flush_seconds: float
    sizes: Sizes
    # The server's count of pages it compressed and decompressed (page compression) over the sync, the verify and
    # the flush: global counters, but only this benchmark's databases hold page-compressed tables.
    compressed_pages: int
    decompressed_pages: int


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


def _compression_counters(url: str) -> tuple[int, int]:
    with _connection(url) as conn:
        rows = conn.execute(
            text(
                "SHOW GLOBAL STATUS WHERE variable_name IN"
                " ('Innodb_num_pages_page_compressed', 'Innodb_num_pages_page_decompressed')"
            )
        ).all()
    found = {str(name): int(value) for name, value in rows}
    return found.get("Innodb_num_pages_page_compressed", 0), found.get("Innodb_num_pages_page_decompressed", 0)


def _sync(server: DovecotServer, user: str, password: str, url: str, *, verify: bool) -> Mirror:
    counted = _compression_counters(url)
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
    compressed, decompressed = _compression_counters(url)
    return Mirror(synced, flushed, sizes, compressed - counted[0], decompressed - counted[1])


@dataclass(frozen=True, slots=True)
class Alternative:
    """A copy of one of the compressed mirror's tables, made another way."""

    table: str
    label: str
    alter: str = ""  # applied to the empty copy (a copy starts page compressed, as its table)
    text_body: str = "text_body"  # what messages.text_body is filled with
    after: str = ""  # run once the copy is filled


ALTERNATIVES = (
    Alternative("messages", "as the mirror's (page compressed)"),
    Alternative("messages", "text cut to 2,000 characters", text_body="LEFT(text_body, 2000)"),
    Alternative("messages", "text cut to 1,000 characters", text_body="LEFT(text_body, 1000)"),
    # A FULLTEXT index filled row by row (as the sync does) is made of many small pieces per word; a rebuild
    # writes each word's list once.
    Alternative("messages", "rebuilt once filled (OPTIMIZE TABLE)", after="OPTIMIZE TABLE {name}"),
    Alternative("change_log", "as the mirror's (page compressed)"),
    Alternative(
        "change_log",
        "ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=8",
        "PAGE_COMPRESSED=0, ROW_FORMAT=COMPRESSED, KEY_BLOCK_SIZE=8",
    ),
    Alternative(
        "change_log",
        "ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=4",
        "PAGE_COMPRESSED=0, ROW_FORMAT=COMPRESSED, KEY_BLOCK_SIZE=4",
    ),
    Alternative("change_log", "column compression of data", "PAGE_COMPRESSED=0, MODIFY data LONGTEXT COMPRESSED NULL"),
    Alternative("mime_blobs", "as the mirror's (page compressed)"),
    Alternative(
        "mime_blobs",
        "ROW_FORMAT=COMPRESSED KEY_BLOCK_SIZE=8",
        "PAGE_COMPRESSED=0, ROW_FORMAT=COMPRESSED, KEY_BLOCK_SIZE=8",
    ),
)


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


def measure_alternatives(url: str) -> list[Copy]:
    """Each of ALTERNATIVES: a copy of its table in the compressed mirror's database, filled from the table row
    by row (so the copies of a table are equally compact, unlike the table its sync grew), measured, dropped."""
    db = make_url(url).database or ""
    found: list[Copy] = []
    with _connection(url) as conn:
        for i, alt in enumerate(ALTERNATIVES):
            name = f"bench_copy_{i}"
            conn.execute(text(f"CREATE TABLE `{name}` LIKE `{alt.table}`"))
            try:
                if alt.alter:
                    conn.execute(text(f"ALTER TABLE `{name}` {alt.alter}"))
                columns = [str(r[0]) for r in conn.execute(text(f"SHOW COLUMNS FROM `{alt.table}`"))]
                listed = ", ".join(f"`{c}`" for c in columns)
                chosen = ", ".join(alt.text_body if c == "text_body" else f"`{c}`" for c in columns)
                conn.execute(text(f"INSERT INTO `{name}` ({listed}) SELECT {chosen} FROM `{alt.table}`"))
                conn.commit()
                if alt.after:
                    conn.execute(text(alt.after.format(name=f"`{name}`"))).fetchall()
                pages, disk = _copy_sizes(conn, db, name)
            finally:
                conn.execute(text(f"DROP TABLE `{name}`"))
            found.append(Copy(f"{alt.table}: {alt.label}", pages, disk))
    return found


def _allocated(root: Path) -> int:
    return sum(os.stat(p).st_blocks * 512 for p in root.rglob("*"))


@dataclass(frozen=True, slots=True)
class Zlib:
    """zlib over every 16 KiB page of the plain mirror's growing tables, once, in this process: what the server
    does at least once per page when it writes a page-compressed table (again whenever a page is written again)."""

    level: int
    pages: int
    cpu_seconds: float
    blocks: int  # compressed pages in 4 KiB blocks


def page_zlib(url: str, levels: tuple[int, ...] = (1, 6)) -> list[Zlib]:
    """Empty when the server's files cannot be read from here (another host, or not root)."""
    db = make_url(url).database or ""
    with _connection(url) as conn:
        datadir = Path(str(conn.execute(text("SELECT @@datadir")).scalar_one()))
    files = [datadir / db / f"{table}.ibd" for table in growing_tables()]
    files += sorted((datadir / db).glob("FTS_*.ibd")) if os.access(datadir / db, os.R_OK) else []
    found = []
    for level in levels:
        pages = blocks = 0
        start = time.process_time()
        try:
            for path in files:
                with path.open("rb") as f:
                    while page := f.read(16384):
                        pages += 1
                        blocks += -(-len(zlib.compress(page, level)) // 4096)
        except OSError:
            return []
        found.append(Zlib(level, pages, time.process_time() - start, blocks * 4096))
    return found


def _plain(server: DovecotServer, user: str, password: str) -> tuple[Mirror, list[Zlib]]:
    with common.throwaway_database("inboxql_storage_plain") as url:
        _set_page_compression(url, False)
        mirror = _sync(server, user, password, url, verify=False)
        return mirror, page_zlib(url)


# What the server spends writing the mirror's largest tables plain and page compressed, apart from the sync.
WRITTEN = ("mime_blobs", "messages", "change_log", "threads")
ROUNDS = 3


@dataclass(frozen=True, slots=True)
class Written:
    compressed: bool
    server_cpu: float  # MariaDB's CPU seconds (the whole server's: other work on it counts too)
    wall: float


def write_cost(url: str) -> list[Written]:
    """Copies of WRITTEN filled from the compressed mirror and written out (FLUSH TABLES ... FOR EXPORT), plain
    and page compressed in turn, ROUNDS times (each round starts with the other kind); each copy dropped."""
    found: list[Written] = []
    with _connection(url) as conn:
        for round_ in range(ROUNDS):
            for compressed in (False, True) if round_ % 2 == 0 else (True, False):
                cpu = common._cpu_seconds(common.MARIADB_PID)
                start = time.perf_counter()
                for table in WRITTEN:
                    name = f"bench_write_{table}"
                    conn.execute(text(f"CREATE TABLE `{name}` LIKE `{table}`"))
                    try:
                        conn.execute(text(f"ALTER TABLE `{name}` PAGE_COMPRESSED={int(compressed)}"))
                        conn.execute(text(f"INSERT INTO `{name}` SELECT * FROM `{table}`"))
                        conn.commit()
                        conn.execute(text(f"FLUSH TABLES `{name}` FOR EXPORT"))
                        conn.execute(text("UNLOCK TABLES"))
                    finally:
                        conn.execute(text(f"DROP TABLE `{name}`"))
                wall = time.perf_counter() - start
                found.append(Written(compressed, common._cpu_seconds(common.MARIADB_PID) - cpu, wall))
    return found


def _compressed(
    server: DovecotServer, user: str, password: str, alternatives: bool
) -> tuple[Mirror, list[Copy], list[Written]]:
    with common.throwaway_database("inboxql_storage") as url:
        mirror = _sync(server, user, password, url, verify=True)
        if not alternatives:
            return mirror, [], []
        return mirror, measure_alternatives(url), write_cost(url)


def run(messages: int, seed: int, alternatives: bool, compressed_first: bool) -> None:
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
            if compressed_first:
                compressed, copies, written = _compressed(server, user, password, alternatives)
                plain, zlibbed = _plain(server, user, password)
            else:
                plain, zlibbed = _plain(server, user, password)
                compressed, copies, written = _compressed(server, user, password, alternatives)
            config = work / "mbsyncrc"
            maildir = work / "Maildir"
            maildir.mkdir()
            config.write_text(_mbsync_config(server, user, password, maildir))
            config.chmod(0o600)
            _mbsync(config)
            maildir_bytes, maildir_blocks = _tree_bytes(maildir), _allocated(maildir)
        print(f"load average after the runs: {common.load_average()}")
        report(total, seeded.raw_bytes, plain, compressed, maildir_bytes, maildir_blocks)
        report_zlib(zlibbed, blob_levels(messages, seed), compressed)
        if copies:
            report_copies(copies)
        if written:
            report_written(written)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _mib(n: int) -> str:
    return f"{n / MIB:8.2f}"


def blob_levels(messages: int, seed: int, levels: tuple[int, ...] = (1, 6, 9)) -> dict[int, int]:
    """The packed bytes of the same mail at each zlib level (schema.packing.pack uses 1)."""
    raws = list(generate(messages, seed))
    return {level: sum(min(len(zlib.compress(raw, level)), len(raw)) for raw in raws) for level in levels}


def report_zlib(pages: list[Zlib], blobs: dict[int, int], compressed: Mirror) -> None:
    print()
    print("== zlib's cost and gain ==")
    for z in pages:
        per_page = z.cpu_seconds / max(z.pages, 1)
        print(
            f"every page of the plain mirror's growing tables ({z.pages} pages of 16 KiB) at level {z.level}:"
            f" {z.cpu_seconds:.2f} CPU s once, {z.blocks / MIB:.1f} MiB in 4 KiB blocks;"
            f" at {1e6 * per_page:.0f} us a page, the server's {compressed.compressed_pages} compressions"
            f" ~{per_page * compressed.compressed_pages:.2f} CPU s"
        )
    if not pages:
        print("(the server's files are not readable from here: the page figures are left out)")
    print("the raw messages packed whole: " + ", ".join(f"level {lv} {n / MIB:.1f} MiB" for lv, n in blobs.items()))


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
    for label, mirror in (("plain", plain), ("page compressed", compressed)):
        print(
            f"pages the server compressed / decompressed ({label}, sync, verify and flush):"
            f" {mirror.compressed_pages} / {mirror.decompressed_pages}"
        )


def report_written(written: list[Written]) -> None:
    print()
    print(f"== the server writing {', '.join(WRITTEN)} again: copies filled and written out, {ROUNDS} rounds ==")
    print("(MariaDB's CPU is the whole server's: other work on it counts too)")
    for compressed in (False, True):
        mine = [w for w in written if w.compressed == compressed]
        cpus = ", ".join(f"{w.server_cpu:.2f}" for w in mine)
        walls = ", ".join(f"{w.wall:.2f}" for w in mine)
        label = "page compressed" if compressed else "plain"
        print(
            f"{label:16} MariaDB CPU s {cpus} (median {statistics.median(w.server_cpu for w in mine):.2f});"
            f" wall s {walls}"
        )


def report_copies(copies: list[Copy]) -> None:
    print()
    print("== other ways, tried on copies of the compressed mirror's tables (MiB) ==")
    print("(each filled from its table row by row, so a table's copies are equally compact; FULLTEXT tables included)")
    print(f"{'copy':64} {'pages':>8} {'disk':>8}")
    for copy in copies:
        print(f"{copy.label:64} {_mib(copy.pages)} {_mib(copy.disk)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-alternatives", action="store_true", help="skip the copies made other ways")
    parser.add_argument("--compressed-first", action="store_true", help="sync the compressed mirror first")
    args = parser.parse_args(argv)
    try:
        run(args.messages, args.seed, not args.no_alternatives, args.compressed_first)
    except BenchError as exc:
        print(f"storage_bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
