"""The gateway on a 10,000-message account: requests per second, p50/p99 latency, SQL statements per request,
and the ratio to the floor (the same data fetched by hand-written SQL in one process, no HTTP, no GraphQL).

    python -m bench.gateway_bench [--messages 10000] [--seconds 10] [--concurrency 4] [--runs 3] [--profile FILE]

Each run measures the gateway and then the floor, scenario by scenario, so both see the same load on the machine;
the ratios are per run, and the summary gives each ratio's median and worst over the runs. Each run also measures
what each process burns idle (--idle-seconds with no request: the gateway's timers, its stack sampler), and the
summary gives the CPU ratios net of it too: each measure's CPU less its process's idle rate times its duration.
The search's floor is measured twice: with its statement built on each call, and built once (the account a bound
parameter), as the gateway keeps its search statements. With --profile the
gateway process runs under cProfile (slower: its figures are not comparable), writes its stats to FILE and the
bench prints where its time went by layer (the package of each function, by own time).

The mail comes from inboxql.mailgen, parsed and written through the schema write API (as the sync core writes
it). The gateway runs as its own process (one uvicorn worker, no access log); the load comes from this one
over loopback. Statement counts come from a second, in-process gateway whose engine is watched. The database
is a throwaway one, dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import random
import secrets
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast

import httpx
import strawberry
from sqlalchemy import Executable, bindparam, event, func, select
from sqlalchemy.dialects.mysql import match
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import REDIS_URL, _cpu_seconds, database_url, load_average, machine, percentile
from gateway.auth import Viewer
from gateway.graphql.loaders import Loaders, Reader
from gateway.ids import to_global
from gateway.services import Services
from gateway.testing import ServerThread, add_folder, fetched
from inboxql.devmail import free_port
from inboxql.mailgen import generate
from ops.flame import parse_collapsed
from schema import accounts, messages, tokens
from schema.crypto import CredentialBox
from schema.db import create_database, create_engine, drop_database
from schema.migrate import upgrade
from schema.models import Label, Message, Thread
from schema.settings import Settings
from schema.unit import Store

THREADS_QUERY = """query($a: ID!) { threads(accountId: $a, first: 50) { edges { cursor node {
    id subject snippet unread starred lastMessageAt participants { name address } labels { id name }
    lastMessage { id subject date unread from { name address } }
} } pageInfo { hasNextPage endCursor } } }"""

SEARCH_QUERY = """query($a: ID!, $q: String!) { search(accountId: $a, query: $q, filter: {unread: true}, first: 50) {
    edges { cursor node { id subject snippet date unread from { name address } } }
    pageInfo { hasNextPage endCursor } } }"""
SEARCH_WORDS = "project review"


@dataclass
class Figures:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    cpu_seconds: float = 0.0  # CPU of the process that answered (gateway process, or this one for the floor)
    idle_rate: float = 0.0  # CPU seconds per second the answering process burns with no request (this run's)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def line(self) -> str:
        p50 = percentile(self.latencies, 50) * 1000
        p99 = percentile(self.latencies, 99) * 1000
        cpu = self.cpu_seconds / self.requests * 1000
        net = self.net_cpu / self.requests * 1000
        return (
            f"{self.name:<44} {self.rps:8.1f} req/s   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   CPU {cpu:6.2f} ms/req"
            f" ({net:.2f} net of idle)"
        )

    @property
    def net_cpu(self) -> float:
        """The CPU less what the process would have burnt idle over the measure."""
        return self.cpu_seconds - self.idle_rate * self.seconds


# -- seeding -----------------------------------------------------------------------------------------------


async def seed(store: Store, box: CredentialBox, total: int) -> int:
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", "bench")
    account = await accounts.create(store, box, "bench@example.test", endpoint, "pw")
    inbox = await add_folder(store, account, "INBOX", "inbox")
    sent = await add_folder(store, account, "Sent", "sent")
    rng = random.Random(7)
    batch: list[messages.Fetched] = []
    started = time.perf_counter()
    for uid, raw in enumerate(generate(total, seed=1), start=1):
        flags = [
            f for f, p in (("\\Seen", 0.7), ("\\Flagged", 0.05), ("Work", 0.1), ("Invoices", 0.03)) if rng.random() < p
        ]
        batch.append(fetched(uid, raw, flags))
        if len(batch) == 500:
            await _deliver(store, account, inbox if uid % 10 else sent, batch)
            batch = []
    if batch:
        await _deliver(store, account, inbox, batch)
    print(f"seeded {total} messages in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return account


async def _deliver(store: Store, account: int, folder: int, batch: Sequence[messages.Fetched]) -> None:
    async with store.unit(account) as uow:
        await messages.add(uow, folder, 1, batch)


# -- the floor: the same data by hand-written SQL ----------------------------------------------------------------


async def floor_threads(engine: AsyncEngine, account: int) -> bytes:
    async with engine.connect() as conn:
        threads = (
            await conn.execute(
                select(
                    Thread.id,
                    Thread.subject,
                    Thread.snippet,
                    Thread.unread_count,
                    Thread.starred,
                    Thread.last_message_at,
                    Thread.participants,
                    Thread.label_ids,
                )
                .where(Thread.account_id == account, Thread.message_count > 0)
                .order_by(Thread.last_message_at.desc(), Thread.id.desc())
                .limit(51)
            )
        ).all()
        ids = [t.id for t in threads[:50]]
        ranked = (
            select(
                Message.thread_id,
                Message.id,
                Message.subject,
                Message.date,
                Message.unread,
                Message.from_addrs,
                func.row_number()
                .over(
                    partition_by=Message.thread_id,
                    order_by=(func.coalesce(Message.date, Message.received_at).desc(), Message.id.desc()),
                )
                .label("rn"),
            )
            .where(Message.thread_id.in_(ids), Message.orphaned_at.is_(None))
            .subquery()
        )
        last = {r.thread_id: r for r in (await conn.execute(select(ranked).where(ranked.c.rn == 1))).all()}
        label_ids = sorted({lid for t in threads[:50] for lid in t.label_ids or ()})
        labels = {}
        if label_ids:
            labels = {
                r.id: r.name for r in (await conn.execute(select(Label.id, Label.name).where(Label.id.in_(label_ids))))
            }
    out = [
        {
            "id": t.id,
            "subject": t.subject,
            "snippet": t.snippet,
            "unread": t.unread_count > 0,
            "starred": t.starred,
            "lastMessageAt": t.last_message_at.isoformat() if t.last_message_at else None,
            "participants": t.participants,
            "labels": [{"id": lid, "name": labels.get(lid)} for lid in t.label_ids or ()],
            "lastMessage": {
                "id": last[t.id].id,
                "subject": last[t.id].subject,
                "date": last[t.id].date.isoformat() if last[t.id].date else None,
                "unread": last[t.id].unread,
                "from": last[t.id].from_addrs,
            }
            if t.id in last
            else None,
        }
        for t in threads[:50]
    ]
    return json.dumps(out).encode()


def search_statement(account: Any) -> Executable:
    against = " ".join(f"+{w}*" for w in SEARCH_WORDS.split())
    columns = (Message.subject.expression, Message.search_addresses.expression, Message.text_body.expression)
    score = match(*columns, against=against).in_boolean_mode()
    return (
        select(Message.id, Message.subject, Message.snippet, Message.date, Message.unread, Message.from_addrs)
        .where(score, Message.account_id == account, Message.orphaned_at.is_(None), Message.unread.is_(True))
        .order_by(score.desc(), Message.id.desc())
        .limit(51)
    )


# The same statement, built once: the account a bound parameter (as the gateway keeps its search statements).
SEARCH_ONCE = search_statement(bindparam("account"))


async def floor_search(engine: AsyncEngine, account: int) -> bytes:
    async with engine.connect() as conn:
        rows = (await conn.execute(search_statement(account))).all()
    return _search_answer(rows)


async def floor_search_once(engine: AsyncEngine, account: int) -> bytes:
    async with engine.connect() as conn:
        rows = (await conn.execute(SEARCH_ONCE, {"account": account})).all()
    return _search_answer(rows)


def _search_answer(rows: Sequence[Any]) -> bytes:
    out = [
        {
            "id": r.id,
            "subject": r.subject,
            "snippet": r.snippet,
            "date": r.date.isoformat() if r.date else None,
            "unread": r.unread,
            "from": r.from_addrs,
        }
        for r in rows[:50]
    ]
    return json.dumps(out).encode()


# -- measuring ---------------------------------------------------------------------------------------------


async def measure(
    name: str, call: Callable[[], Awaitable[Any]], seconds: float, concurrency: int, cpu: Callable[[], float]
) -> Figures:
    """Closed loop: `concurrency` callers for `seconds`. `cpu` reads the answering process's CPU seconds."""
    for _ in range(20):
        await call()  # warm caches, pools and the token grant
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - start)

    started, cpu_before = time.perf_counter(), cpu()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Figures(name, len(latencies), time.perf_counter() - started, latencies, cpu() - cpu_before)


def graphql_call(client: httpx.AsyncClient, query: str, variables: dict[str, Any]) -> Callable[[], Awaitable[Any]]:
    async def call() -> None:
        r = await client.post("/graphql", json={"query": query, "variables": variables})
        body = r.json()
        if r.status_code != 200 or "errors" in body:
            raise RuntimeError(f"the gateway answered {r.status_code}: {r.text[:500]}")

    return call


def count_statements(settings: Settings, token: str, account: int) -> dict[str, int]:
    """SQL statements per request, from an in-process gateway whose engine is watched."""
    from gateway.app import create_app

    server = ServerThread(create_app(settings), free_port())
    server.start()
    seen: list[str] = []
    engine = server.app.state.services.engine.sync_engine
    event.listen(engine, "before_cursor_execute", lambda *args: seen.append(args[2]))
    counts = {}
    try:
        with httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {token}"}, timeout=60) as client:
            for name, query, variables in (
                ("threads", THREADS_QUERY, {"a": to_global("Account", account)}),
                ("search", SEARCH_QUERY, {"a": to_global("Account", account), "q": SEARCH_WORDS}),
            ):
                client.post("/graphql", json={"query": query, "variables": variables})  # warm the token cache
                seen.clear()
                client.post("/graphql", json={"query": query, "variables": variables}).raise_for_status()
                counts[name] = len(seen)
    finally:
        server.stop()
    return counts


def start_gateway_process(settings: Settings, port: int, profile: str | None = None) -> subprocess.Popen[bytes]:
    code = (
        "from gateway.server import serve; from schema.settings import Settings; "
        f"serve(Settings(database_url={settings.database_url!r}, redis_url={settings.redis_url!r}, "
        f"secret_key={settings.secret_key!r}), '127.0.0.1', {port}, access_log=False)"
    )
    if profile is not None:
        # CPU time, not wall time: the machine is shared. The profiler starts on SIGUSR1 (after start-up, whose
        # imports are no request's cost). uvicorn raises the SIGTERM it caught again once it has shut down; a
        # handler of ours takes it, so the stats are written.
        code = (
            "import cProfile, signal, time\n"
            "profiler = cProfile.Profile(time.process_time)\n"
            "signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())\n"
            "signal.signal(signal.SIGTERM, lambda *_: None)\n"
            f"{code}\n"
            "profiler.disable()\n"
            f"profiler.dump_stats({profile!r})\n"
        )
    env = {**os.environ, "INBOXQL_GATEWAY_RATE_LIMIT_POINTS": str(10**12)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)  # its errors show in our stderr
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the gateway process did not start")


# Layers of the gateway's profile, by the top-level package of a function's file: an installed package (under
# site-packages), one of ours (under the project's root), or the standard library's module or package.
LAYERS = {
    "strawberry": "strawberry",
    "graphql": "graphql-core",
    "sqlalchemy": "sqlalchemy",
    "asyncmy": "driver (asyncmy)",
    "aiomysql": "driver (aiomysql)",
    "pymysql": "driver (pymysql)",
    "uvicorn": "uvicorn, h11, httptools",
    "h11": "uvicorn, h11, httptools",
    "httptools": "uvicorn, h11, httptools",
    "starlette": "starlette",
    "redis": "redis",
    "json": "json",
    "asyncio": "asyncio",
}
ROOT = Path(__file__).resolve().parents[1]


def layer_of(filename: str, function: str) -> str:
    if filename == "~":  # a builtin: select/epoll waits are idle time, not work
        return "idle (epoll)" if "poll" in function else "builtins (isinstance, getattr, ...)"
    path = Path(filename)
    if "site-packages" in path.parts:
        top = path.parts[path.parts.index("site-packages") + 1].removesuffix(".py")
        return LAYERS.get(top, "other packages")
    if path.is_relative_to(ROOT):
        return f"ours: {path.relative_to(ROOT).parts[0]}"
    top = path.parent.name if path.parent.name not in ("lib", "") and not path.parent.name.startswith("python") else ""
    return LAYERS.get(top or path.stem, "stdlib (other)")


def print_layers(path: str, requests: int) -> None:
    stats = pstats.Stats(path)
    totals: dict[str, float] = {}
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # pstats keeps its table untyped
    for (filename, _line, function), (_cc, _nc, own, _cum, _callers) in raw.items():
        layer = layer_of(filename, function)
        totals[layer] = totals.get(layer, 0.0) + own
    busy = sum(v for k, v in totals.items() if k != "idle (epoll)")
    print(f"profile of the gateway process: {busy:.2f} s busy over {requests} requests (own time by layer)")
    for layer, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        if layer == "idle (epoll)":
            continue
        print(f"  {layer:<26} {seconds:7.2f} s  {seconds / busy * 100:5.1f}%  {seconds / requests * 1000:6.2f} ms/req")


OURS = ("gateway", "schema", "synccore", "inboxql", "ops", "mime")


def sample_layer(frame: str) -> str:
    """The layer of a sampled frame (`module:function`): where its process was when it was sampled."""
    top = frame.partition(":")[0].split(".")[0]
    if top in OURS:
        return f"ours: {top}"
    return LAYERS.get(top, "stdlib (other)" if top in sys.stdlib_module_names else "other packages")


async def sampled_layers(url: str, seconds: float) -> Counter[str]:
    """The gateway's own stack sampler (/debug/profile, 29 Hz, the event loop's thread) over the last `seconds`:
    busy samples by the layer of their innermost frame. A sampler costs the gateway nothing per call, so unlike
    cProfile it does not inflate the layers that make many small calls."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:  # loopback, without a token: allowed
        r = await client.get("/debug/profile", params={"seconds": max(1, round(seconds)), "format": "collapsed"})
    r.raise_for_status()
    layers: Counter[str] = Counter()
    for stack, count in parse_collapsed(r.text).items():
        if stack != ("(idle)",):
            layers[sample_layer(stack[-1])] += count
    return layers


async def execution_cost(engine: AsyncEngine, account: int, executions: int) -> dict[str, float]:
    """CPU ms per execution of the threads page in this process, by the schema alone (no HTTP, no extensions),
    with Strawberry's stock executor and with ours (gateway.graphql.executor), taking turns so that both see the
    same machine. Both read the same rows with the same statements: the difference is the execution."""
    from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

    from gateway.graphql.context import Context
    from gateway.graphql.executor import PlainFieldExecutor
    from gateway.graphql.query import Query

    executors = {"stock": StrawberryGraphQLCoreExecutionContext, "ours": PlainFieldExecutor}
    schemas = {name: strawberry.Schema(query=Query, execution_context_class=e) for name, e in executors.items()}
    viewer = Viewer(token_id=0, account_ids=frozenset({account}))
    variables = {"a": to_global("Account", account)}
    spent = dict.fromkeys(schemas, 0.0)
    for turn in range(executions + 5):
        for name, schema in schemas.items():
            db = Reader(engine)
            services = cast(Services, None)  # the threads page reads no service
            context = Context(
                request=cast(Any, None),
                viewer=viewer,
                db=db,
                loaders=Loaders(db, viewer.account_ids),
                services=services,
            )
            started = time.process_time()
            result = await schema.execute(THREADS_QUERY, variable_values=variables, context_value=context)
            if turn >= 5:  # the first few warm the caches
                spent[name] += time.process_time() - started
            await db.close()
            if result.errors:
                raise RuntimeError(f"the threads page failed: {result.errors}")
    return {name: seconds / executions * 1000 for name, seconds in spent.items()}


@dataclass
class Ratios:
    p50: float
    cpu: float
    throughput: float
    net_cpu: float  # both CPUs net of their process's idle CPU
    # The search only: against the floor whose statement is built once (raw CPU, net CPU).
    cpu_once: float | None = None
    net_cpu_once: float | None = None


def ratios(gql: Figures, low: Figures, once: Figures | None = None) -> Ratios:
    def per(f: Figures, net: bool) -> float:
        return (f.net_cpu if net else f.cpu_seconds) / f.requests

    return Ratios(
        p50=percentile(gql.latencies, 50) / percentile(low.latencies, 50),
        cpu=per(gql, False) / per(low, False),
        throughput=low.rps / gql.rps,
        net_cpu=per(gql, True) / per(low, True),
        cpu_once=None if once is None else per(gql, False) / per(once, False),
        net_cpu_once=None if once is None else per(gql, True) / per(once, True),
    )


async def idle_rates(seconds: float, gateway_cpu: Callable[[], float]) -> tuple[float, float]:
    """CPU seconds per second that the gateway process and this one burn with no request over `seconds`."""
    started, gateway, ours = time.perf_counter(), gateway_cpu(), time.process_time()
    await asyncio.sleep(seconds)
    wall = time.perf_counter() - started
    return (gateway_cpu() - gateway) / wall, (time.process_time() - ours) / wall


async def run(
    total: int, seconds: float, concurrency: int, runs: int, profile: str | None, idle_seconds: float
) -> None:
    url = database_url(f"inboxql_gwbench_{os.getpid()}_{secrets.token_hex(3)}")
    await create_database(url)
    await asyncio.to_thread(upgrade, url)
    settings = Settings(database_url=url, redis_url=REDIS_URL, secret_key=secrets.token_urlsafe(32))
    engine = create_engine(url)
    proc: subprocess.Popen[bytes] | None = None
    try:
        store = Store(engine)
        account = await seed(store, CredentialBox(settings.secret_key), total)
        async with store.sessions() as session, session.begin():
            token = await tokens.create_token(session, [account])
        statements = await asyncio.to_thread(count_statements, settings, token, account)
        execution = await execution_cost(engine, account, 60)
        port = free_port()
        proc = start_gateway_process(settings, port, profile)
        variables = {"a": to_global("Account", account)}
        found: dict[str, list[Ratios]] = {}
        samples: dict[str, Counter[str]] = {}
        served = 0
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            Floor = Callable[[AsyncEngine, int], Awaitable[bytes]]
            scenarios: list[tuple[str, str, dict[str, Any], Floor, Floor | None]] = [
                ("threads: 50 with last message, participants, labels", THREADS_QUERY, {}, floor_threads, None),
                (
                    "search: 'project review', unread only, first 50",
                    SEARCH_QUERY,
                    {"q": SEARCH_WORDS},
                    floor_search,
                    floor_search_once,
                ),
            ]
            gateway_cpu = partial(_cpu_seconds, proc.pid)
            if profile is not None:
                proc.send_signal(signal.SIGUSR1)
            for number in range(1, runs + 1):
                print(f"run {number} of {runs} (load average {load_average()})")
                gateway_idle, our_idle = await idle_rates(idle_seconds, gateway_cpu)
                print(
                    f"idle over {idle_seconds:.0f} s: the gateway process {gateway_idle * 1000:.2f} ms CPU per s,"
                    f" this one (the floor's) {our_idle * 1000:.2f} ms per s"
                )
                for name, query, extra, floor, floor_once in scenarios:
                    call = graphql_call(client, query, {**variables, **extra})
                    gateway_started = time.perf_counter()
                    gql = await measure("  gateway, 1 client", call, seconds, 1, gateway_cpu)
                    gql_c = await measure(f"  gateway, {concurrency} clients", call, seconds, concurrency, gateway_cpu)
                    floor_call = partial(floor, engine, account)
                    low = await measure(
                        "  floor: hand-written SQL in-process", floor_call, seconds, 1, time.process_time
                    )
                    once = None
                    if floor_once is not None:
                        once = await measure(
                            "  floor, its statement built once",
                            partial(floor_once, engine, account),
                            seconds,
                            1,
                            time.process_time,
                        )
                    for f in (gql, gql_c):
                        f.idle_rate = gateway_idle
                    for floor_figures in (low, once):
                        if floor_figures is not None:
                            floor_figures.idle_rate = our_idle
                    served += gql.requests + gql_c.requests + 40
                    found.setdefault(name, []).append(ratios(gql, low, once))
                    samples.setdefault(name, Counter()).update(
                        await sampled_layers(f"http://127.0.0.1:{port}", time.perf_counter() - gateway_started)
                    )
                    print(name)
                    print(gql.line())
                    print(gql_c.line())
                    print(low.line())
                    if once is not None:
                        print(once.line())
                # What every request costs whatever it reads: HTTP, auth, the extensions, the rate limit's
                # round trip to Redis, the response.
                fixed = await measure(
                    "  gateway, 1 client", graphql_call(client, "{ __typename }", {}), seconds / 2, 1, gateway_cpu
                )
                served += fixed.requests + 20
                print("fixed cost: { __typename } with a token")
                print(fixed.line())
        proc.terminate()
        proc.wait(timeout=30)
        proc = None
        print()
        print(f"machine: {machine()}; load average {load_average()}")
        print(f"messages: {total}; one uvicorn worker (subprocess); load from this process over loopback")
        if profile is not None:
            print("the gateway ran under cProfile: its times are inflated, compare the ratios of runs without it")
        for name, found_ratios in found.items():
            n = statements[name.split(":")[0]]
            print(f"{name}: {n} SQL statements per request; over the floor, per run (median, worst of {runs}):")
            rows: list[tuple[str, list[float]]] = [
                ("p50 latency", [r.p50 for r in found_ratios]),
                ("CPU per request", [r.cpu for r in found_ratios]),
                ("  net of idle", [r.net_cpu for r in found_ratios]),
            ]
            if all(r.cpu_once is not None for r in found_ratios):
                rows += [
                    ("CPU, floor built once", [cast(float, r.cpu_once) for r in found_ratios]),
                    ("  net of idle", [cast(float, r.net_cpu_once) for r in found_ratios]),
                ]
            rows.append(("throughput (below)", [r.throughput for r in found_ratios]))
            for label, values in rows:
                each = " ".join(f"{v:.2f}x" for v in values)
                print(f"  {label:<20} {each}   median {statistics.median(values):.2f}x, worst {max(values):.2f}x")
        stock, ours = execution["stock"], execution["ours"]
        print(
            "executing the threads page in-process (schema only, no HTTP, same SQL): "
            f"stock executor {stock:.2f} ms CPU, ours {ours:.2f} ms ({ours / stock:.2f}x)"
        )
        for name, layers in samples.items():
            busy = sum(layers.values())
            print(f"{name}: the gateway's busy samples by layer ({busy} over the runs' gateway measures)")
            for layer, count in layers.most_common():
                print(f"  {layer:<26} {count:5d}  {count / busy * 100:5.1f}%")
        if profile is not None:
            print()
            print_layers(profile, served)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        await engine.dispose()
        await drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", metavar="FILE", help="run the gateway under cProfile, its stats to FILE")
    parser.add_argument(
        "--idle-seconds", type=float, default=10.0, help="how long each run measures the processes' idle CPU"
    )
    args = parser.parse_args()
    profile = os.path.abspath(args.profile) if args.profile else None
    asyncio.run(run(args.messages, args.seconds, args.concurrency, args.runs, profile, args.idle_seconds))


if __name__ == "__main__":
    main()
