"""Fan-out: N concurrent `changes` subscribers on one gateway process, one change, time until each has it.

A gateway process (uvicorn, one worker) serves a throwaway database; client processes (4) open N websockets
(graphql-transport-ws), each subscribing to `changes(accountId:, after: <current cursor>)`. When all are
subscribed (and the gateway idle), one unit of work writes a message (one commit, one doorbell) and every
client notes when the first event reaches it. Printed: p50/p99/max of that latency over the subscribers, and
the gateway's RSS growth per subscriber. Baseline (FIELD-NOTES): naive per-subscriber queues held 1,000 at ~155 KB each.

    python -m bench.fanout_bench [N ...] [--profile PATH]     (default 1000 5000 10000)

Also printed: the gateway's CPU time from the commit until it is idle again (the whole fan-out of the change's
log entries), and per subscriber: a figure the machine's load moves much less than the latencies.

Last runs (2026-12-07, quiet, clients on the same 2 cores): 10,000 -> p50 534-592 ms, p99 842-874 ms, 58 KiB
per subscriber; 5,000 -> p99 396 ms; 1,000 -> p99 164 ms (BENCHMARKS.md, Change feed). The latency goal (10,000,
p99 < 1 s) is met; the memory goal (< 50 KB each) is not. Since then (branch submem, load 2.4-3.9):
44.6-45.9 KiB per subscriber at 10,000 (memory goal met), p99 1,287-1,465 ms against 910 ms for the code before.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import resource
import secrets
import signal
import subprocess
import time
from multiprocessing.connection import Connection
from typing import Any

import websockets

from bench.common import REDIS_URL, database_url, percentile
from bench.gateway_bench import start_gateway_process
from gateway.ids import encode_change_cursor, to_global
from gateway.testing import Mail, add_folder, deliver
from inboxql.devmail import free_port
from schema import accounts, changelog, tokens
from schema.crypto import CredentialBox
from schema.db import create_database, create_engine, drop_database
from schema.migrate import upgrade
from schema.settings import Settings
from schema.unit import Store

CLIENT_PROCESSES = 4
FOLLOW = "subscription($a: ID!, $c: String) { changes(accountId: $a, after: $c) { cursor } }"


# One token holds every subscriber here: lift the per-token caps and uvicorn's concurrency limit (the defaults,
# 50 streams and 100 subscriptions a token, 2,000 connections, are for a shared deployment).
UNCAPPED = {
    "INBOXQL_GATEWAY_MAX_STREAMS_PER_TOKEN": "100000",
    "INBOXQL_GATEWAY_MAX_SUBSCRIPTIONS_PER_TOKEN": "100000",
    "INBOXQL_GATEWAY_MAX_CONCURRENCY": "100000",
}


def _raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _until_idle(pid: int, timeout: float = 120.0) -> float:
    """Until the gateway process uses under 5% of a core over half a second: every subscribe it was sent
    is processed. Returns the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        before = _cpu_seconds(pid)
        await asyncio.sleep(0.5)
        if _cpu_seconds(pid) - before < 0.025:
            break
    return time.monotonic() - start


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def _clients(url: str, token: str, variables: dict[str, str], n: int, pipe: Connection) -> None:
    received: list[float] = []
    ready = 0
    sockets: list[Any] = []

    limit = asyncio.Semaphore(200)  # connect in waves: thousands of SYNs at once overflow the listen backlog

    async def subscribe() -> Any:
        protocol = [websockets.Subprotocol("graphql-transport-ws")]
        ws = await websockets.connect(url, subprotocols=protocol, max_queue=None, open_timeout=60)
        try:
            init = {"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}
            await ws.send(json.dumps(init))
            await ws.recv()
            message = {"id": "1", "type": "subscribe", "payload": {"query": FOLLOW, "variables": variables}}
            await ws.send(json.dumps(message))
        except BaseException:
            await ws.close()
            raise
        return ws

    async def one() -> None:
        nonlocal ready
        async with limit:
            for attempt in range(5):  # a socket reset while connecting (an overloaded machine) is tried again
                try:
                    ws = await subscribe()
                    break
                except (OSError, websockets.ConnectionClosed):
                    if attempt == 4:
                        raise
                    await asyncio.sleep(1)
            sockets.append(ws)
            ready += 1
        message = json.loads(await ws.recv())
        received.append(time.time())
        if message.get("type") != "next" or "errors" in message.get("payload", {}):
            raise RuntimeError(f"a subscriber got {message}")

    tasks = [asyncio.create_task(one()) for _ in range(n)]
    while ready < n:
        failed = [t for t in tasks if t.done() and t.exception() is not None]
        if failed:  # e.g. a cap of the gateway refused the socket: say so rather than wait forever
            pipe.send(("failed", repr(failed[0].exception())))
            return
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the last subscribe messages are processed by the server
    pipe.send(("ready", ready))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    pipe.send(("done", received))
    for ws in sockets:
        await ws.close()


def _client_process(url: str, token: str, variables: dict[str, str], n: int, pipe: Connection) -> None:
    _raise_fd_limit()
    asyncio.run(_clients(url, token, variables, n, pipe))


async def run(counts: list[int], profile: str | None = None) -> None:
    _raise_fd_limit()
    os.environ.update(UNCAPPED)  # the gateway processes' environment (bench.gateway_bench.start_gateway_process)
    url = database_url(f"inboxql_fanbench_{os.getpid()}_{secrets.token_hex(3)}")
    await create_database(url)
    await asyncio.to_thread(upgrade, url)
    settings = Settings(database_url=url, redis_url=REDIS_URL, secret_key=secrets.token_urlsafe(32))
    engine = create_engine(url)
    from redis.asyncio import Redis

    redis = Redis.from_url(REDIS_URL)
    store = Store(engine, redis)
    print(f"fan-out bench: {CLIENT_PROCESSES} client processes, one gateway process (uvicorn, one worker)")
    try:
        box = CredentialBox(settings.secret_key)
        account = await accounts.create(
            store, box, "fan@example.test", accounts.ImapEndpoint("127.0.0.1", 143, "none", "u"), "p"
        )
        inbox = await add_folder(store, account, "INBOX", "inbox")
        async with store.sessions() as session, session.begin():
            token = await tokens.create_token(session, [account])
        uid = 1
        for n in counts:
            port = free_port()
            proc = start_gateway_process(settings, port, profile=f"{profile}.{n}" if profile else None)
            try:
                base = _rss_kib(proc.pid)
                async with store.sessions() as session:
                    cursor = encode_change_cursor(account, await changelog.newest_seq(session, account))
                variables = {"a": to_global("Account", account), "c": cursor}
                ctx = mp.get_context("spawn")
                pipes = []
                procs = []
                for i in range(CLIENT_PROCESSES):
                    share = n // CLIENT_PROCESSES + (1 if i < n % CLIENT_PROCESSES else 0)
                    parent, child = ctx.Pipe()
                    p = ctx.Process(
                        target=_client_process, args=(f"ws://127.0.0.1:{port}/graphql", token, variables, share, child)
                    )
                    p.start()
                    pipes.append(parent)
                    procs.append(p)
                t_connect = time.monotonic()
                for pipe in pipes:
                    said, what = await asyncio.to_thread(pipe.recv)
                    if said != "ready":
                        raise RuntimeError(f"a client process could not subscribe: {what}")
                connect_s = time.monotonic() - t_connect
                settle_s = await _until_idle(proc.pid)
                rss = _rss_kib(proc.pid)
                if profile:
                    proc.send_signal(signal.SIGUSR1)  # the profiler covers the change and its fan-out only
                cpu0 = _cpu_seconds(proc.pid)
                t0 = time.time()
                raw = Mail(f"fan-out {n}", "s@example.test", ["fan@example.test"], "hello").raw()
                await deliver(store, account, inbox, [(raw, [])], first_uid=uid)
                uid += 1
                latencies: list[float] = []
                for pipe in pipes:
                    _, received = await asyncio.to_thread(pipe.recv)
                    latencies += [(t - t0) * 1000 for t in received]
                for p in procs:
                    p.join(timeout=30)
                await _until_idle(proc.pid)
                cpu_ms = (_cpu_seconds(proc.pid) - cpu0) * 1000
                per_sub = (rss - base) / n
                print(
                    f"n={n:>6}: subscribed in {connect_s:.1f} s (gateway idle {settle_s:.1f} s later);"
                    f" one change -> first {min(latencies):.0f} ms,"
                    f" p50 {percentile(latencies, 50):.0f} ms,"
                    f" p99 {percentile(latencies, 99):.0f} ms, all {max(latencies):.0f} ms;"
                    f" RSS {base / 1024:.0f} -> {rss / 1024:.0f} MiB, {per_sub:.1f} KiB per subscriber;"
                    f" gateway CPU for the change {cpu_ms:.0f} ms ({cpu_ms * 1000 / n:.0f} us per subscriber)"
                )
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    finally:
        await redis.aclose()
        await engine.dispose()
        await drop_database(url)


def main() -> None:
    parser = argparse.ArgumentParser(description="N websocket subscribers, one change: time until each has it.")
    parser.add_argument("counts", nargs="*", type=int, default=[1000, 5000, 10000], help="subscribers per run")
    parser.add_argument(
        "--profile", metavar="PATH", help="cProfile the gateway over the change (stats written to PATH.N)"
    )
    args = parser.parse_args()
    asyncio.run(run(args.counts, args.profile))


if __name__ == "__main__":
    main()
