"""Soak: one gateway under websocket subscribers and HTTP clients of several tokens, for minutes, while the sync
follows a busy mailbox. Is anything lost, slowed down or leaking?

    .venv/bin/python -m bench.soak_bench [--minutes 10] [--ws-clients 200] [--http-clients 20] [--tokens 10]
                                         [--rate 2] [--messages 500] [--logs DIR]

Set-up (bench.common.synced_mailbox): a private Dovecot with a seeded mailbox, a throwaway database,
`inboxql sync --once`; then `inboxql sync --account ID` follows the mailbox (IDLE on INBOX) and
`inboxql gateway` (one uvicorn worker, its own process) serves GraphQL. `--tokens` tokens of the account.

1. Idle: one client sends the plain query (`messages(first: 20)`, a page of the inbox list) 1,000 times, one after
   the other, with nothing else running: its p50 and p99 are the baseline.
2. Soak, for `--minutes`:
   - `--ws-clients` websockets (graphql-transport-ws), spread over the tokens, each subscribed to
     `messageAdded(accountId, after: <the cursor at the start>)`, in a process of their own (receiving their
     bursts in this one delayed the HTTP clients' own measurements by up to 27 ms at p99);
   - `--http-clients` HTTP clients (tokens round-robin), each starting somewhere in its first think time, then in
     a loop: one of the plain query, a threads page, a search, a message with its body and a page of `changes`,
     then 0.5-1.5 s of think time. The first `LATENCY_WARMUP` seconds are reported apart ("first 10 s"): in them
     every token is looked up for the first time and the clients open their connections (started in one instant,
     that burst alone made the p99 of a 2-minute run; the 20 requests over 15 ms of a run were all in its first
     second);
   - another IMAP client APPENDs generated mail to INBOX at `--rate` messages a second and changes a flag in
     INBOX between appends: the sync mirrors it, and the doorbell and the subscriptions carry it;
   - the gateway's RSS is read every second.
3. Drain: the mail stops; once the change log holds a create per appended message, every subscriber must have
   received each of those messages, exactly once.

`--gateway-cpu N` gives the gateway CPU N of its own, as a gateway host would have: the gateway's threads are
pinned to it, and this process (so its clients, Dovecot and the sync, all started from it) and the MariaDB server
to the other CPUs for the run (MariaDB's affinity is put back at the end). Both the idle baseline and the load are
measured so.

Goals (issue 9): no error (HTTP, GraphQL, websocket, or in the gateway's and the sync's logs); the plain query's
p99 under load within 2x of its idle p99; the gateway's RSS growing less than 5% from the end of the warm-up
(the first quarter of the run, at most a minute) to the end; every subscriber's feed exactly once.
Exits 1 when an error occurred or a feed was wrong; the latency and memory goals are printed as met or missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bench import common
from bench.common import BenchError
from bench.gateway_bench import SEARCH_QUERY, SEARCH_WORDS, THREADS_QUERY
from bench.message_added_bench import _wait_healthy
from bench.push_bench import _EXISTS, RawImap, _scalar, _wait_ready
from gateway.ids import encode_change_cursor, to_global
from inboxql.devmail import DovecotServer, free_port
from inboxql.mailgen import generate

IDLE_SAMPLES = 1000  # the p99 of 200 was their 2nd slowest: 3 or 4 ms from run to run, the ratio 25% apart
DRAIN_SECONDS = 120.0
RSS_EVERY = 1.0
P99_GOAL = 2.0  # times the idle p99
RSS_GOAL = 0.05  # growth after warm-up
# The HTTP clients' first seconds (every token's first lookup, new connections, the clients' first requests
# together) are reported apart from the latencies under load: a transient, not the steady state the goal is about.
LATENCY_WARMUP = 10.0

PLAIN_QUERY = """query($a: ID!) { messages(accountId: $a, first: 20) {
    nodes { id subject date unread starred snippet from { name address } } } }"""
MESSAGE_QUERY = """query($id: ID!) { node(id: $id) { ... on Message {
    id subject textBody from { name address } to { name address } attachments { filename size } } } }"""
CHANGES_QUERY = """query($a: ID!, $after: String) { changes(accountId: $a, after: $after, first: 50) {
    cursor hasMore changes { cursor operation objectType objectId } } }"""
SUBSCRIPTION = """subscription($a: ID!, $after: String) {
    messageAdded(accountId: $a, after: $after) { cursor message { id subject unread } } }"""


# -- what the clients saw ----------------------------------------------------------------------------------


@dataclass
class Errors:
    """Every error any client saw: counted by kind, the first few kept verbatim."""

    counts: Counter[str] = field(default_factory=Counter)
    first: list[str] = field(default_factory=list)

    def add(self, kind: str, detail: str) -> None:
        self.counts[kind] += 1
        if len(self.first) < 10:
            self.first.append(f"{kind}: {detail[:400]}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class HttpStats:
    latencies: dict[str, list[float]] = field(default_factory=dict)
    # What the gateway says it took of each (its `server-timing` header), in seconds: its time, and the CPU its
    # event loop's thread used meanwhile.
    own: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)
    message_ids: list[str] = field(default_factory=list)  # from the plain query, for the message query
    # Before this time.monotonic() stamp (the warm-up), latencies go to `early` instead.
    counting_from: float = 0.0
    early: dict[str, list[float]] = field(default_factory=dict)

    def note(self, name: str, seconds: float, timings: dict[str, float]) -> None:
        if time.monotonic() < self.counting_from:
            self.early.setdefault(name, []).append(seconds)
            return
        self.latencies.setdefault(name, []).append(seconds)
        if "app" in timings:
            self.own.setdefault(name, []).append(timings["app"])
        if "cpu" in timings:
            self.cpu.setdefault(name, []).append(timings["cpu"])


@dataclass
class Subscriber:
    n: int
    token: str
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    received: list[str] = field(default_factory=list)  # message ids, in order
    ended: str | None = None  # why the subscription ended before the bench closed it


# -- the clients -------------------------------------------------------------------------------------------


async def subscribe(sub: Subscriber, port: int, account: str, after: str, errors: Errors) -> None:
    """One websocket with one messageAdded subscription, until cancelled."""
    try:
        async with connect(
            f"ws://127.0.0.1:{port}/graphql",
            subprotocols=[Subprotocol("graphql-transport-ws")],
            open_timeout=30,
            close_timeout=5,
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {sub.token}"}}))
            ack = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if ack.get("type") != "connection_ack":
                raise BenchError(f"expected connection_ack, got {ack!r:.300}")
            payload = {"query": SUBSCRIPTION, "variables": {"a": account, "after": after}}
            await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
            sub.ready.set()
            while True:
                message = json.loads(await ws.recv())
                kind = message.get("type")
                if kind == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                elif kind == "next":
                    data = message.get("payload") or {}
                    if data.get("errors") or not data.get("data"):
                        raise BenchError(f"the subscription answered with errors: {data!r:.400}")
                    sub.received.append(data["data"]["messageAdded"]["message"]["id"])
                elif kind in ("error", "complete"):
                    raise BenchError(f"the subscription ended: {message!r:.400}")
    except asyncio.CancelledError:
        raise
    except ConnectionClosed as exc:
        sub.ended = f"websocket closed: {exc}"
        errors.add("websocket", f"subscriber {sub.n}: {sub.ended}")
    except Exception as exc:
        sub.ended = f"{type(exc).__name__}: {exc}"
        errors.add("websocket", f"subscriber {sub.n}: {sub.ended}")
    finally:
        sub.ready.set()  # also when it failed: the start-up does not wait for it


class SubscriberProcess:
    """The websocket subscribers in a process of their own: 200 sockets receiving a burst at every new message
    kept this process's event loop busy (it woke up to 27 ms late at p99), and the HTTP clients beside them
    measured that as the gateway's latency. The child reports through a pipe: `progress` and, at the end,
    `finish` (what every subscriber received, and the errors it saw)."""

    def __init__(self, port: int, account: str, after: str, tokens: Sequence[str], count: int) -> None:
        context = mp.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_subscribers_main, args=(child, port, account, after, list(tokens), count), daemon=True
        )
        self.process.start()
        child.close()

    async def ask(self, command: str) -> Any:
        await asyncio.to_thread(self.conn.send, command)
        return await asyncio.to_thread(self.conn.recv)

    async def ready(self) -> float:
        seconds: float = await asyncio.to_thread(self.conn.recv)
        return seconds

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


def _subscribers_main(conn: Connection, port: int, account: str, after: str, tokens: list[str], count: int) -> None:
    asyncio.run(_subscribers(conn, port, account, after, tokens, count))


async def _subscribers(conn: Connection, port: int, account: str, after: str, tokens: list[str], count: int) -> None:
    errors = Errors()
    subscribers = [Subscriber(n, tokens[n % len(tokens)]) for n in range(count)]
    tasks: list[asyncio.Task[None]] = []
    opened = time.monotonic()
    try:
        for batch in range(0, count, 20):
            group = subscribers[batch : batch + 20]
            tasks += [asyncio.create_task(subscribe(s, port, account, after, errors)) for s in group]
            await asyncio.wait_for(asyncio.gather(*(s.ready.wait() for s in group)), 60)
        conn.send(time.monotonic() - opened)
        while True:
            command = await asyncio.to_thread(conn.recv)
            if command == "progress":
                conn.send([(len(s.received), s.ended is not None) for s in subscribers])
            else:  # finish
                conn.send(([(s.received, s.ended) for s in subscribers], dict(errors.counts), errors.first))
                return
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def graphql(
    client: httpx.AsyncClient, name: str, query: str, variables: dict[str, Any], errors: Errors, stats: HttpStats
) -> dict[str, Any] | None:
    started = time.perf_counter()
    try:
        response = await client.post("/graphql", json={"query": query, "variables": variables})
    except httpx.HTTPError as exc:
        errors.add("http", f"{name}: {type(exc).__name__}: {exc}")
        return None
    seconds = time.perf_counter() - started
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200 or not isinstance(body, dict) or body.get("errors"):
        errors.add("http", f"{name}: {response.status_code} {response.text}")
        return None
    stats.note(name, seconds, _server_timing(response.headers.get("server-timing", "")))
    data: dict[str, Any] = body["data"]
    return data


def _server_timing(header: str) -> dict[str, float]:
    """The gateway's `server-timing: app;dur=<ms>, cpu;dur=<ms>`, in seconds by name."""
    found = {}
    for entry in header.split(","):
        name, _, duration = entry.strip().partition(";dur=")
        with contextlib.suppress(ValueError):
            found[name] = float(duration) / 1000
    return found


async def http_client(
    n: int, client: httpx.AsyncClient, account: str, think: float, stop: asyncio.Event, errors: Errors, stats: HttpStats
) -> None:
    """A user's client: a request from the mix, then a pause, until `stop`."""
    rng = random.Random(n)
    cursor: str | None = None
    # Users do not all click in the same instant: each client starts somewhere in its first think time.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), think * rng.uniform(0, 1))
    while not stop.is_set():
        roll = rng.random()
        if roll < 0.4 or not stats.message_ids:
            data = await graphql(client, "plain", PLAIN_QUERY, {"a": account}, errors, stats)
            if data is not None:
                stats.message_ids[:] = [m["id"] for m in data["messages"]["nodes"]]
        elif roll < 0.6:
            await graphql(client, "threads", THREADS_QUERY, {"a": account}, errors, stats)
        elif roll < 0.75:
            await graphql(client, "search", SEARCH_QUERY, {"a": account, "q": SEARCH_WORDS}, errors, stats)
        elif roll < 0.9:
            await graphql(client, "message", MESSAGE_QUERY, {"id": rng.choice(stats.message_ids)}, errors, stats)
        else:
            data = await graphql(client, "changes", CHANGES_QUERY, {"a": account, "after": cursor}, errors, stats)
            if data is not None:
                cursor = data["changes"]["cursor"]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), think * rng.uniform(0.5, 1.5))


async def busy_mailbox(
    server: DovecotServer, user: str, password: str, rate: float, pool: Sequence[bytes], stop: asyncio.Event
) -> tuple[int, int]:
    """APPEND to INBOX at `rate` a second, a flag change between appends; returns (appends, flag changes)."""
    rng = random.Random(11)
    conn = await RawImap.open(server, user, password)
    appends = flags = 0
    try:
        selected = await conn.command(b"SELECT INBOX")
        count = next((int(m.group(1)) for line in selected if (m := _EXISTS.match(line))), 1)
        started = time.monotonic()
        while not stop.is_set():
            await conn.command(b"APPEND INBOX", pool[appends % len(pool)])
            appends += 1
            count += 1
            sign = rng.choice((b"+", b"-"))
            await conn.command(b"STORE %d %sFLAGS.SILENT (\\Flagged)" % (rng.randint(1, count), sign))
            flags += 1
            due = started + appends / rate
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, due - time.monotonic()))
    finally:
        await conn.close()
    return appends, flags


async def watch_rss(pid: int, samples: list[tuple[float, int]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        samples.append((time.monotonic(), common.rss(pid)))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), RSS_EVERY)


async def watch_lag(lags: list[float], stop: asyncio.Event) -> None:
    """How late this process's own event loop wakes (a late client inflates the latencies it measures)."""
    while not stop.is_set():
        started = time.monotonic()
        await asyncio.sleep(0.05)
        lags.append(time.monotonic() - started - 0.05)


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of a process on these CPUs."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task), cpus)


@contextlib.contextmanager
def gateway_core(cpu: int | None, url: str) -> Iterator[Callable[[int], None]]:
    """With a CPU: this process and the MariaDB server of `url` kept off it for the block, which yields the
    function that pins a process (the gateway) onto it. Without one: nothing changes."""
    if cpu is None:
        yield lambda _pid: None
        return
    everything = os.sched_getaffinity(0)
    rest = everything - {cpu}
    if cpu not in everything or not rest:
        raise BenchError(f"--gateway-cpu {cpu}: this process may run on CPUs {sorted(everything)}")
    server = _mariadb_pid(url)
    before = os.sched_getaffinity(server)
    os.sched_setaffinity(0, rest)
    pin(server, rest)
    print(
        f"pinned: the gateway on CPU {cpu}; this process, its clients, Dovecot, the sync and MariaDB on {sorted(rest)}"
    )
    try:
        yield lambda pid: pin(pid, {cpu})
    finally:
        pin(server, before)
        os.sched_setaffinity(0, everything)


def _mariadb_pid(url: str) -> int:
    """The pid of the MariaDB server behind `url` (it runs on this machine: its pid file)."""
    engine = create_engine(make_url(url).set(drivername="mysql+pymysql"))
    try:
        with engine.connect() as conn:
            pid_file = str(conn.execute(text("SELECT @@pid_file")).scalar_one())
    finally:
        engine.dispose()
    return int(Path(pid_file).read_text().strip())


def log_errors(log: IO[bytes]) -> list[str]:
    """The lines of a process's log that report an error (the log stays open)."""
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()
    return [line for line in lines if " ERROR " in line or "Traceback" in line or "ERROR:" in line]


# -- the run -----------------------------------------------------------------------------------------------


async def new_messages(engine: AsyncEngine, account_id: int, after_seq: int) -> list[str]:
    """The ids of the messages the change log says were created after `after_seq`."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT object_id FROM change_log WHERE account_id = :a AND seq > :s "
                "AND object_type = 'message' AND op = 'create' ORDER BY seq"
            ),
            {"a": account_id, "s": after_seq},
        )
        return [to_global("Message", int(r[0])) for r in rows]


async def current_cursor(engine: AsyncEngine, account_id: int) -> tuple[int, str]:
    """The account's newest seq, and the change cursor at it (what `changesCursor` answers)."""
    found = await _scalar(engine, "SELECT last_seq FROM change_seq WHERE account_id = :a", {"a": account_id})
    seq = int(found) if isinstance(found, int) else 0
    return seq, encode_change_cursor(account_id, seq)


def row(label: str, values: Sequence[float]) -> str:
    """A line of the latency table: p50, p99 and max in ms, and how many."""
    return f"{label:28} {common.ms(values, 50)} {common.ms(values, 99)} {common.ms(values, 100)} {len(values):6d}"


def goal(label: str, figure: str, met: bool) -> str:
    return f"  {label:46} {figure:>8}  {'met' if met else 'MISSED'}"


async def idle_baseline(client: httpx.AsyncClient, account: str, errors: Errors) -> HttpStats:
    stats = HttpStats()
    for _ in range(20):  # warm the token cache, the pool and the caches
        await graphql(client, "plain", PLAIN_QUERY, {"a": account}, errors, stats)
    stats = HttpStats()
    for _ in range(IDLE_SAMPLES):
        await graphql(client, "plain", PLAIN_QUERY, {"a": account}, errors, stats)
    return stats


async def run_async(
    synced: common.Synced,
    minutes: float,
    ws_clients: int,
    http_clients: int,
    tokens: int,
    rate: float,
    think: float,
    logs: str | None = None,
    onto_its_core: Callable[[int], None] = lambda _pid: None,
) -> int:
    env = common.cli_env(synced.url)
    account = to_global("Account", synced.account_id)
    engine = create_async_engine(synced.url, pool_size=2, isolation_level="READ COMMITTED")
    if logs is None:
        follower_log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
        gateway_log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    else:  # kept, for the watchdog's stalls and the heap keeper's sweeps
        os.makedirs(logs, exist_ok=True)
        follower_log = open(os.path.join(logs, "sync.log"), "w+b")  # noqa: SIM115 - closed in the finally below
        gateway_log = open(os.path.join(logs, "gateway.log"), "w+b")  # noqa: SIM115 - closed in the finally below
    follower = subprocess.Popen(
        [*common.inboxql_command(), "sync", "--account", str(synced.account_id)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=follower_log,
        stderr=follower_log,
    )
    port = free_port()
    gateway = subprocess.Popen(
        [*common.inboxql_command(), "gateway", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=gateway_log,
        stderr=gateway_log,
    )
    onto_its_core(gateway.pid)
    errors = Errors()
    stop = asyncio.Event()
    listeners: SubscriberProcess | None = None
    clients: list[httpx.AsyncClient] = []
    tasks: list[asyncio.Task[Any]] = []
    try:
        await _wait_ready(engine, synced.account_id, follower, 120)
        await _wait_healthy(port, gateway, 60)
        onto_its_core(gateway.pid)  # and the threads it started meanwhile
        token_list = []
        for _ in range(tokens):
            out = await asyncio.to_thread(common.run_cli, ["token", "create", "--account", str(synced.account_id)], env)
            token_list.append(out.strip().splitlines()[-1])
        for token in token_list:
            clients.append(
                httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {token}"}, timeout=60
                )
            )

        idle_stats = await idle_baseline(clients[0], account, errors)
        idle = idle_stats.latencies.get("plain", [])
        idle_own = idle_stats.own.get("plain", [])
        idle_cpu = idle_stats.cpu.get("plain", [])
        print(f"idle: plain query p50 {common.ms(idle, 50)} ms, p99 {common.ms(idle, 99)} ms ({len(idle)} requests)")

        start_seq, start_cursor = await current_cursor(engine, synced.account_id)
        listeners = SubscriberProcess(port, account, start_cursor, token_list, ws_clients)
        opened = await asyncio.wait_for(listeners.ready(), 60 + 60 * ws_clients / 20)
        print(f"{ws_clients} subscribers on {tokens} tokens in {opened:.1f} s (in a process of their own)")

        seconds = minutes * 60
        warmup = min(60.0, seconds / 4)
        pool = list(generate(int(rate * seconds) + 50, 99))
        stats = HttpStats(counting_from=time.monotonic() + LATENCY_WARMUP)
        rss_samples: list[tuple[float, int]] = []
        cpu_before = common._cpu_seconds(gateway.pid)
        soak_started = time.monotonic()
        lags: list[float] = []
        tasks.append(asyncio.create_task(watch_rss(gateway.pid, rss_samples, stop)))
        tasks.append(asyncio.create_task(watch_lag(lags, stop)))
        tasks += [
            asyncio.create_task(http_client(n, clients[n % tokens], account, think, stop, errors, stats))
            for n in range(http_clients)
        ]
        mail = asyncio.create_task(busy_mailbox(synced.server, synced.user, synced.password, rate, pool, stop))
        print(f"soak: {minutes:g} min, mail at {rate:g}/s, {http_clients} HTTP clients (think {think:g} s)")
        while time.monotonic() - soak_started < seconds:
            await asyncio.sleep(min(30.0, seconds - (time.monotonic() - soak_started)))
            if mail.done() or follower.poll() is not None or gateway.poll() is not None:
                break
            elapsed = time.monotonic() - soak_started
            got = min((n for n, _ in await listeners.ask("progress")), default=0)
            print(
                f"  {elapsed:5.0f} s: RSS {common.rss(gateway.pid) / common.MIB:6.1f} MiB, {errors.total} errors, "
                f"slowest subscriber at {got} messages",
                file=sys.stderr,
            )
        stop.set()
        appends, flag_changes = await mail
        soak_seconds = time.monotonic() - soak_started
        cpu = common._cpu_seconds(gateway.pid) - cpu_before
        await asyncio.sleep(0.1)

        # Drain: every appended message mirrored, then every subscriber has them all.
        deadline = time.monotonic() + DRAIN_SECONDS
        expected = await new_messages(engine, synced.account_id, start_seq)
        while len(expected) < appends and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            expected = await new_messages(engine, synced.account_id, start_seq)
        while time.monotonic() < deadline and any(
            n < len(expected) and not ended for n, ended in await listeners.ask("progress")
        ):
            await asyncio.sleep(0.5)
        await asyncio.sleep(1.0)  # a duplicate would come now
        feeds, their_counts, their_first = await listeners.ask("finish")
        subscribers = [Subscriber(n, "", received=received, ended=ended) for n, (received, ended) in enumerate(feeds)]
        errors.counts.update(their_counts)
        errors.first.extend(their_first[: max(0, 10 - len(errors.first))])

        # -- the figures --
        gateway_errors = log_errors(gateway_log)
        follower_errors = log_errors(follower_log)
        for line in gateway_errors:
            errors.add("gateway log", line)
        for line in follower_errors:
            errors.add("sync log", line)
        if gateway.poll() is not None:
            errors.add("gateway", f"exited {gateway.returncode}")
        if follower.poll() is not None:
            errors.add("sync", f"exited {follower.returncode}")
        wanted = set(expected)
        complete = sum(1 for s in subscribers if len(s.received) == len(wanted) and set(s.received) == wanted)
        duplicated = sum(1 for s in subscribers if len(set(s.received)) != len(s.received))
        missing = sum(1 for s in subscribers if wanted - set(s.received))
        foreign = sum(1 for s in subscribers if set(s.received) - wanted)
        requests = sum(len(v) for v in stats.latencies.values()) + sum(len(v) for v in stats.early.values())
        plain = stats.latencies.get("plain", [])
        after_warmup = [r for t, r in rss_samples if t - soak_started >= warmup]
        rss_warm = after_warmup[0] if after_warmup else 0
        rss_end = after_warmup[-1] if after_warmup else 0
        rss_max = max(after_warmup, default=0)
        growth = (rss_end - rss_warm) / rss_warm if rss_warm else float("nan")
        p99_ratio = common.percentile(plain, 99) / common.percentile(idle, 99) if plain and idle else float("nan")

        print()
        print(f"== soak: {soak_seconds / 60:.1f} min, one gateway process, {tokens} tokens ==")
        print(f"mail: {appends} APPENDs to INBOX ({appends / soak_seconds:.2f}/s) and {flag_changes} flag changes")
        print(f"mirrored: {len(expected)} new messages in the change log (appended: {appends})")
        print(f"HTTP: {http_clients} clients, {requests} requests ({requests / soak_seconds:.1f}/s)")
        print(f"{'':28} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'count':>6}")
        print(row("  plain query, idle", idle))
        print(row(f"  plain, first {LATENCY_WARMUP:g} s", stats.early.get("plain", [])))
        for name in ("plain", "threads", "search", "message", "changes"):
            print(row(f"  {name}, under load", stats.latencies.get(name, [])))
        # The gateway's own share (its server-timing header: from the request's arrival in the application to the
        # response's start): what is left of a client's time is outside it (the network stack, a loop busy before
        # the request was read, the CPU given to other processes).
        own = stats.own.get("plain", [])
        print(row("  plain, gateway's own, idle", idle_own))
        print(row("  plain, gateway's own, load", own))
        # The CPU the gateway's loop used while the request was in it: the request's own work, and whatever else
        # the loop ran meanwhile (other requests, a fan-out). At the median (a loop mostly idle) it is the
        # request's own cost: under load, the same work on CPUs the other processes share.
        print(row("  plain, loop CPU, idle", idle_cpu))
        print(row("  plain, loop CPU, load", stats.cpu.get("plain", [])))
        own_ratio = common.percentile(own, 99) / common.percentile(idle_own, 99) if own and idle_own else float("nan")
        print(
            f"websockets: {ws_clients} subscribers; {complete} received every new message exactly once; "
            f"{missing} missed some, {duplicated} got one twice, {foreign} got one not in the log; "
            f"{sum(1 for s in subscribers if s.ended)} ended early"
        )
        print(
            f"gateway RSS: {rss_warm / common.MIB:.1f} MiB after the {warmup:.0f} s warm-up, "
            f"{rss_end / common.MIB:.1f} MiB at the end (max {rss_max / common.MIB:.1f}); growth {100 * growth:+.1f}%"
        )
        print(f"gateway CPU: {cpu:.1f} s in {soak_seconds:.0f} s ({100 * cpu / soak_seconds:.0f}% of one core)")
        print(f"this process's event loop woke late by p50 {common.ms(lags, 50)} ms, p99 {common.ms(lags, 99)} ms")
        print(f"errors: {errors.total} {dict(errors.counts)}")
        for line in errors.first:
            print(f"   {line}")
        print()
        feeds_ok = complete == ws_clients and len(expected) == appends
        print("goals:")
        print(goal("no error", str(errors.total), errors.total == 0))
        print(goal(f"plain query p99 within {P99_GOAL:g}x of idle", f"{p99_ratio:.2f}x", p99_ratio <= P99_GOAL))
        print(f"  (the gateway's own time for it, by its server-timing: p99 {own_ratio:.2f}x of idle)")
        print(goal(f"RSS growth after warm-up under {100 * RSS_GOAL:.0f}%", f"{100 * growth:+.1f}%", growth < RSS_GOAL))
        print(goal("every subscriber's feed exactly once", f"{complete}/{ws_clients}", feeds_ok))
        print(f"machine: {common.machine()}; load average at the end {common.load_average()}")
        return 0 if errors.total == 0 and feeds_ok else 1
    finally:
        stop.set()
        if listeners is not None:
            await asyncio.to_thread(listeners.stop)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.aclose()
        await asyncio.to_thread(common.stop_process, gateway)
        await asyncio.to_thread(common.stop_process, follower)
        gateway_log.close()
        follower_log.close()
        await engine.dispose()


def run(
    minutes: float,
    ws_clients: int,
    http_clients: int,
    tokens: int,
    rate: float,
    think: float,
    messages: int,
    logs: str | None = None,
    gateway_cpu: int | None = None,
) -> int:
    with (
        gateway_core(gateway_cpu, common.database_url("mysql")) as onto_its_core,
        common.synced_mailbox(messages, "inboxql_soak") as synced,
    ):
        work = run_async(synced, minutes, ws_clients, http_clients, tokens, rate, think, logs, onto_its_core)
        return asyncio.run(asyncio.wait_for(work, minutes * 60 + 900))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the soak runs")
    parser.add_argument("--ws-clients", type=int, default=200, help="websocket subscribers (one socket each)")
    parser.add_argument("--http-clients", type=int, default=20, help="HTTP clients")
    parser.add_argument("--tokens", type=int, default=10, help="tokens the clients are spread over")
    parser.add_argument("--rate", type=float, default=2.0, help="messages appended per second")
    parser.add_argument("--think", type=float, default=1.0, help="mean seconds between an HTTP client's requests")
    parser.add_argument("--messages", type=int, default=500, help="size of the mailbox synced first")
    parser.add_argument("--logs", help="a directory to keep the gateway's and the sync's logs in (else dropped)")
    parser.add_argument("--gateway-cpu", type=int, help="a CPU for the gateway alone (everything else off it)")
    args = parser.parse_args(argv)
    try:
        return run(
            args.minutes,
            args.ws_clients,
            args.http_clients,
            args.tokens,
            args.rate,
            args.think,
            args.messages,
            args.logs,
            args.gateway_cpu,
        )
    except (BenchError, TimeoutError) as exc:
        print(f"soak_bench: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
