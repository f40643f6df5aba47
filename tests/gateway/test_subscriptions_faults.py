"""Exactly once across faults: a consumer follows `changes` over a websocket while a random IMAP workload runs
against Dovecot and the sync core mirrors it. The consumer is cut off at random 50+ times and resumes from its
last cursor each time; the gateway's Redis (a private redis-server, never the machine's) is restarted midway,
so for a while only the fan-out's polling of the change log brings changes. At the end the consumer's folded
state equals the mirror, and it saw every seq exactly once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from gql import Client as GqlClient
from gql.graphql_request import GraphQLRequest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.ids import encode_change_cursor, from_global, to_global
from gateway.testing import ServerThread, start_gateway
from inboxql.devmail import DovecotServer, free_port
from inboxql.mailgen import generate
from schema import changelog, tokens
from schema.crypto import CredentialBox
from schema.settings import Settings
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from tests.conftest import new_user
from tests.gateway.test_subscriptions import seq_of, transport
from tests.sync.support import add_account, connect, mirror_objects, sync_once
from tests.sync.workload import Workload

FOLLOW = """
subscription($acc: ID!, $after: String) {
  changes(accountId: $acc, after: $after) { cursor operation objectType objectId state }
}"""
DISCONNECTS = 50


class PrivateRedis:
    """A redis-server of this test alone, on a free port: restarting it disturbs nobody else."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen([*args, "--daemonize", "no"], stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(
                ["redis-cli", "-p", str(self.port), "ping"], capture_output=True, text=True, check=False
            )
            if probe.stdout.strip() == "PONG":
                return
            time.sleep(0.05)
        raise RuntimeError("the private redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        pytest.fail("this test needs redis-server (Debian: apt-get install redis-server)")
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


class Consumer:
    """Follows the feed from its cursor, folding it; drops its connection at random and resumes."""

    def __init__(self, gateway: ServerThread, token: str, account_id: int, seed: int) -> None:
        self.gateway = gateway
        self.token = token
        self.account_id = account_id
        self.account_gid = to_global("Account", account_id)
        self.rng = random.Random(seed)
        self.cursor = encode_change_cursor(account_id, 0)
        self.seqs: list[int] = []
        self.objects: dict[tuple[str, int], dict[str, Any]] = {}
        self.disconnects = 0
        self.received_at: list[float] = []
        self.target: int | None = None  # stop once at this seq and with enough disconnects

    def apply(self, change: dict[str, Any]) -> None:
        self.seqs.append(seq_of(change["cursor"]))
        self.received_at.append(time.monotonic())
        _, pk = from_global(change["objectId"])
        key = (change["objectType"].lower(), pk)
        if change["operation"] == "DELETE":
            self.objects.pop(key, None)
        else:
            self.objects[key] = change["state"]
        self.cursor = change["cursor"]

    def done(self) -> bool:
        return self.target is not None and bool(self.seqs) and self.seqs[-1] >= self.target

    async def run(self) -> None:
        while not (self.done() and self.disconnects >= DISCONNECTS):
            budget = self.rng.randint(1, 12)  # events taken before this connection is cut
            idle = self.rng.uniform(0.05, 0.4)  # or this long without one
            # Cut off mid-burst, websockets stops reading once its queue of unread messages is full (16), so the
            # server's close frame would sit unread until gql's 10 s close timeout: let the queue grow.
            ws = transport(self.gateway, self.token, connect_args={"max_queue": None})
            async with GqlClient(transport=ws) as session:
                enough = asyncio.Event()
                reading = asyncio.create_task(self.read(session, budget, enough))
                while not enough.is_set():
                    seen = len(self.seqs)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(idle):
                            await enough.wait()
                    if len(self.seqs) == seen:
                        break
                # Cut off mid-stream: the cancellation lands in the client while it waits for the next event
                # (events that arrive after the budget are dropped unseen and come again after the resume).
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading
            self.disconnects += 1

    async def read(self, session: Any, budget: int, enough: asyncio.Event) -> None:
        variables = {"acc": self.account_gid, "after": self.cursor}
        async for result in session.subscribe(GraphQLRequest(FOLLOW, variable_values=variables)):
            if budget > 0:
                self.apply(result["changes"])
                budget -= 1
                if budget == 0:
                    enough.set()


@pytest.mark.slow
async def test_a_consumer_cut_off_50_times_and_a_redis_restart_see_every_change_exactly_once(
    gw_engine: AsyncEngine,
    gw_settings: Settings,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    private_redis: PrivateRedis,
) -> None:
    redis = Redis.from_url(private_redis.url)
    store = Store(gw_engine, redis)
    server = start_gateway(
        Settings(database_url=gw_settings.database_url, redis_url=private_redis.url, secret_key=gw_settings.secret_key)
    )
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", list(generate(40, seed=7)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    async with store.sessions() as session, session.begin():
        token = await tokens.create_token(session, [account_id])
    other = await connect(dovecot, user, password)
    workload = Workload(other, 11)
    consumer = Consumer(server, token, account_id, seed=5)
    following = asyncio.create_task(consumer.run())
    sync = asyncio.create_task(AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.3)).run_forever())
    redis_down: tuple[float, float] | None = None
    try:
        for step in range(140):
            if step == 70:
                private_redis.stop()  # the fan-out loses its subscription; the writer's PUBLISH fails
                down = time.monotonic()
            polled = any(t > down + 0.5 for t in consumer.received_at) if step >= 70 else False
            if redis_down is None and ((step >= 90 and polled) or step == 139):
                # Back once a change came through the fallback polling (the workload may write nothing for
                # a while: the sync core reconnects after some server responses).
                private_redis.start()
                redis_down = (down, time.monotonic())
            await workload.step()
            await asyncio.sleep(workload.rng.uniform(0, 0.04))
    finally:
        sync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sync
        await other.logout()
    await sync_once(store, credential_box, account_id)
    async with store.sessions() as session:
        consumer.target = await changelog.newest_seq(session, account_id)
    try:
        async with asyncio.timeout(60):
            await following
    finally:
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await following
        server.stop()
        await redis.aclose()

    assert consumer.disconnects >= DISCONNECTS
    assert consumer.seqs == list(range(1, consumer.target + 1)), "a gap or a repeat"
    assert consumer.objects == await mirror_objects(store, account_id), workload.log
    assert redis_down is not None
    during = [t for t in consumer.received_at if redis_down[0] + 0.5 < t < redis_down[1]]
    assert during, "nothing arrived while Redis was down: the fan-out's polling did not bring changes"
