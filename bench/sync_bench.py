"""Initial sync of a 10,000-message mailbox: inboxql against mbsync, storage, resyncs, and where the time goes.

    .venv/bin/python -m bench.sync_bench [--messages 10000] [--seed 1] [--no-profile]
    .venv/bin/python -m bench.sync_bench --scale 10000 100000 [--large-mib 50]
    .venv/bin/python -m bench.sync_bench --write-path 2000

One run: a private Dovecot (temp dir, free ports) is seeded with generated mail (~85% INBOX, ~10% Archive,
~5% Sent; ~70% \\Seen, ~5% \\Flagged, ~10% \\Answered, a few keywords); a fresh database gets the account;
then, each timed as a child process (wall time; CPU and peak RSS from wait4 on that child):

1. `inboxql sync --once` (initial), `inboxql verify` (must say identical), `inboxql sync --once` (no-op);
2. mbsync (`FSync no`, `PipelineDepth 50`, into a temp Maildir), initial and no-op;
3. 1,000 flag changes from another IMAP connection, then both resync, then `inboxql verify` again;
4. storage: per-table InnoDB bytes (after ANALYZE TABLE), blob bytes, raw mail bytes;
5. the initial sync again, in this process under cProfile, into a second fresh database.

With --scale, instead: for each size a mailbox of its own and a fresh database, the initial sync timed with the
peak RSS of the sync process and its MIME worker processes together (their RSS summed, polled every 20 ms; beside
it the sync process's own peak, and the peak of the same processes' PSS summed, which counts the pages the fork
server shares with its workers once), then mbsync on the same mailbox; msg/s of each size over the first's.
--large-mib adds one message with an attachment of that many MiB, synced alone, beside one of 1 MiB synced alone
(the peak of the same process tree; both are parsed in a worker process).

Baselines (FIELD-NOTES, same kind of machine): mbsync 0.45-0.57 s for 10k; the Nylas fork 185 s, ~6x storage.
Goals: >= half of mbsync's speed; storage <= 1.5x raw; (push latency: bench/push_bench.py).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import dataclasses
import functools
import imaplib
import os
import pstats
import random
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event, make_url, text

from bench import common
from bench.common import MIB, BenchError, Timed
from inboxql.devmail import DovecotServer

FIELD_NOTES_MBSYNC_S = 0.5
FIELD_NOTES_NYLAS_S = 185.0
FIELD_NOTES_NYLAS_STORAGE_RATIO = 6.0
FLAG_CHANGES = 1000
PROFILE_TIMEOUT = 1200.0  # seconds for the in-process (cProfile) sync


# -- steps ---------------------------------------------------------------------------------------------------


def _inboxql(args: list[str], env: dict[str, str], timeout: float = 900) -> Timed:
    timed = common.timed_run([*common.inboxql_command(), *args], env=env, timeout=timeout)
    if timed.returncode != 0:
        raise BenchError(f"inboxql {' '.join(args)} exited {timed.returncode}: {timed.stderr[-3000:]}")
    return timed


def _verify(account_id: int, env: dict[str, str]) -> Timed:
    timed = common.timed_run([*common.inboxql_command(), "verify", str(account_id)], env=env, timeout=600)
    if timed.returncode != 0:
        raise BenchError(f"inboxql verify found differences:\n{timed.stderr[-3000:]}")
    return timed


def _mbsync_config(server: DovecotServer, user: str, password: str, maildir: Path) -> str:
    return f"""FSync no

IMAPAccount bench
Host {server.host}
Port {server.port}
User {user}
Pass {password}
SSLType None
AuthMechs LOGIN
PipelineDepth 50

IMAPStore remote
Account bench

MaildirStore local
Path {maildir}/
Inbox {maildir}/INBOX
SubFolders Verbatim

Channel mirror
Far :remote:
Near :local:
Patterns *
Create Near
Sync Pull
SyncState *
Expunge None
"""


def _mbsync(config: Path) -> Timed:
    timed = common.timed_run(["mbsync", "-q", "-c", str(config), "-a"], timeout=300)
    if timed.returncode != 0:
        raise BenchError(f"mbsync exited {timed.returncode}: {timed.stderr[-2000:]}")
    return timed


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def change_flags(
    server: DovecotServer, user: str, password: str, count: int, seed: int, mailbox: str = "INBOX"
) -> None:
    """`count` flag changes on `mailbox` from another connection: ~70% toggle \\Seen, ~30% toggle \\Flagged."""
    rng = random.Random(seed)
    imap = imaplib.IMAP4(server.host, server.port, timeout=60)
    try:
        imap.login(user, password)
        imap.select(mailbox)
        typ, data = imap.uid("FETCH", "1:*", "(FLAGS)")
        if typ != "OK":
            raise BenchError(f"UID FETCH FLAGS failed: {data!r}")
        flags: dict[int, str] = {}
        for line in data:
            if isinstance(line, bytes):
                parts = line.decode().split("UID ", 1)
                if len(parts) == 2:
                    uid = int(parts[1].split()[0].rstrip(")"))
                    flags[uid] = line.decode()
        chosen = rng.sample(sorted(flags), min(count, len(flags)))
        batches: dict[tuple[str, str], list[int]] = defaultdict(list)
        for uid in chosen:
            flag = "\\Seen" if rng.random() < 0.7 else "\\Flagged"
            sign = "-" if flag in flags[uid] else "+"
            batches[(sign, flag)].append(uid)
        for (sign, flag), uids in batches.items():
            typ, data = imap.uid("STORE", ",".join(map(str, uids)), f"{sign}FLAGS.SILENT", f"({flag})")
            if typ != "OK":
                raise BenchError(f"UID STORE failed: {data!r}")
    finally:
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            imap.logout()


# -- storage ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Storage:
    sizes: dict[str, int]  # table -> data_length + index_length after ANALYZE TABLE
    optimized: dict[str, int]  # the same after OPTIMIZE TABLE (rebuilt, pages full)
    blob_bytes: int  # SUM(LENGTH(data)) of mime_blobs and mime_blob_chunks
    blob_count: int
    files: int | None  # allocated size of the tables' .ibd files, dirty pages written out (before OPTIMIZE)


def storage(url: str) -> Storage:
    """Per-table data+index bytes after ANALYZE TABLE (and after OPTIMIZE TABLE), blob bytes, .ibd sizes."""
    parsed = make_url(url)
    name = parsed.database or ""
    engine = create_engine(parsed.set(drivername="mysql+pymysql"))
    try:
        with engine.connect() as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    text("SELECT table_name FROM information_schema.tables WHERE table_schema = :db"), {"db": name}
                )
            ]
            for table in tables:
                conn.execute(text(f"ANALYZE TABLE `{table}`")).fetchall()
            sizes = {
                row[0]: int(row[1])
                for row in conn.execute(
                    text(
                        "SELECT table_name, data_length + index_length FROM information_schema.tables "
                        "WHERE table_schema = :db ORDER BY 2 DESC"
                    ),
                    {"db": name},
                )
            }
            blob = conn.execute(
                text(
                    "SELECT COALESCE(SUM(LENGTH(data)), 0)"
                    " + (SELECT COALESCE(SUM(LENGTH(data)), 0) FROM mime_blob_chunks), COUNT(*) FROM mime_blobs"
                )
            ).one()
            files: int | None
            try:
                # The files hold what InnoDB wrote so far: write every table's dirty pages out first (read right
                # after the sync, they showed a fraction of the mirror).
                for table in tables:
                    conn.execute(text(f"FLUSH TABLES `{table}` FOR EXPORT"))
                    conn.execute(text("UNLOCK TABLES"))
                found = conn.execute(
                    text(
                        "SELECT SUM(allocated_size) FROM information_schema.innodb_sys_tablespaces "
                        "WHERE name LIKE :prefix"
                    ),
                    {"prefix": f"{name}/%"},
                ).scalar()
                files = int(found) if found is not None else None
            except Exception:
                files = None
            # Rebuilt tables show how much of the size is half-empty pages (random primary keys split pages).
            for table in tables:
                conn.execute(text(f"OPTIMIZE TABLE `{table}`")).fetchall()
            optimized = {
                row[0]: int(row[1])
                for row in conn.execute(
                    text(
                        "SELECT table_name, data_length + index_length FROM information_schema.tables "
                        "WHERE table_schema = :db"
                    ),
                    {"db": name},
                )
            }
    finally:
        engine.dispose()
    return Storage(sizes, optimized, int(blob[0]), int(blob[1]), files)


# -- where the time goes ---------------------------------------------------------------------------------

_GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("IMAP fetch", ("/synccore/imap/",)),
    ("MIME parse", ("/mime/", "/email/", "/encodings/", "/html/", "quopri.py", "base64.py")),
    ("SQL", ("/sqlalchemy/", "/asyncmy/", "/pymysql/", "/greenlet/", "/schema/models.py", "/schema/bulk.py")),
    (
        "thread/aggregate work",
        (
            "/schema/threads.py",
            "/schema/aggregates.py",
            "/schema/states.py",
            "/schema/changelog.py",
            "/schema/labels.py",
            "/schema/unit.py",
        ),
    ),
    ("other: rows & blobs (sha256, zlib)", ("/schema/messages.py", "/schema/blobs.py")),
    ("other: sync orchestration", ("/synccore/",)),
    ("other: asyncio loop & sockets", ("/asyncio/", "selectors.py", "socket.py", "ssl.py")),
]
_WAIT = "idle: event loop waiting on sockets (Dovecot, MariaDB)"
_OTHER = "other: everything else"

Func = tuple[str, int, str]


def _direct_group(func: Func) -> str | None:
    filename, _, name = func
    if filename == "~" and "select.epoll" in name:
        return _WAIT
    for group, needles in _GROUPS:
        if any(n in filename for n in needles):
            return group
    return None


def group_profile(stats: dict[Func, Any]) -> dict[str, float]:
    """Self time per group; a function of no group (builtins, stdlib helpers) goes to its callers' groups."""
    memo: dict[Func, dict[str, float]] = {}

    def shares(func: Func, depth: int, seen: frozenset[Func]) -> dict[str, float]:
        if func in memo:
            return memo[func]
        direct = _direct_group(func)
        if direct is not None:
            return {direct: 1.0}
        callers: dict[Func, tuple[Any, ...]] = stats.get(func, (0, 0, 0.0, 0.0, {}))[4]
        weights = {c: float(edge[2]) for c, edge in callers.items() if c not in seen}
        total = sum(weights.values())
        if depth > 40 or total <= 0:
            return {_OTHER: 1.0}
        mix: dict[str, float] = defaultdict(float)
        for caller, weight in weights.items():
            for group, share in shares(caller, depth + 1, seen | {func}).items():
                mix[group] += share * weight / total
        # Kept whatever `seen` cut: memoizing only the top-level answers made the walk exponential in the call
        # graph's fan-in (a run spent minutes here); in a recursive graph an answer reached through a cycle may
        # miss the paths the cycle cut, which moves a little time between the groups of the functions on it.
        memo[func] = dict(mix)
        return dict(mix)

    out: dict[str, float] = defaultdict(float)
    for func, (_, _, tottime, _, _) in stats.items():
        for group, share in shares(func, 0, frozenset()).items():
            out[group] += tottime * share
    return dict(out)


P = ParamSpec("P")
R = TypeVar("R")


_STATEMENT = re.compile(r"^\s*(SELECT|INSERT(?:\s+IGNORE)?|UPDATE|DELETE|COMMIT|ROLLBACK|BEGIN|\w+)", re.IGNORECASE)
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE)\s+`?(\w+)", re.IGNORECASE)


def statement_kind(sql: str) -> str:
    head = sql[:400]
    verb = _STATEMENT.match(head)
    table = _TABLE.search(head)
    kind = verb.group(1).upper() if verb else "?"
    if kind.startswith("INSERT") and "ON DUPLICATE KEY" in sql[-300:].upper():
        kind += " ..ON DUP"
    return f"{kind} {table.group(1) if table else ''}".strip()


class PhaseClock:
    """Wall time spent inside chosen functions (wrapped for one run); overlapping awaits count twice."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.sql_seconds: dict[str, float] = defaultdict(float)
        self.sql_trips: dict[str, int] = defaultdict(int)

    def before_statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info.setdefault("bench_started", []).append(time.perf_counter())

    def after_statement(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        """One statement sent to MariaDB: a round trip (an executemany of INSERTs is one too)."""
        started = conn.info["bench_started"].pop()
        kind = statement_kind(statement[:400])
        self.sql_seconds[kind] += time.perf_counter() - started
        self.sql_trips[kind] += 1

    def wrap_async(self, label: str, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1

        return timed

    def wrap(self, label: str, fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def timed(*args: P.args, **kwargs: P.kwargs) -> R:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.perf_counter() - start
                self.calls[label] += 1

        return timed


@contextlib.contextmanager
def _patched(clock: PhaseClock) -> Iterator[None]:
    """Time the phases of a sync by wrapping a few functions of the sync core for this run only."""
    from schema import aggregates, blobs, changelog, messages, states, threads, unit
    from synccore import folder
    from synccore.imap import client

    targets: list[tuple[Any, str, str, bool]] = [
        (client.ImapClient, "uid_fetch", "IMAP UID FETCH (awaited; bodies prefetch one batch ahead)", True),
        (folder, "parse_message", "MIME parse (parse_message)", False),
        (messages, "add", "messages.add (rows, blobs, threads; in the transaction)", True),
        (blobs, "put_many", "  blobs.put_many (zlib + sha256 + INSERT)", True),
        (threads, "assign", "  threads.assign", True),
        (unit.UnitOfWork, "_settle", "UnitOfWork._settle (aggregates + change log)", True),
        (aggregates, "refresh_messages", "  aggregates.refresh_messages", True),
        (aggregates, "refresh_threads", "  aggregates.refresh_threads", True),
        (aggregates, "refresh_folder_counts", "  aggregates.refresh_folder_counts", True),
        (states, "states", "  states.states (logged object states)", True),
        (changelog, "append", "  changelog.append", True),
    ]
    saved: list[tuple[Any, str, Any]] = []
    for owner, attr, label, is_async in targets:
        original = getattr(owner, attr, None)
        if original is None:  # the sync core moved on: time what is still there
            print(f"(not timed: {getattr(owner, '__name__', owner)}.{attr} is gone)", file=sys.stderr)
            continue
        saved.append((owner, attr, original))
        setattr(owner, attr, clock.wrap_async(label, original) if is_async else clock.wrap(label, original))
    # Every engine, whatever its driver: SQLAlchemy's cursor events see each statement it sends.
    event.listen(Engine, "before_cursor_execute", clock.before_statement)
    event.listen(Engine, "after_cursor_execute", clock.after_statement)
    try:
        yield
    finally:
        event.remove(Engine, "before_cursor_execute", clock.before_statement)
        event.remove(Engine, "after_cursor_execute", clock.after_statement)
        for owner, attr, original in reversed(saved):
            setattr(owner, attr, original)


def profile_sync(url: str, account_id: int, top: int) -> tuple[float, dict[str, float], PhaseClock, str]:
    from inboxql import commands
    from schema.settings import Settings

    env = common.cli_env(url)
    settings = Settings.from_env(env)
    clock = PhaseClock()
    profiler = cProfile.Profile()
    with _patched(clock):
        start = time.perf_counter()
        profiler.enable()
        code = asyncio.run(
            asyncio.wait_for(commands.sync(settings, once=True, accounts=[account_id], poll=30.0), PROFILE_TIMEOUT)
        )
        profiler.disable()
        wall = time.perf_counter() - start
    if code != 0:
        raise BenchError(f"the profiled sync exited {code}")
    stats = pstats.Stats(profiler)
    raw: dict[Func, Any] = stats.stats  # type: ignore[attr-defined]
    groups = group_profile(raw)
    lines: list[str] = []
    ranked = sorted(raw.items(), key=lambda kv: kv[1][3], reverse=True)
    shown = 0
    for (filename, line, name), (_, calls, tottime, cumtime, _) in ranked:
        if not any(k in filename for k in ("/synccore/", "/schema/", "/email/", "/sqlalchemy/orm", "/asyncmy/")):
            continue
        where = filename.split("/main/", 1)[-1].split("site-packages/", 1)[-1]
        lines.append(f"  {cumtime:8.2f} {tottime:8.2f} {calls:9d}  {where}:{line}({name})")
        shown += 1
        if shown >= top:
            break
    return wall, groups, clock, "\n".join(lines)


# -- scale: msg/s and memory as the mailbox grows ----------------------------------------------------------


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for t in Path(f"/proc/{pid}/task").iterdir() for c in (t / "children").read_text().split()]
    except OSError:
        return []


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:100]
    except OSError:
        return "?"


def _tree(pid: int) -> list[int]:
    found, todo = [pid], [pid]
    while todo:
        children = _children(todo.pop())
        found += children
        todo += children
    return found


def _cpu(pid: int) -> float:
    """User + system seconds of a live process so far (/proc/PID/stat, fields 14 and 15)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


@dataclass(frozen=True, slots=True)
class TreeRun:
    timed: Timed
    peak_tree_rss: int  # bytes: the largest sum of VmRSS over the process and its descendants (workers)
    peak_own_rss: int  # bytes: the largest VmRSS of the process alone (the split of the tree's peak)
    peak_tree_pss: int  # bytes: the largest sum of PSS (shared pages counted once) over the same processes
    descendants_cpu: float  # seconds: the descendants' own CPU as last seen (the parse workers, their fork server)

    @property
    def cpu(self) -> float:
        """The child's CPU (wait4) and its descendants': the parse workers are forked by a fork server that the
        child does not reap, so wait4 alone no longer counts them."""
        return self.timed.cpu + self.descendants_cpu


def tree_run(run: Callable[[], Timed]) -> TreeRun:
    """A timed child process (common.timed_run), and meanwhile the RSS of it and all its descendants summed, every
    20 ms. The child is the one child of this process that was not there before (the Dovecot started earlier is)."""
    me = os.getpid()
    before = set(_children(me))
    peak = [0, 0, 0]
    cpu: dict[int, float] = {}
    seen: dict[int, str] = {}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for child in set(_children(me)) - before:
                if child not in seen:
                    seen[child] = _command(child)
                tree = _tree(child)
                sizes = [common.rss(p) for p in tree]
                peak[0] = max(peak[0], sum(sizes))
                peak[1] = max(peak[1], sizes[0])
                peak[2] = max(peak[2], sum(common.pss(p) for p in tree))
                for pid in tree[1:]:
                    cpu[pid] = max(cpu.get(pid, 0.0), _cpu(pid))
            done.wait(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        timed = run()
    finally:
        done.set()
        watcher.join()
    if len(seen) > 1:  # the peaks are of one child's tree: say which others there were
        print(f"  note: {len(seen)} new children during the run: " + "; ".join(seen.values()))
    return TreeRun(timed, peak[0], peak[1], peak[2], sum(cpu.values()))


@dataclass(frozen=True, slots=True)
class ScaleRow:
    messages: int
    raw_bytes: int
    inboxql: TreeRun
    mbsync: TreeRun


def scale_one(server: DovecotServer, work: Path, messages: int, seed: int) -> ScaleRow:
    user, password = common.new_user(server)
    started = time.perf_counter()
    seeded = common.seed_mailbox(server, user, password, messages, seed)
    total = sum(seeded.counts.values())
    print(f"seeded {total} messages ({seeded.raw_bytes / MIB:.1f} MiB raw) in {time.perf_counter() - started:.1f} s")
    with common.throwaway_database() as url:
        env = common.cli_env(url)
        account_id = common.add_account(server, user, password, env)
        print(f"  load average before the sync of {total}: {common.load_average()}")
        synced = tree_run(lambda: _inboxql(["sync", "--once", "--account", str(account_id)], env, 3600))
    maildir = work / f"Maildir-{total}"
    maildir.mkdir()
    config = work / f"mbsyncrc-{total}"
    config.write_text(_mbsync_config(server, user, password, maildir))
    config.chmod(0o600)
    mirrored = tree_run(lambda: _mbsync(config))
    shutil.rmtree(maildir, ignore_errors=True)
    return ScaleRow(total, seeded.raw_bytes, synced, mirrored)


def large_message(mib: int, seed: int) -> bytes:
    """One message carrying an attachment of `mib` MiB of incompressible bytes, base64 in 76-column lines."""
    payload = base64.encodebytes(random.Random(seed).randbytes(mib << 20)).replace(b"\n", b"\r\n")
    return (
        (
            b"Message-ID: <large.%d@example.org>\r\nDate: Sun, 6 Dec 2026 10:00:00 +0000\r\n"
            b"From: Ann <ann@example.org>\r\nTo: bob@example.org\r\nSubject: A large attachment\r\n"
            b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
            b"--b\r\nContent-Type: text/plain\r\n\r\nSee the attachment.\r\n"
            b"--b\r\nContent-Type: application/octet-stream\r\n"
            b'Content-Disposition: attachment; filename="large.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n' % seed
        )
        + payload
        + b"--b--\r\n"
    )


def sync_alone(server: DovecotServer, raw: bytes) -> TreeRun:
    """A mailbox of this one message, synced into a fresh database."""
    user, password = common.new_user(server)
    server.append(user, password, "INBOX", [raw])
    with common.throwaway_database() as url:
        env = common.cli_env(url)
        account_id = common.add_account(server, user, password, env)
        return tree_run(lambda: _inboxql(["sync", "--once", "--account", str(account_id)], env))


def run_scale(sizes: list[int], seed: int, large_mib: int) -> None:
    common.apt_install("mbsync", "isync")
    common.check_services()
    print(f"machine: {common.machine()}")
    print(f"load average at start: {common.load_average()}")
    work = Path(tempfile.mkdtemp(prefix="inboxql-bench-"))
    rows: list[ScaleRow] = []
    try:
        with common.private_dovecot() as server:
            for size in sizes:
                rows.append(scale_one(server, work, size, seed))
            if large_mib:
                raw = large_message(large_mib, seed)
                small = sync_alone(server, large_message(1, seed))  # parsed in a worker too (over INLINE_BYTES)
                large = sync_alone(server, raw)
        print(f"load average at the end: {common.load_average()}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        "== initial sync as the mailbox grows (child processes; CPU and peak RSS of the sync and its MIME workers) =="
    )
    head = f"{'messages':>9} {'raw MiB':>8} {'wall s':>8} {'msg/s':>7} {'CPU s':>7} {'peak RSS MiB':>13}"
    head += f" {'sync alone':>11} {'peak PSS MiB':>13}"
    print(f"{head} {'x first':>8} {'mbsync s':>9} {'x mbsync':>9}")
    first = rows[0].messages / rows[0].inboxql.timed.wall
    for row in rows:
        t, mb = row.inboxql.timed, row.mbsync.timed
        rate = row.messages / t.wall
        print(
            f"{row.messages:9,} {row.raw_bytes / MIB:8.1f} {t.wall:8.1f} {rate:7,.0f} {row.inboxql.cpu:7.1f}"
            f" {row.inboxql.peak_tree_rss / MIB:13.1f} {row.inboxql.peak_own_rss / MIB:11.1f}"
            f" {row.inboxql.peak_tree_pss / MIB:13.1f}"
            f" {rate / first:8.2f} {mb.wall:9.2f} {mb.wall / t.wall:9.3f}"
        )
    print("goals: peak RSS <= 300 MiB; msg/s of the largest within 10% of the first (x first >= 0.90);")
    print("       inboxql speed / mbsync speed (x mbsync) >= 0.5")
    if large_mib:
        print()
        base = len(large_message(1, seed))
        print(f"== one message of {len(raw) / MIB:.1f} MiB synced alone, beside one of {base / MIB:.1f} MiB ==")
        for size, alone in ((base, small), (len(raw), large)):
            print(
                f"  {size / MIB:5.1f} MiB: peak RSS {alone.peak_tree_rss / MIB:7.1f} MiB, wall {alone.timed.wall:.1f} s"
            )
        grown = (large.peak_tree_rss - small.peak_tree_rss) / (len(raw) - base)
        print(f"  peak RSS grew by {grown:.2f} bytes per byte the message grew (goal: no multiple copies, about 1-2)")


# -- the write path alone -------------------------------------------------------------------------------------


def write_path(messages: int, seed: int) -> None:
    """messages.add in units of 250 prepared (parsed, packed) messages into a fresh database: the schema layer's
    cost without IMAP or parsing. CPU is this process's (the driver's and SQLAlchemy's work, not MariaDB's)."""
    from inboxql.mailgen import generate
    from schema import accounts, folders
    from schema import messages as store_messages
    from schema.crypto import CredentialBox
    from schema.db import create_engine
    from schema.unit import Store
    from synccore.prepare import prepare

    raws = list(generate(messages, seed))
    prepared = [prepare(raw) for raw in raws]
    fetched = [
        store_messages.Fetched(
            uid=i + 1,
            flags=("\\Seen",) if i % 3 else (),
            modseq=None,
            identity=f"sha:{p.digest.hex()}",
            internaldate=p.parsed.date,
            raw=raw,
            parsed=p.parsed,
            packed=(p.codec, p.packed),
        )
        for i, (raw, p) in enumerate(zip(raws, prepared, strict=True))
    ]

    async def write(url: str) -> tuple[float, float]:
        engine = create_engine(url)
        store = Store(engine)
        try:
            box = CredentialBox(secrets.token_urlsafe(32))
            endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", "bench")
            account_id = await accounts.create(store, box, "bench@example.org", endpoint, "password")
            async with store.unit(account_id) as uow:
                folder = await folders.create(uow, folders.Discovered("INBOX", "/", (), None))
            wall, cpu = time.perf_counter(), time.process_time()
            for start in range(0, len(fetched), 250):
                async with store.unit(account_id) as uow:
                    await store_messages.add(uow, folder.id, 1, fetched[start : start + 250])
            return time.perf_counter() - wall, time.process_time() - cpu
        finally:
            await engine.dispose()

    print(f"load average at start: {common.load_average()}")
    with common.throwaway_database() as url:
        wall, cpu = asyncio.run(write(url))
    print(f"write path, {messages} messages in units of 250: wall {wall:.2f} s, CPU of this process {cpu:.2f} s")
    print(f"load average at the end: {common.load_average()}")


# -- the run -------------------------------------------------------------------------------------------------


def _rate(n: int, seconds: float) -> str:
    return f"{n / seconds:,.0f} msg/s" if seconds > 0 else "-"


def run(messages: int, seed: int, profile: bool, top: int) -> None:
    common.apt_install("mbsync", "isync")
    common.check_services()
    print(f"machine: {common.machine()}")
    print(f"load average at start: {common.load_average()}")
    work = Path(tempfile.mkdtemp(prefix="inboxql-bench-"))
    try:
        with common.private_dovecot() as server:
            user, password = common.new_user(server)
            start = time.perf_counter()
            seeded = common.seed_mailbox(server, user, password, messages, seed)
            total = sum(seeded.counts.values())
            print(
                f"seeded {total} messages ({seeded.raw_bytes / MIB:.1f} MiB raw)"
                f" in {time.perf_counter() - start:.1f} s: {seeded.counts}"
            )
            with common.throwaway_database() as url:
                env = common.cli_env(url)
                account_id = common.add_account(server, user, password, env)
                sync_args = ["sync", "--once", "--account", str(account_id)]
                # Its CPU with its parse workers' (forked by a fork server that the sync does not reap).
                tree = tree_run(lambda: _inboxql(sync_args, env))
                initial = dataclasses.replace(tree.timed, cpu=tree.cpu)
                verified = _verify(account_id, env)
                noop = _inboxql(sync_args, env)

                config = work / "mbsyncrc"
                maildir = work / "Maildir"
                maildir.mkdir()
                config.write_text(_mbsync_config(server, user, password, maildir))
                config.chmod(0o600)
                startup = common.timed_run(
                    [sys.executable, "-c", "import inboxql.commands, synccore.supervisor"], env=env, timeout=120
                )
                mb_initial = _mbsync(config)
                mb_noop = _mbsync(config)

                change_flags(server, user, password, FLAG_CHANGES, seed)
                after_flags = _inboxql(sync_args, env)
                mb_after_flags = _mbsync(config)
                verified_again = _verify(account_id, env)
                stored = storage(url)
                maildir_bytes = _tree_bytes(maildir)
            print(f"load average after the timed runs: {common.load_average()}")

            _report_speed(
                total,
                initial,
                noop,
                after_flags,
                mb_initial,
                mb_noop,
                mb_after_flags,
                verified,
                verified_again,
                startup,
            )
            _report_storage(seeded.raw_bytes, stored, maildir_bytes)

            if profile:
                with common.throwaway_database() as url:
                    account_id = common.add_account(server, user, password, common.cli_env(url))
                    wall, groups, clock, top_lines = profile_sync(url, account_id, top)
                _report_profile(total, wall, groups, clock, top_lines)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _report_speed(
    total: int,
    initial: Timed,
    noop: Timed,
    after_flags: Timed,
    mb_initial: Timed,
    mb_noop: Timed,
    mb_after_flags: Timed,
    verified: Timed,
    verified_again: Timed,
    startup: Timed,
) -> None:
    print()
    print(f"== initial sync of {total} messages (child process; wall, CPU with its workers', its peak RSS) ==")
    print(f"{'':30} {'wall s':>8} {'msg/s':>10} {'CPU s':>7} {'MariaDB CPU s':>14} {'peak RSS MiB':>13}")
    for label, t in (
        ("inboxql sync --once", initial),
        ("mbsync (FSync no, depth 50)", mb_initial),
    ):
        print(
            f"{label:30} {t.wall:8.2f} {total / t.wall:10,.0f} {t.cpu:7.2f} {t.server_cpu:14.2f}"
            f" {t.peak_rss / MIB:13.1f}"
        )
    ratio = mb_initial.wall / initial.wall
    print(
        f"inboxql speed / mbsync speed: {ratio:.3f} (goal >= 0.5;"
        f" mbsync is {initial.wall / mb_initial.wall:.0f}x faster)"
    )
    print(
        f"baselines (FIELD-NOTES): mbsync ~{FIELD_NOTES_MBSYNC_S} s; Nylas fork {FIELD_NOTES_NYLAS_S:.0f} s "
        f"({_rate(10000, FIELD_NOTES_NYLAS_S)}); inboxql is {FIELD_NOTES_NYLAS_S / initial.wall * total / 10000:.1f}x "
        "the Nylas fork's speed"
    )
    print()
    print("== resyncs (wall s, child process, including its start-up) ==")
    print(f"{'':40} {'inboxql':>8} {'mbsync':>8}")
    print(f"{'no-op resync':40} {noop.wall:8.2f} {mb_noop.wall:8.3f}")
    print(f"{'  of which CPU in the process':40} {noop.cpu:8.2f} {mb_noop.cpu:8.3f}")
    print(f"{f'after {FLAG_CHANGES} flag changes (INBOX)':40} {after_flags.wall:8.2f} {mb_after_flags.wall:8.3f}")
    print(f"{'  of which CPU in the process':40} {after_flags.cpu:8.2f} {mb_after_flags.cpu:8.3f}")
    print(f"{'inboxql start-up alone (imports)':40} {startup.wall:8.2f}")
    print(f"{'inboxql verify (identical)':40} {verified.wall:8.2f} {verified_again.wall:8.2f} (initial / after flags)")


def _report_storage(raw: int, stored: Storage, maildir: int) -> None:
    mysql_total = sum(stored.sizes.values())
    rebuilt = sum(stored.optimized.values())
    blob_bytes = stored.blob_bytes
    print()
    print("== storage ==")
    print(f"raw mail (sum of message sizes):          {raw / MIB:9.1f} MiB")
    print(
        f"blob bytes (mime_blobs.data, {stored.blob_count} rows): {blob_bytes / MIB:7.1f} MiB"
        f" ({blob_bytes / raw:.2f}x raw)"
    )
    print(
        f"MySQL data+index, all tables (pages):     {mysql_total / MIB:9.1f} MiB"
        f" ({mysql_total / raw:.2f}x raw; page compression saves disk, not pages: see the files below)"
    )
    print(f"  the same after OPTIMIZE TABLE:          {rebuilt / MIB:9.1f} MiB ({rebuilt / raw:.2f}x raw)")
    if stored.files is not None:
        print(
            f".ibd files allocated (on disk):           {stored.files / MIB:9.1f} MiB"
            f" ({stored.files / raw:.2f}x raw; goal <= 1.5x)"
        )
    print(f"mbsync Maildir (file bytes):              {maildir / MIB:9.1f} MiB ({maildir / raw:.2f}x raw)")
    print(f"baseline: Nylas fork ~{FIELD_NOTES_NYLAS_STORAGE_RATIO:.0f}x raw")
    print(f"  {'table':20} {'MiB':>9} {'optimized':>10}")
    for table, size in stored.sizes.items():
        if size:
            print(f"  {table:20} {size / MIB:9.2f} {stored.optimized.get(table, 0) / MIB:10.2f}")


def _report_profile(total: int, wall: float, groups: dict[str, float], clock: PhaseClock, top_lines: str) -> None:
    print()
    print(
        f"== where the time goes: the same initial sync in-process under cProfile ({wall:.1f} s wall, {total} msgs) =="
    )
    print("self time per group (builtins and stdlib helpers charged to their callers' group):")
    order = [g for g, _ in _GROUPS] + [_WAIT, _OTHER]
    profiled = sum(groups.values())
    for group in order:
        seconds = groups.get(group, 0.0)
        print(f"  {group:58} {seconds:7.2f} s {100 * seconds / profiled:5.1f}%")
    print()
    print("wall time inside sync-core functions (wrapped for this run; cProfile overhead included):")
    for label, seconds in clock.seconds.items():
        print(f"  {label:62} {seconds:7.2f} s  ({clock.calls[label]} calls)")
    print()
    trips = sum(clock.sql_trips.values())
    print(f"MariaDB statements (SQLAlchemy cursor events): {trips} in {sum(clock.sql_seconds.values()):.1f} s awaited")
    print("  (schema.bulk's commands, the INSERTs of messages and blobs, pass no cursor event: not listed)")
    for kind, count in sorted(clock.sql_trips.items(), key=lambda kv: -kv[1])[:24]:
        print(f"  {count:7d} x {kind:36} {clock.sql_seconds[kind]:7.2f} s")
    print()
    print("top cumulative entries (ours and the libraries; cumulative s, self s, calls):")
    print(top_lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-profile", action="store_true", help="skip the cProfile run")
    parser.add_argument("--top", type=int, default=30, help="cumulative entries to print")
    parser.add_argument("--scale", type=int, nargs="+", metavar="N", help="initial syncs of these sizes instead")
    parser.add_argument("--large-mib", type=int, default=0, help="with --scale: one message of this size too")
    parser.add_argument("--write-path", type=int, metavar="N", help="only messages.add of N prepared messages")
    args = parser.parse_args(argv)
    try:
        if args.write_path:
            write_path(args.write_path, args.seed)
        elif args.scale:
            run_scale(args.scale, args.seed, args.large_mib)
        else:
            run(args.messages, args.seed, not args.no_profile, args.top)
    except BenchError as exc:
        print(f"sync_bench: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
