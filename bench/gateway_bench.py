"""The gateway on a 10,000-message account: requests per second, p50/p99 latency, SQL statements per request,
and the ratio to the floor (the same data fetched by hand-written SQL in one process, no HTTP, no GraphQL).

    python -m bench.gateway_bench [--messages 10000] [--seconds 10] [--concurrency 4]

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
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
from sqlalchemy import event, func, select
from sqlalchemy.dialects.mysql import match
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import REDIS_URL, _cpu_seconds, database_url, load_average, machine, percentile
from gateway.ids import to_global
from gateway.testing import ServerThread, add_folder, fetched
from inboxql.devmail import free_port
from inboxql.mailgen import generate
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

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def line(self) -> str:
        p50 = percentile(self.latencies, 50) * 1000
        p99 = percentile(self.latencies, 99) * 1000
        cpu = self.cpu_seconds / self.requests * 1000
        return f"{self.name:<44} {self.rps:8.1f} req/s   p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   CPU {cpu:6.2f} ms/req"


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


async def floor_search(engine: AsyncEngine, account: int) -> bytes:
    against = " ".join(f"+{w}*" for w in SEARCH_WORDS.split())
    columns = (Message.subject.expression, Message.search_addresses.expression, Message.text_body.expression)
    score = match(*columns, against=against).in_boolean_mode()
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(Message.id, Message.subject, Message.snippet, Message.date, Message.unread, Message.from_addrs)
                .where(score, Message.account_id == account, Message.orphaned_at.is_(None), Message.unread.is_(True))
                .order_by(score.desc(), Message.id.desc())
                .limit(51)
            )
        ).all()
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


def start_gateway_process(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    code = (
        "from gateway.server import serve; from schema.settings import Settings; "
        f"serve(Settings(database_url={settings.database_url!r}, redis_url={settings.redis_url!r}, "
        f"secret_key={settings.secret_key!r}), '127.0.0.1', {port}, access_log=False)"
    )
    env = {**os.environ, "INBOXQL_GATEWAY_RATE_LIMIT_POINTS": str(10**12)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the gateway process did not start")


async def run(total: int, seconds: float, concurrency: int) -> None:
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
        port = free_port()
        proc = start_gateway_process(settings, port)
        variables = {"a": to_global("Account", account)}
        results: list[tuple[str, Figures, Figures, int]] = []
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {token}"}, timeout=60
        ) as client:
            scenarios: list[tuple[str, str, dict[str, Any], Callable[[AsyncEngine, int], Awaitable[bytes]]]] = [
                ("threads: 50 with last message, participants, labels", THREADS_QUERY, {}, floor_threads),
                ("search: 'project review', unread only, first 50", SEARCH_QUERY, {"q": SEARCH_WORDS}, floor_search),
            ]
            for name, query, extra, floor in scenarios:
                call = graphql_call(client, query, {**variables, **extra})
                gateway_cpu = partial(_cpu_seconds, proc.pid)
                gql = await measure("  gateway, 1 client", call, seconds, 1, gateway_cpu)
                gql_c = await measure(f"  gateway, {concurrency} clients", call, seconds, concurrency, gateway_cpu)
                floor_call = partial(floor, engine, account)
                low = await measure("  floor: hand-written SQL in-process", floor_call, seconds, 1, time.process_time)
                results.append((name, gql, low, statements[name.split(":")[0]]))
                print(name)
                print(gql.line())
                print(gql_c.line())
                print(low.line())
        print()
        print(f"machine: {machine()}; load average {load_average()}")
        print(f"messages: {total}; one uvicorn worker (subprocess); load from this process over loopback")
        for name, gql, low, n in results:
            ratio = percentile(gql.latencies, 50) / percentile(low.latencies, 50)
            cpu_ratio = (gql.cpu_seconds / gql.requests) / (low.cpu_seconds / low.requests)
            print(
                f"{name}: {n} SQL statements per request; p50 latency {ratio:.2f}x the floor; "
                f"throughput {low.rps / gql.rps:.2f}x below the floor; CPU per request {cpu_ratio:.2f}x the floor's"
            )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)
        await engine.dispose()
        await drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(run(args.messages, args.seconds, args.concurrency))


if __name__ == "__main__":
    main()
