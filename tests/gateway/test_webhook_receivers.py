"""Slow and silent webhook receivers cost their own hook, never anyone else's: each attempt has one deadline,
the POST is made outside any transaction, hooks that fail or are slow have slots of their own, the delivery
log is pruned, and delivery errors name no address.

Each test runs the gateway's deliverer (gateway.delivery) on a database of its own with receivers on raw
loopback sockets (tests/gateway/webhook_receivers.py): one trickles its headers a byte a second and never
ends them, which no per-read timeout ever cuts off; one reads the request and never answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace

import pytest
from sqlalchemy import delete, make_url, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway import delivery
from gateway.config import GatewayConfig
from gateway.delivery import Deliverer, running
from inboxql.devmail import free_port
from schema import accounts, folders, webhooks
from schema.crypto import CredentialBox
from schema.db import create_engine
from schema.models import Webhook, WebhookDelivery
from schema.unit import Store
from tests.conftest import throwaway_database
from tests.gateway.webhook_receivers import RawReceiver, receiving

DEADLINE = 2.0
CONFIG = GatewayConfig(
    webhook_allow_loopback=True,
    webhook_poll_seconds=0.05,
    webhook_safety_seconds=0.05,
    webhook_discover_seconds=0.05,
    webhook_backoff_base_seconds=0.05,
    webhook_backoff_cap_seconds=0.2,
    webhook_timeout_seconds=DEADLINE,
    webhook_concurrency=2,
    webhook_slow_concurrency=2,
)
BOX = CredentialBox(secrets.token_urlsafe(32))


@pytest.fixture(scope="module")
def wr_database_url() -> Iterator[str]:
    with throwaway_database("inboxql_receivers_test") as url:
        yield url


@pytest.fixture(scope="module")
async def wr_engine(wr_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(wr_database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def wr_store(wr_engine: AsyncEngine) -> Store:
    return Store(wr_engine, None)  # no doorbell: the deliverers here poll every 50 ms


@pytest.fixture(autouse=True)
async def no_hooks_left(wr_store: Store) -> AsyncIterator[None]:
    """Each test's hooks go with it: the next test's deliverer sees only its own."""
    yield
    async with wr_store.sessions() as session, session.begin():
        await session.execute(delete(Webhook))


async def new_account(store: Store) -> int:
    address = f"{secrets.token_hex(4)}@example.test"
    return await accounts.create(store, BOX, address, accounts.ImapEndpoint("127.0.0.1", 143, "none", address), "pw")


async def new_hook(store: Store, account_id: int, url: str) -> int:
    async with store.sessions() as session, session.begin():
        hook, _ = await webhooks.create(session, BOX, account_id, url, ["*"])
        return hook.id


async def change(store: Store, account_id: int) -> tuple[int, float]:
    """Commit one change (a new folder): its seq, and when it was committed."""
    async with store.unit(account_id) as uow:
        await folders.create(uow, folders.Discovered(f"F-{secrets.token_hex(4)}", "/", (), None))
    assert uow.last_seq is not None
    return uow.last_seq, time.monotonic()


async def until(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def arrival(receiver: RawReceiver, hook: int, seq: int, timeout: float = 20) -> float:
    await until(lambda: seq in receiver.seqs(hook), timeout)
    return next(a.at for a in receiver.arrivals if (a.hook, a.seq) == (hook, seq))


async def logged(store: Store, hook: int) -> list[WebhookDelivery]:
    """The hook's delivery log, oldest first."""
    async with store.sessions() as session:
        rows = await session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook).order_by(WebhookDelivery.id)
        )
        return list(rows)


async def wait_logged(store: Store, hook: int, count: int, timeout: float = 20) -> list[WebhookDelivery]:
    deadline = time.monotonic() + timeout
    while len(rows := await logged(store, hook)) < count:
        assert time.monotonic() < deadline, f"timed out: {len(rows)} attempts logged"
        await asyncio.sleep(0.05)
    return rows


@contextlib.asynccontextmanager
async def delivering(engine: AsyncEngine, config: GatewayConfig = CONFIG) -> AsyncIterator[Deliverer]:
    deliverer = Deliverer(engine, BOX, config)
    async with running(deliverer):
        yield deliverer


async def test_a_receiver_trickling_headers_or_never_answering_is_cut_off_at_the_deadline(
    wr_engine: AsyncEngine, wr_store: Store
) -> None:
    account = await new_account(wr_store)
    async with receiving("trickle") as trickler, receiving("silent") as silent, delivering(wr_engine):
        trickling = await new_hook(wr_store, account, trickler.url)
        mute = await new_hook(wr_store, account, silent.url)
        await change(wr_store, account)
        for hook in (trickling, mute):
            first = (await wait_logged(wr_store, hook, 1, timeout=3 * DEADLINE))[0]
            assert (first.status_code, first.error) == (None, f"no response within {DEADLINE:g}s")
            assert DEADLINE * 1000 - 50 <= first.duration_ms < DEADLINE * 1000 + 1000
    assert trickler.trickled >= 1  # bytes kept coming: no per-read timeout could have fired
    assert trickler.closed >= 1
    assert silent.closed >= 1


async def test_trickling_receivers_do_not_hold_up_a_healthy_hook_of_another_account(
    wr_engine: AsyncEngine, wr_store: Store
) -> None:
    first, second, third = [await new_account(wr_store) for _ in range(3)]
    async with receiving("trickle") as trickler, receiving("answer") as healthy:
        trickling = [await new_hook(wr_store, account, trickler.url) for account in (first, second, first, second)]
        good = await new_hook(wr_store, third, healthy.url)
        async with delivering(wr_engine):
            await change(wr_store, first)
            await change(wr_store, second)
            seq, committed = await change(wr_store, third)
            # Four new hooks trickle in the two slots of hooks in good standing, each for one deadline; then they
            # are known to be slow and retry in slots of their own.
            assert await arrival(healthy, good, seq, timeout=3 * DEADLINE + 2) - committed < 2 * DEADLINE + 1.5
            latencies = []
            for _ in range(5):
                await until(lambda: trickler.open_now >= 2)  # the tricklers hold every slot of their lane...
                seq, committed = await change(wr_store, third)
                latencies.append(await arrival(healthy, good, seq) - committed)  # ...and the healthy hook's is free
    assert max(latencies) < 1.5, latencies
    assert trickler.trickled >= len(trickling)
    assert {a.hook for a in trickler.arrivals} == set(trickling)  # each was attempted, and cut off
    assert trickler.closed >= len(trickling)
    assert healthy.seqs(good) == sorted(healthy.seqs(good))


async def open_transactions(engine: AsyncEngine) -> list[tuple[object, ...]]:
    """The InnoDB transactions on this database's connections (but the asking one) that hold row locks or have
    been open for over 2 s (a plain read of the deliverer's poll may be caught open for a moment)."""
    name = make_url(str(engine.url)).database
    async with engine.connect() as conn:
        found = await conn.execute(
            text(
                "SELECT t.trx_id, t.trx_state, t.trx_rows_locked, p.info FROM information_schema.innodb_trx t"
                " JOIN information_schema.processlist p ON p.id = t.trx_mysql_thread_id"
                " WHERE p.db = :db AND p.id <> CONNECTION_ID()"
                " AND (t.trx_rows_locked > 0 OR t.trx_started < NOW() - INTERVAL 2 SECOND)"
            ),
            {"db": name},
        )
        return [tuple(row) for row in found]


async def test_no_transaction_is_open_and_no_row_locked_while_a_receiver_holds_an_attempt(
    wr_database_url: str, wr_engine: AsyncEngine, wr_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.delivery")
    account = await new_account(wr_store)
    async with receiving("silent") as silent, receiving("answer") as healthy:
        hook = await new_hook(wr_store, account, silent.url)
        async with delivering(wr_engine, replace(CONFIG, webhook_timeout_seconds=5)):
            await change(wr_store, account)
            await until(lambda: silent.open_now == 1 and len(silent.arrivals) == 1)  # the attempt is in flight
            await asyncio.sleep(2.5)
            assert await open_transactions(wr_engine) == []
            assert silent.open_now == 1  # still in flight
            # Another writer of the hook's row (here its owner deleting it) is not kept waiting by the attempt.
            writer = create_engine(wr_database_url, pool_size=1)
            try:
                async with writer.connect() as conn:
                    await conn.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))
                    await conn.commit()
                    started = time.monotonic()
                    async with conn.begin():
                        await conn.execute(text("DELETE FROM webhooks WHERE id = :id"), {"id": hook})
                    took = time.monotonic() - started
            finally:
                await writer.dispose()
            assert took < 0.5
            assert silent.open_now == 1  # still in flight: the delete did not end it
            # The late outcome of the deleted hook's attempt is dropped, and delivery goes on for the others.
            other = await new_hook(wr_store, account, healthy.url)
            seq, _ = await change(wr_store, account)
            await arrival(healthy, other, seq)
            await until(lambda: silent.closed == 1, timeout=10)
            await asyncio.sleep(0.2)
    assert took < 0.5
    assert await logged(wr_store, hook) == []
    assert [r.getMessage() for r in caplog.records] == []


async def test_the_delivery_log_keeps_each_hooks_newest_attempts_none_older_than_the_age_limit(
    wr_engine: AsyncEngine, wr_store: Store
) -> None:
    account = await new_account(wr_store)
    async with receiving("answer", fail_first=3) as receiver:
        busy = await new_hook(wr_store, account, receiver.url)
        seqs = [(await change(wr_store, account))[0] for _ in range(3)]
        quiet = 0
        async with delivering(wr_engine, replace(CONFIG, webhook_log_keep=4)):
            await until(lambda: receiver.accepted(busy) == seqs)
            quiet = await new_hook(wr_store, account, receiver.url)  # starts after these
            seqs += [(await change(wr_store, account))[0] for _ in range(3)]
            await until(lambda: receiver.accepted(busy) == seqs and receiver.accepted(quiet) == seqs[3:])
            await asyncio.sleep(0.2)
        # 3 failures and 6 successes were logged for the busy hook: its newest 4 are kept. The quiet hook's 3 are
        # not touched by the busy one's pruning.
        kept = await logged(wr_store, busy)
        assert [(r.first_seq, r.status_code) for r in kept] == [(seq, 204) for seq in seqs[2:]]
        assert [(r.first_seq, r.status_code) for r in await logged(wr_store, quiet)] == [(seq, 204) for seq in seqs[3:]]

        async with delivering(wr_engine, replace(CONFIG, webhook_log_keep=4, webhook_log_max_age_seconds=1.0)):
            await asyncio.sleep(1.2)
            seq, _ = await change(wr_store, account)
            await until(lambda: seq in receiver.accepted(busy) and seq in receiver.accepted(quiet))
            await asyncio.sleep(0.2)
    for hook in (busy, quiet):
        assert [(r.first_seq, r.status_code) for r in await logged(wr_store, hook)] == [(seq, 204)]


async def test_delivery_errors_name_no_address_the_host_resolved_to(
    wr_engine: AsyncEngine, wr_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = {"inside.test": "10.20.30.40", "closed.test": "127.0.0.1", "mute.test": "127.0.0.1"}

    async def fake_resolve(host: str, port: int) -> list[delivery.IPAddress]:
        return [ipaddress.ip_address(dns[host])]

    monkeypatch.setattr(delivery, "resolve", fake_resolve)
    account = await new_account(wr_store)
    async with receiving("silent") as silent, delivering(wr_engine):
        private = await new_hook(wr_store, account, "http://inside.test/hook")
        closed = await new_hook(wr_store, account, f"http://closed.test:{free_port()}/hook")
        mute = await new_hook(wr_store, account, f"http://mute.test:{silent.port}/hook")
        await change(wr_store, account)
        errors = {hook: (await wait_logged(wr_store, hook, 1))[0].error for hook in (private, closed, mute)}
    assert errors == {
        private: "refused: the webhook URL resolves to a private address",
        closed: "could not connect (Connection refused)",
        mute: f"no response within {DEADLINE:g}s",
    }
    with pytest.raises(delivery.RefusedURL) as refused:
        await delivery.check_url("http://inside.test/hook", CONFIG)
    assert "10.20.30.40" not in str(refused.value)


async def test_an_attempt_its_process_died_in_is_sent_again_once_its_claim_lapses(
    wr_engine: AsyncEngine, wr_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delivery, "CLAIM_MARGIN_SECONDS", 1.0)
    account = await new_account(wr_store)
    async with receiving("silent") as receiver:
        hook = await new_hook(wr_store, account, receiver.url)
        dying = Deliverer(wr_engine, BOX, CONFIG)
        task = asyncio.create_task(dying.run())
        first, _ = await change(wr_store, account)
        await until(lambda: len(receiver.arrivals) == 1)
        task.cancel()  # the process dies mid-attempt: nothing records the outcome or ends the claim
        with contextlib.suppress(asyncio.CancelledError):
            await task
        async with wr_store.sessions() as session:
            row = await session.get(Webhook, hook)
            assert row is not None
            assert row.claim is not None
            assert row.claimed_until is not None
            lapses, cursor = row.claimed_until, row.cursor
        assert cursor == first - 1
        receiver.mode = "answer"
        second, _ = await change(wr_store, account)
        async with delivering(wr_engine):
            await until(lambda: receiver.seqs(hook) == [first, first, second])
            await asyncio.sleep(0.2)
    resent = receiver.arrivals[1]
    assert resent.wall >= lapses  # not while the claim held: the dead attempt might have been alive
    assert [(r.first_seq, r.attempt, r.status_code) for r in await logged(wr_store, hook)] == [
        (first, 1, 204),
        (second, 1, 204),
    ]
