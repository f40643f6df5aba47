"""Webhook delivery wakes on the account's doorbell: a change reaches the receiver at once, not at the next poll.

Each test runs a deliverer of its own (gateway.delivery) on a database of its own, given a real doorbell
subscription (Redis PSUBSCRIBE, what gateway.fanout.Fanout holds once per process) and a real receiver on a
loopback port; changes are committed through the schema write API, which rings the doorbell. The polls are set
to 30 s unless a test is about them, so only a ring can explain a delivery within seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field, replace

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gateway import delivery
from gateway.config import GatewayConfig
from gateway.delivery import Deliverer, running
from gateway.testing import ServerThread
from inboxql.devmail import free_port
from schema import accounts, folders, webhooks
from schema.crypto import CredentialBox
from schema.db import create_engine
from schema.doorbell import Doorbells
from schema.unit import Store
from tests.conftest import REDIS_URL, throwaway_database

SLOW = GatewayConfig(
    webhook_allow_loopback=True,
    webhook_poll_seconds=30,
    webhook_safety_seconds=30,
    webhook_discover_seconds=30,
    webhook_timeout_seconds=5,
)
QUICKLY = 5.0  # well under every poll interval of SLOW, and loose enough for a loaded machine


class RedisDoorbell:
    """A doorbell subscription of its own offering what the deliverer asks of Fanout (delivery.Doorbells)."""

    def __init__(self, url: str, doorbells: Doorbells) -> None:
        self.url = url
        self.doorbells = doorbells
        self.connected = False
        self.callbacks: list[Callable[[int | None], None]] = []

    def on_ring(self, callback: Callable[[int | None], None]) -> Callable[[], None]:
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def tell(self, account_id: int | None) -> None:
        for callback in list(self.callbacks):
            callback(account_id)

    async def run(self) -> None:
        redis = Redis.from_url(self.url, socket_connect_timeout=1)
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.psubscribe(self.doorbells.pattern)
            self.connected = True
            self.tell(None)
            async for message in pubsub.listen():
                account = self.doorbells.account_of(message["channel"])
                if account is not None:
                    self.tell(account)
        finally:
            if self.connected:
                self.connected = False
                self.tell(None)
            with contextlib.suppress(Exception):
                await pubsub.aclose()
                await redis.aclose()


@contextlib.asynccontextmanager
async def doorbell(
    engine: AsyncEngine, url: str = REDIS_URL
) -> AsyncIterator[tuple[RedisDoorbell, asyncio.Task[None]]]:
    """A subscription to the doorbells of `engine`'s database, running (or failed to subscribe, when Redis is not at
    `url`), and the task holding it."""
    bell = RedisDoorbell(url, Doorbells.of(engine))
    task = asyncio.create_task(bell.run())
    while not bell.connected and not task.done():
        await asyncio.sleep(0.01)
    try:
        yield bell, task
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task


@dataclass
class Sink:
    """A webhook receiver: when each (hook, seq) arrived; fails its first `fail_first` requests."""

    fail_first: int = 0
    requests: list[float] = field(default_factory=list)
    got: dict[tuple[int, int], float] = field(default_factory=dict)
    order: list[tuple[int, int]] = field(default_factory=list)

    async def hook(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.requests.append(time.monotonic())
        if len(self.requests) <= self.fail_first:
            return Response(status_code=500)
        key = (int(body["webhookId"]), int(body["event"]["seq"]))
        self.got.setdefault(key, time.monotonic())
        self.order.append(key)
        return Response(status_code=204)


@pytest.fixture
def sink() -> Iterator[tuple[Sink, str]]:
    receiver = Sink()
    server = ServerThread(Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])]), free_port())
    server.start()
    yield receiver, f"{server.url}/hook"
    server.stop()


@pytest.fixture(scope="module")
def wk_database_url() -> Iterator[str]:
    with throwaway_database("inboxql_wakeup_test") as url:
        yield url


@pytest.fixture(scope="module")
async def wk_engine(wk_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(wk_database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def wk_store(wk_engine: AsyncEngine) -> AsyncIterator[Store]:
    """Commits ring the doorbell in the real Redis."""
    redis = Redis.from_url(REDIS_URL)
    yield Store(wk_engine, redis)
    await redis.aclose()


@pytest.fixture(scope="module")
def silent_store(wk_engine: AsyncEngine) -> Store:
    """Commits whose doorbell is never rung (as when the writer could not reach Redis)."""
    return Store(wk_engine, None)


BOX = CredentialBox(secrets.token_urlsafe(32))


async def new_account(store: Store) -> int:
    address = f"{secrets.token_hex(4)}@example.test"
    return await accounts.create(store, BOX, address, accounts.ImapEndpoint("127.0.0.1", 143, "none", address), "pw")


async def new_hook(store: Store, account_id: int, url: str) -> int:
    async with store.sessions() as session, session.begin():
        hook, _ = await webhooks.create(session, BOX, account_id, url, ["*"])
        return hook.id


async def change(store: Store, account_id: int) -> tuple[int, float]:
    """Commit one change (a new folder); its seq, and when the commit (and its doorbell, if any) was done."""
    async with store.unit(account_id) as uow:
        await folders.create(uow, folders.Discovered(f"F-{secrets.token_hex(4)}", "/", (), None))
    assert uow.last_seq is not None
    return uow.last_seq, time.monotonic()


async def until(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def arrival(receiver: Sink, hook_id: int, seq: int, timeout: float = 20) -> float:
    await until(lambda: (hook_id, seq) in receiver.got, timeout)
    return receiver.got[(hook_id, seq)]


async def test_a_ring_sends_the_change_at_once_not_at_the_next_poll(
    wk_engine: AsyncEngine, wk_store: Store, sink: tuple[Sink, str]
) -> None:
    receiver, url = sink
    account = await new_account(wk_store)
    hook = await new_hook(wk_store, account, url)
    async with doorbell(wk_engine) as (bell, _):
        deliverer = Deliverer(wk_engine, BOX, SLOW, bell)
        async with running(deliverer):
            await until(lambda: account in deliverer.hooks)
            latencies = []
            for _ in range(5):
                seq, committed = await change(wk_store, account)
                latencies.append(await arrival(receiver, hook, seq) - committed)
            rounds = deliverer.rounds
    assert max(latencies) < QUICKLY, latencies
    assert rounds == 1  # the first look at the database, at start: no poll has run since
    assert [seq for _, seq in receiver.order] == sorted(seq for _, seq in receiver.order)


async def test_a_hook_created_while_running_is_found_on_its_accounts_next_ring(
    wk_engine: AsyncEngine, wk_store: Store, sink: tuple[Sink, str]
) -> None:
    receiver, url = sink
    async with doorbell(wk_engine) as (bell, _):
        deliverer = Deliverer(wk_engine, BOX, replace(SLOW, webhook_discover_seconds=0.5), bell)
        async with running(deliverer):
            await until(lambda: deliverer.rounds == 1)
            account = await new_account(wk_store)
            hook = await new_hook(wk_store, account, url)
            seq, committed = await change(wk_store, account)
            latency = await arrival(receiver, hook, seq) - committed
            rounds = deliverer.rounds
    assert latency < QUICKLY
    assert rounds == 1


async def test_a_lost_doorbell_is_covered_by_the_safety_poll(
    wk_engine: AsyncEngine, silent_store: Store, sink: tuple[Sink, str]
) -> None:
    receiver, url = sink
    account = await new_account(silent_store)
    hook = await new_hook(silent_store, account, url)
    async with doorbell(wk_engine) as (bell, _):
        deliverer = Deliverer(wk_engine, BOX, replace(SLOW, webhook_safety_seconds=1.0), bell)
        async with running(deliverer):
            await until(lambda: account in deliverer.hooks)
            seq, _ = await change(silent_store, account)  # committed; its PUBLISH never happens
            await arrival(receiver, hook, seq, timeout=10)
            rounds = deliverer.rounds
    assert rounds >= 2  # a poll found it


async def test_while_the_doorbell_is_down_the_database_is_polled_at_the_short_interval(
    wk_engine: AsyncEngine, wk_store: Store, silent_store: Store, sink: tuple[Sink, str]
) -> None:
    receiver, url = sink
    account = await new_account(wk_store)
    hook = await new_hook(wk_store, account, url)
    config = replace(SLOW, webhook_poll_seconds=0.2)
    async with doorbell(wk_engine) as (bell, task):
        deliverer = Deliverer(wk_engine, BOX, config, bell)
        async with running(deliverer):
            await until(lambda: account in deliverer.hooks)
            seq, committed = await change(wk_store, account)
            assert await arrival(receiver, hook, seq) - committed < QUICKLY
            task.cancel()  # the subscription is gone: rings go unheard until it is back
            await until(lambda: not bell.connected)
            seq, committed = await change(silent_store, account)
            assert await arrival(receiver, hook, seq) - committed < QUICKLY
            assert deliverer.interval() == 0.2

    # Never subscribed at all (nothing listens on that port): polled at the short interval from the start.
    async with doorbell(wk_engine, f"redis://127.0.0.1:{free_port()}/0") as (down, _):
        assert not down.connected
        deliverer = Deliverer(wk_engine, BOX, config, down)
        async with running(deliverer):
            seq, committed = await change(silent_store, account)
            assert await arrival(receiver, hook, seq) - committed < QUICKLY


async def test_a_hook_in_backoff_is_not_attempted_early_when_doorbells_ring(
    wk_engine: AsyncEngine, wk_store: Store, sink: tuple[Sink, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "backoff", lambda failures, base, cap: 2.0)
    receiver, url = sink
    receiver.fail_first = 1
    account = await new_account(wk_store)
    hook = await new_hook(wk_store, account, url)
    async with doorbell(wk_engine) as (bell, _):
        deliverer = Deliverer(wk_engine, BOX, SLOW, bell)
        async with running(deliverer):
            await until(lambda: account in deliverer.hooks)
            seqs = [(await change(wk_store, account))[0]]
            await until(lambda: len(receiver.requests) == 1)
            await until(lambda: hook in deliverer.waiting)
            attempts = deliverer.attempts
            for _ in range(8):  # each rings the doorbell of the account during the backoff
                seqs.append((await change(wk_store, account))[0])
                await asyncio.sleep(0.1)
            assert len(receiver.requests) == 1
            assert deliverer.attempts == attempts  # not even a transaction
            await arrival(receiver, hook, seqs[-1])
    failed, retried = receiver.requests[:2]
    assert 1.9 < retried - failed < 2.0 + QUICKLY  # at the end of the backoff: its timer, not a poll
    assert [seq for _, seq in receiver.order] == seqs


async def test_more_ready_hooks_than_slots_are_all_delivered(
    wk_engine: AsyncEngine, wk_store: Store, sink: tuple[Sink, str]
) -> None:
    receiver, url = sink
    account = await new_account(wk_store)
    hooks = [await new_hook(wk_store, account, url) for _ in range(3)]
    async with doorbell(wk_engine) as (bell, _):
        deliverer = Deliverer(wk_engine, BOX, replace(SLOW, webhook_concurrency=1), bell)
        async with running(deliverer):
            await until(lambda: account in deliverer.hooks)
            for _ in range(2):
                seq, committed = await change(wk_store, account)
                for hook in hooks:
                    assert await arrival(receiver, hook, seq) - committed < QUICKLY
