"""Gateways side by side behind a real balancer (issue 11, item 4): three `inboxql gateway` processes behind a
private HAProxy (tests/haproxy.py) serve one deployment, websockets and event streams alike; one gateway is
SIGKILLed while changes are being written; every subscriber reconnects through the balancer, resumes from the
last cursor it saw (websockets with `after`, event streams with `Last-Event-ID`) and receives every change
exactly once, in order.

The issue asks for 1,000 subscribers; CI's two shared cores bear about 300 in this test's time (each one gets
every change of 15 commits, a few thousand frames per gateway): INBOXQL_BALANCER_SUBSCRIBERS sets the number.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Subprotocol

from gateway.fanout import CLIENT_NAME
from gateway.ids import encode_change_cursor, to_global
from gateway.testing import add_folder, deliver
from inboxql.devmail import free_port
from schema import accounts, changelog, tokens
from schema.crypto import CredentialBox
from schema.settings import Settings
from schema.unit import Store
from tests.gateway.test_changes import mail
from tests.haproxy import HAProxyServer
from tests.test_cli import INBOXQL

SUBSCRIBERS = int(os.environ.get("INBOXQL_BALANCER_SUBSCRIBERS", "300"))
SSE_SHARE = 4  # one subscriber in this many follows over SSE, the others over websockets
TOKENS = 5
GATEWAYS = 3
COMMITS = (5, 5, 5)  # before the kill, while subscribers reconnect, after
FOLLOW = "subscription($a: ID!, $c: String) { changes(accountId: $a, after: $c) { cursor } }"
CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass
class Gateway:
    port: int
    proc: asyncio.subprocess.Process
    log: Path


@dataclass
class Subscriber:
    token: str
    cursor: str
    sse: bool
    seen: list[str] = field(default_factory=list)
    connections: int = 0


@dataclass
class Deployment:
    account: int
    gid: str
    inbox: int
    tokens: list[str]
    gateways: list[Gateway]
    balancer: HAProxyServer


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "INBOXQL_DATABASE_URL": settings.database_url,
        "INBOXQL_REDIS_URL": settings.redis_url,
        "INBOXQL_SECRET_KEY": settings.secret_key,
        "INBOXQL_GATEWAY_MAX_STREAMS_PER_TOKEN": str(SUBSCRIBERS),
        "INBOXQL_GATEWAY_MAX_SUBSCRIPTIONS_PER_TOKEN": str(SUBSCRIBERS),
        "INBOXQL_PROFILE_HZ": "0",
        "PYTHONPATH": os.pathsep.join([str(CHECKOUT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }


async def _start_gateway(settings: Settings, root: Path) -> Gateway:
    port = free_port()
    log = root / f"gateway-{port}.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            str(INBOXQL), "gateway", "--port", str(port),
            stdin=asyncio.subprocess.DEVNULL, stdout=sink, stderr=sink, env=_env(settings),
        )  # fmt: skip
    gateway = Gateway(port, proc, log)
    async with httpx.AsyncClient(timeout=2) as client:
        for _ in range(300):
            assert proc.returncode is None, log.read_text()[-3000:]
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return gateway
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    await proc.wait()
    raise AssertionError(f"gateway on {port} did not start: {log.read_text()[-3000:]}")


async def _stop(gateway: Gateway) -> None:
    if gateway.proc.returncode is None:
        gateway.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(gateway.proc.wait(), 20)
        except TimeoutError:
            gateway.proc.kill()
            await gateway.proc.wait()


@pytest.fixture
async def deployment(
    gw_settings: Settings, gw_store: Store, credential_box: CredentialBox, tmp_path: Path
) -> AsyncIterator[Deployment]:
    address = f"balanced-{secrets.token_hex(4)}@example.test"
    account = await accounts.create(
        gw_store, credential_box, address, accounts.ImapEndpoint("127.0.0.1", 143, "none", "u"), "p"
    )
    inbox = await add_folder(gw_store, account, "INBOX", "inbox")
    async with gw_store.sessions() as session, session.begin():
        keys = [await tokens.create_token(session, [account]) for _ in range(TOKENS)]
    gateways: list[Gateway] = []
    try:
        for _ in range(GATEWAYS):
            gateways.append(await _start_gateway(gw_settings, tmp_path))
        with HAProxyServer(tmp_path / "haproxy", [g.port for g in gateways]) as balancer:
            yield Deployment(account, to_global("Account", account), inbox, keys, gateways, balancer)
    finally:
        await asyncio.gather(*(_stop(g) for g in gateways))


async def _follow_ws(d: Deployment, sub: Subscriber, done: asyncio.Event) -> None:
    url = d.balancer.url.replace("http", "ws", 1) + "/graphql"
    while not done.is_set():
        try:
            async with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")], open_timeout=10) as ws:
                sub.connections += 1
                await ws.send(
                    json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {sub.token}"}})
                )
                assert json.loads(await ws.recv())["type"] == "connection_ack"
                variables = {"a": d.gid, "c": sub.cursor}
                payload = {"query": FOLLOW, "variables": variables}
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
                async for raw in ws:
                    message = json.loads(raw)
                    assert message["type"] == "next", message
                    sub.cursor = message["payload"]["data"]["changes"]["cursor"]
                    sub.seen.append(sub.cursor)
        except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError):
            pass
        await asyncio.sleep(random.uniform(0.05, 0.3))  # a client's reconnect backoff, jittered


async def _follow_sse(d: Deployment, sub: Subscriber, done: asyncio.Event) -> None:
    body = {"query": FOLLOW, "variables": {"a": d.gid, "c": sub.cursor}}
    async with httpx.AsyncClient(base_url=d.balancer.url, timeout=httpx.Timeout(10, read=None)) as client:
        while not done.is_set():
            # The first request resumes by `after`; a reconnect by Last-Event-ID, as a reconnecting SSE client does.
            headers = {"accept": "text/event-stream", "authorization": f"Bearer {sub.token}"}
            if sub.seen:
                headers["last-event-id"] = sub.cursor
            try:
                async with client.stream("POST", "/graphql", json=body, headers=headers) as response:
                    if response.status_code != 200:
                        raise httpx.HTTPError(f"status {response.status_code}")
                    sub.connections += 1
                    event = ""
                    async for line in response.aiter_lines():
                        if line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:") and event == "next":
                            data = json.loads(line[5:])
                            assert "errors" not in data, data
                            sub.cursor = data["data"]["changes"]["cursor"]
                            sub.seen.append(sub.cursor)
            except (httpx.HTTPError, OSError):
                pass
            await asyncio.sleep(random.uniform(0.05, 0.3))


async def _one_subscription_each(gateways: list[Gateway]) -> dict[int, int]:
    """How many doorbell subscriptions each gateway process holds in Redis (gateway.fanout names its client)."""
    redis = Redis.from_url(os.environ.get("INBOXQL_REDIS_URL", "redis://127.0.0.1:6379/0"))
    try:
        clients = await redis.client_list()
    finally:
        await redis.aclose()
    counts = {g.proc.pid: 0 for g in gateways}
    for client in clients:
        name = str(client.get("name", ""))
        pid = name.removeprefix(f"{CLIENT_NAME}:")
        if name.startswith(f"{CLIENT_NAME}:") and pid.isdigit() and int(pid) in counts:
            counts[int(pid)] += int(client.get("psub", 0)) and 1
    return counts


async def test_a_killed_gateway_loses_no_change_for_its_subscribers(deployment: Deployment, gw_store: Store) -> None:
    d = deployment
    async with gw_store.sessions() as session:
        start = await changelog.newest_seq(session, d.account)
    cursor = encode_change_cursor(d.account, start)
    subs = [Subscriber(d.tokens[i % TOKENS], cursor, sse=i % SSE_SHARE == 0) for i in range(SUBSCRIBERS)]
    assert await _one_subscription_each(d.gateways) == {g.proc.pid: 1 for g in d.gateways}

    done = asyncio.Event()
    tasks = [asyncio.create_task((_follow_sse if s.sse else _follow_ws)(d, s, done)) for s in subs]
    uid = 1

    async def commit(n: int) -> None:
        nonlocal uid
        for _ in range(n):
            await deliver(gw_store, d.account, d.inbox, [(mail(f"balanced {uid}"), [])], first_uid=uid)
            uid += 1
            await asyncio.sleep(0.2)

    try:
        async with asyncio.timeout(60):
            while sum(s.connections for s in subs) < SUBSCRIBERS:
                await asyncio.sleep(0.1)
        await commit(COMMITS[0])
        victim = d.gateways[0]
        victim.proc.send_signal(signal.SIGKILL)
        await victim.proc.wait()
        await commit(COMMITS[1])
        await asyncio.sleep(1.0)
        await commit(COMMITS[2])

        async with gw_store.sessions() as session:
            entries = await changelog.read(session, d.account, start, 10_000)
        expected = [encode_change_cursor(d.account, e.seq) for e in entries]
        assert len(expected) >= sum(COMMITS)
        try:
            async with asyncio.timeout(90):
                while any(len(s.seen) < len(expected) for s in subs):
                    await asyncio.sleep(0.2)
        except TimeoutError:
            pass
    finally:
        done.set()
        for task in tasks:
            task.cancel()
        ended = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [e for e in ended if isinstance(e, Exception)]
    assert not failed, f"{len(failed)} subscribers failed: {failed[0]!r}"

    wrong = [s for s in subs if s.seen != expected]
    assert not wrong, (
        f"{len(wrong)} of {len(subs)} subscribers did not get every change exactly once, in order; the first saw "
        f"{len(wrong[0].seen)} events ({len(set(wrong[0].seen))} distinct) of {len(expected)}"
    )
    moved = [s for s in subs if s.connections > 1]
    # Round robin gave the killed gateway about a third of them, of both kinds; each came back through the balancer.
    assert len(moved) >= SUBSCRIBERS // (2 * GATEWAYS), f"only {len(moved)} subscribers reconnected"
    assert {s.sse for s in moved} == {True, False}
    survivors = d.gateways[1:]
    assert await _one_subscription_each(survivors) == {g.proc.pid: 1 for g in survivors}
