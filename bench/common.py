"""Shared pieces of the benchmarks: prerequisites, a private Dovecot, a throwaway database, the CLI, timing.

Everything here cleans up after itself: the Dovecot and its folder go with `private_dovecot()`, the
database with `throwaway_database()`. Services are the ones CI runs (MariaDB on 127.0.0.1:3306, Redis on
127.0.0.1:6379); a missing one stops the benchmark with a message that says so.
"""

from __future__ import annotations

import asyncio
import imaplib
import math
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from sqlalchemy import text

from inboxql.devmail import DovecotServer, ensure_dovecot_installed
from inboxql.mailgen import generate
from schema.db import create_engine, drop_database

DB_SERVER = os.environ.get("INBOXQL_BENCH_DATABASE_SERVER", "mysql+asyncmy://root@127.0.0.1:3306")
REDIS_URL = os.environ.get("INBOXQL_REDIS_URL", "redis://127.0.0.1:6379/0")
MIB = 1024 * 1024


class BenchError(RuntimeError):
    """A prerequisite is missing or a step of the benchmark failed; the message says which."""


# -- prerequisites -----------------------------------------------------------------------------------


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def apt_install(command: str, package: str) -> None:
    """Install a Debian package when `command` is missing (root only), or fail with what to run."""
    if shutil.which(command):
        return
    if os.geteuid() != 0:
        raise BenchError(f"{command} is missing: run `sudo apt-get install -y {package}`")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    print(f"installing {package} (for {command}) ...", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=300)
    subprocess.run(["apt-get", "install", "-y", "-qq", package], check=True, env=env, timeout=600)
    if not shutil.which(command):
        raise BenchError(f"{command} is still missing after installing {package}")


def check_services() -> None:
    ensure_dovecot_installed()
    if not _port_open("127.0.0.1", 3306):
        raise BenchError("MariaDB is not listening on 127.0.0.1:3306 (see env machines/python-svc.md)")
    if not _port_open("127.0.0.1", 6379):
        raise BenchError("Redis is not listening on 127.0.0.1:6379 (see env machines/python-svc.md)")
    if inboxql_command()[0] == sys.executable and not Path(sys.executable).exists():
        raise BenchError("the inboxql CLI is not installed: `pip install -e .` in the virtualenv")


# -- machine -------------------------------------------------------------------------------------------


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) // 1024 // 1024} GiB RAM"
                break
    except OSError:
        pass
    return (
        # The process's own CPUs are named apart: a bench that pins itself (soak_bench --gateway-cpu) has fewer.
        f"{os.cpu_count()} CPUs (this process may run on {len(os.sched_getaffinity(0))}), {model}{mem},"
        f" Python {sys.version.split()[0]}"
    )


# -- Dovecot and mail --------------------------------------------------------------------------------------


@contextmanager
def private_dovecot() -> Iterator[DovecotServer]:
    root = Path(tempfile.mkdtemp(prefix="inboxql-bench-dovecot-"))
    server = DovecotServer(root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class Seeded:
    counts: dict[str, int]  # mailbox -> messages
    raw_bytes: int  # sum of the message sizes as appended


KEYWORDS = ("$Forwarded", "Work", "Invoices", "$Label1")


def _flags(rng: random.Random, mailbox: str) -> tuple[str, ...]:
    flags: list[str] = []
    if mailbox == "Sent" or rng.random() < 0.70:
        flags.append("\\Seen")
    if rng.random() < 0.05:
        flags.append("\\Flagged")
    if mailbox != "Sent" and rng.random() < 0.10:
        flags.append("\\Answered")
    if rng.random() < 0.04:
        flags.append(rng.choice(KEYWORDS))
    return tuple(flags)


def seed_mailbox(server: DovecotServer, user: str, password: str, total: int, seed: int = 1) -> Seeded:
    """`total` generated messages: ~85% INBOX, ~10% Archive, ~5% Sent; ~70% seen, ~5% flagged, a few keywords."""
    rng = random.Random(seed)
    boxes: dict[str, list[tuple[bytes, tuple[str, ...]]]] = {"INBOX": [], "Archive": [], "Sent": []}
    raw_bytes = 0
    for raw in generate(total, seed):
        roll = rng.random()
        mailbox = "INBOX" if roll < 0.85 else "Archive" if roll < 0.95 else "Sent"
        boxes[mailbox].append((raw, _flags(rng, mailbox)))
        raw_bytes += len(raw)
    for mailbox, items in boxes.items():
        if items:
            server.append(user, password, mailbox, items)
    return Seeded({m: len(v) for m, v in boxes.items()}, raw_bytes)


def settle_mailbox(
    server: DovecotServer, user: str, password: str, mailboxes: Iterable[str], *, fast: float = 0.05, tries: int = 12
) -> dict[str, list[float]]:
    """Open each mailbox, a new session each time, until an open takes under `fast` s; returns the times.

    Right after tens of thousands of APPENDs, every session that opens the mailbox replays Dovecot's transaction
    log (measured: 0.22-0.45 s for an 85,000-message INBOX, against 10-14 ms once settled) until Dovecot has
    rewritten its index; a mailbox in use has long done so. A benchmark of what a user waits for opens a settled
    mailbox, as the user's would be."""
    found: dict[str, list[float]] = {}
    for name in mailboxes:
        times = found[name] = []
        for _ in range(tries):
            with imaplib.IMAP4(server.host, server.port) as imap:
                imap.login(user, password)
                start = time.perf_counter()
                imap.select(f'"{name}"')
                times.append(time.perf_counter() - start)
            if times[-1] < fast:
                break
    return found


def new_user(server: DovecotServer) -> tuple[str, str]:
    user, password = f"bench{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    server.add_user(user, password)
    return user, password


# -- the database and the CLI -------------------------------------------------------------------------------


def database_url(name: str, server: str = DB_SERVER) -> str:
    return f"{server}/{name}?charset=utf8mb4"


@contextmanager
def throwaway_database(prefix: str = "inboxql_bench", server: str = DB_SERVER) -> Iterator[str]:
    """A fresh, migrated database (through `inboxql db upgrade`) on `server` (a URL naming no database), dropped on
    the way out."""
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    url = database_url(name, server)
    try:
        run_cli(["db", "upgrade"], cli_env(url), timeout=120)
        yield url
    finally:
        asyncio.run(drop_database(url))


def buffer_pool_size(server: str = DB_SERVER) -> int:
    """The server's innodb_buffer_pool_size, bytes."""

    async def ask() -> int:
        engine = create_engine(database_url("mysql", server))
        try:
            async with engine.connect() as conn:
                return int((await conn.execute(text("SELECT @@innodb_buffer_pool_size"))).scalar_one())
        finally:
            await engine.dispose()

    return asyncio.run(ask())


@contextmanager
def private_mariadb(buffer_pool: str) -> Iterator[str]:
    """A private mariadbd (tests.mariadb: its own datadir and port, no config file read) whose InnoDB buffer pool is
    `buffer_pool` (a mariadbd size: 2G, 1536M), with the shared server's character set; yields its URL (no database
    named), and takes it away, datadir and all, on the way out."""
    from tests.mariadb import PrivateMariaDB  # here: only this bench option needs the tests' server

    server = PrivateMariaDB(
        Path(tempfile.mkdtemp(prefix="inboxql-bench-mariadb-")),
        options=(
            f"--innodb-buffer-pool-size={buffer_pool}",
            "--character-set-server=utf8mb4",
            "--collation-server=utf8mb4_general_ci",
        ),
    )
    try:
        server.start()
        yield f"mysql+asyncmy://root@{server.host}:{server.port}"
    finally:
        server.remove()


def inboxql_command() -> list[str]:
    script = Path(sys.executable).parent / "inboxql"
    return [str(script)] if script.exists() else [sys.executable, "-m", "inboxql.cli"]


_SECRET = secrets.token_urlsafe(32)


def cli_env(url: str) -> dict[str, str]:
    return {
        **os.environ,
        "INBOXQL_DATABASE_URL": url,
        "INBOXQL_REDIS_URL": REDIS_URL,
        "INBOXQL_SECRET_KEY": _SECRET,
    }


def run_cli(args: Sequence[str], env: dict[str, str], *, stdin: str | None = None, timeout: float = 600) -> str:
    done = subprocess.run(
        [*inboxql_command(), *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"inboxql {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.stdout


def add_account(server: DovecotServer, user: str, password: str, env: dict[str, str]) -> int:
    out = run_cli(
        ["account", "add", "--imap-url", f"imap://{user}@{server.host}:{server.port}", "--password-stdin"],
        env,
        stdin=password + "\n",
        timeout=60,
    )
    return int(out.strip().splitlines()[-1])


# -- timing a child process -----------------------------------------------------------------------------------


def _proc_bytes(path: str, key: str) -> int:
    """A `key: N kB` line of a /proc file, in bytes (0 when the process is gone)."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def pss(pid: int) -> int:
    """Proportional set size of a process in bytes (0 when it is gone): its resident pages, each shared page divided
    among the processes sharing it, so that the PSS of a process tree adds up to the memory it holds (a sum of RSS
    counts pages shared by forked workers once per process)."""
    return _proc_bytes(f"/proc/{pid}/smaps_rollup", "Pss:")


def rss(pid: int) -> int:
    """Resident set size of a process in bytes (0 when it is gone)."""
    return _proc_bytes(f"/proc/{pid}/status", "VmRSS:")


@dataclass(frozen=True, slots=True)
class Timed:
    wall: float  # seconds
    cpu: float  # user + system seconds of the child itself (wait4)
    peak_rss: int  # bytes: the child's own VmHWM, polled from /proc while it runs
    returncode: int
    stderr: str
    server_cpu: float  # user + system seconds MariaDB's server process spent meanwhile (0 if not found)


def _vm_hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _find_process(names: Sequence[str]) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() in names:
                    return int(entry.name)
            except OSError:
                continue
    return None


def _cpu_seconds(pid: int | None) -> float:
    """utime + stime of a process from /proc/PID/stat (0 when it cannot be read)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


MARIADB_PID = _find_process(("mariadbd", "mysqld"))


def timed_run(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 900) -> Timed:
    """Run a command: wall time; CPU from wait4() on that very child; peak RSS from its VmHWM.

    wait4's ru_maxrss is not used: a child spawned with vfork inherits the parent's high-water mark at
    exec, so it reports the benchmark's own size for a small child. VmHWM belongs to the child's own
    address space; it only grows, so polling every 10 ms misses at most the growth of the last 10 ms.
    """
    err = tempfile.TemporaryFile()  # noqa: SIM115 - closed below, after the child is reaped
    server_before = _cpu_seconds(MARIADB_PID)
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err)
    peak = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _vm_hwm(proc.pid))
            done.wait(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    killer = threading.Timer(timeout, lambda: proc.send_signal(signal.SIGKILL))
    killer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
        done.set()
        watcher.join()
    wall = time.perf_counter() - start
    server_cpu = _cpu_seconds(MARIADB_PID) - server_before
    proc.returncode = os.waitstatus_to_exitcode(status)
    err.seek(0)
    text = err.read().decode(errors="replace")
    err.close()
    if proc.returncode == -signal.SIGKILL:
        raise BenchError(f"{argv[0]} did not finish in {timeout} s")
    return Timed(wall, usage.ru_utime + usage.ru_stime, peak[0], proc.returncode, text, server_cpu)


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of a non-empty sequence."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(p / 100 * len(ordered))))
    return ordered[rank - 1]


def ms(values: Sequence[float], p: float) -> str:
    """A percentile of seconds as milliseconds in a 7-wide column ("-" when there are none)."""
    return f"{1000 * percentile(values, p):7.0f}" if values else "      -"


@dataclass(frozen=True, slots=True)
class Synced:
    server: DovecotServer
    user: str
    password: str
    url: str
    account_id: int


@contextmanager
def synced_mailbox(messages: int, database_prefix: str) -> Iterator[Synced]:
    """The push benches' set-up: a private Dovecot with a seeded mailbox, a throwaway database with its account,
    and `inboxql sync --once` done; the machine and its load printed before and after."""
    check_services()
    print(f"machine: {machine()}")
    print(f"load average at start: {load_average()}")
    with private_dovecot() as server:
        user, password = new_user(server)
        seeded = seed_mailbox(server, user, password, messages, 3)
        print(f"seeded {sum(seeded.counts.values())} messages: {seeded.counts}")
        with throwaway_database(database_prefix) as url:
            env = cli_env(url)
            account_id = add_account(server, user, password, env)
            initial = timed_run([*inboxql_command(), "sync", "--once"], env=env, timeout=300)
            if initial.returncode != 0:
                raise BenchError(f"initial sync failed: {initial.stderr[-2000:]}")
            print(f"initial sync: {initial.wall:.1f} s")
            yield Synced(server, user, password, url, account_id)
    print(f"load average at the end: {load_average()}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 15 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def report_errors(name: str, log: IO[bytes]) -> None:
    """Print the first error a process logged to `log` (which is closed), and how many there were."""
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()
    log.close()
    errors = [line for line in lines if " ERROR " in line or "Traceback" in line]
    if errors:
        print(f"{name} logged {len(errors)} errors, first: {errors[0]}", file=sys.stderr)
