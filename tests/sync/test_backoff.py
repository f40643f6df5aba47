"""Jittered exponential backoff: grows, stays under the cap, jitters within [ceiling/2, ceiling], resets; and an
account whose server refuses really waits longer before each new attempt."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time

import pytest

from schema import accounts
from schema.crypto import CredentialBox
from schema.models import Account
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.actions import ActionExecutor
from synccore.backoff import Backoff
from synccore.imap import ImapClient


def test_delays_stay_within_half_to_full_ceiling() -> None:
    backoff = Backoff(base=1.0, cap=300.0, rng=random.Random(7))
    for attempt in range(15):
        ceiling = min(300.0, 1.0 * 2**attempt)
        delay = backoff.next()
        assert ceiling / 2 <= delay <= ceiling, (attempt, delay)


def test_delays_grow_until_the_cap() -> None:
    backoff = Backoff(base=0.5, cap=60.0, rng=random.Random(1))
    delays = [backoff.next() for _ in range(8)]  # ceilings 0.5 .. 64 -> the last is capped at 60
    assert delays == sorted(delays)
    assert delays[-1] > 16 * delays[0]


def test_delays_are_bounded_by_the_cap() -> None:
    backoff = Backoff(base=2.0, cap=30.0, rng=random.Random(3))
    delays = [backoff.next() for _ in range(200)]
    assert max(delays) <= 30.0
    assert min(delays[10:]) >= 15.0


def test_delays_stay_bounded_after_a_long_outage() -> None:
    # An account that fails for days keeps retrying: thousands of attempts must not break the arithmetic.
    backoff = Backoff(base=1.0, cap=300.0, rng=random.Random(5))
    delays = [backoff.next() for _ in range(5000)]
    assert all(150.0 <= d <= 300.0 for d in delays[20:])


def test_jitter_spreads_over_the_whole_half_to_full_range() -> None:
    rng = random.Random(11)
    delays = []
    for _ in range(400):
        backoff = Backoff(base=10.0, cap=10.0, rng=rng)
        delays.append(backoff.next())
    assert all(5.0 <= d <= 10.0 for d in delays)
    assert min(delays) < 5.5
    assert max(delays) > 9.5
    assert len(set(delays)) > 300


def test_reset_starts_over_from_the_base() -> None:
    backoff = Backoff(base=1.0, cap=300.0, rng=random.Random(2))
    for _ in range(10):
        backoff.next()
    backoff.reset()
    assert 0.5 <= backoff.next() <= 1.0
    assert 1.0 <= backoff.next() <= 2.0


# --- against a real server that refuses ---------------------------------------------------------------


class Refusing:
    """An IMAP port that accepts each connection and closes it at once (a server going down, a proxy without a
    backend): it notes when each attempt came."""

    def __init__(self) -> None:
        self.attempts: list[float] = []
        self.attempted = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Refusing:
        self._server = await asyncio.start_server(self._refuse, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.attempts.append(time.monotonic())
        self.attempted.set()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_an_account_whose_server_refuses_reconnects_ever_more_slowly(
    store: Store, credential_box: CredentialBox
) -> None:
    """Base 0.25 s: the ceilings are 0.25, 0.5, 1 and 2 s, and each wait is within [ceiling/2, ceiling], so the
    n-th gap between attempts is at least base * 2**n / 2: as long as the whole wait before it, had the delay
    not doubled. A refused attempt and its bookkeeping only add to a gap (generously bounded for a busy
    machine)."""
    base, attempts = 0.25, 5
    async with Refusing() as server:
        endpoint = accounts.ImapEndpoint("127.0.0.1", server.port, "none", "nobody")
        account_id = await accounts.create(store, credential_box, "refused@example.test", endpoint, "pw")
        sync = AccountSync(store, credential_box, account_id, Tuning(backoff_base=base, backoff_cap=60.0))
        task = asyncio.create_task(sync.run_forever())
        try:
            async with asyncio.timeout(30):
                while len(server.attempts) < attempts:
                    assert not task.done(), task
                    await asyncio.sleep(0.02)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    gaps = [b - a for a, b in itertools.pairwise(server.attempts[:attempts])]
    overhead = 2.0  # at most, what a refused attempt and the account's bookkeeping take on a busy machine
    for n, gap in enumerate(gaps):
        ceiling = base * 2**n
        assert ceiling / 2 <= gap <= ceiling + overhead, (n, gaps)
    assert gaps[-1] >= 4 * base  # a backoff that did not grow would wait at most `base` each time
    async with store.sessions() as s:
        account = await s.get(Account, account_id)
    assert account is not None
    assert account.sync_state == "error"


async def test_an_account_cancelled_while_its_connection_fails_stops(
    store: Store, credential_box: CredentialBox
) -> None:
    """A cancel that lands while the connection's failure is on its way out of the account's task group (Python
    3.11's TaskGroup then raises the child's error and drops the CancelledError) still stops the account: the
    supervisor cancels accounts on shutdown and when their lease is lost. The cancel is sent at each step of
    the event loop after the refused connection, so one of them lands in that window."""
    async with Refusing() as server:
        endpoint = accounts.ImapEndpoint("127.0.0.1", server.port, "none", "nobody")
        account_id = await accounts.create(store, credential_box, "cancelled@example.test", endpoint, "pw")
        for steps in range(40):
            server.attempted.clear()
            sync = AccountSync(store, credential_box, account_id, Tuning(backoff_base=30.0, backoff_cap=30.0))
            task = asyncio.create_task(sync.run_forever())
            async with asyncio.timeout(10):
                await server.attempted.wait()
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            done, _ = await asyncio.wait([task], timeout=5)
            if task not in done:
                task.cancel()  # it sleeps until its next attempt: this cancel lands
                await asyncio.wait([task], timeout=5)
                pytest.fail(f"the account ignored a cancel {steps} loop steps after the refused connection")
            assert task.cancelled()


async def test_an_executor_whose_drain_swallowed_a_cancel_still_stops(
    store: Store, credential_box: CredentialBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A library's cleanup that swallows the CancelledError (or turns it into an error the drain retries later)
    must not keep the write-back executor running: the account would wait on it for good (the account's task
    cancels it when the folder sync stops, e.g. on refused credentials)."""
    endpoint = accounts.ImapEndpoint("127.0.0.1", 1, "none", "nobody")
    account_id = await accounts.create(store, credential_box, "swallowed@example.test", endpoint, "pw")
    started = asyncio.Event()

    async def swallowing(self: ActionExecutor) -> float | None:
        started.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(10)
        return None  # as if nothing were pending

    monkeypatch.setattr(ActionExecutor, "drain", swallowing)
    executor = ActionExecutor(store, account_id, _never_connects)
    rung = asyncio.Event()
    rung.set()  # as the sync process's sweep does when the account's task starts with work queued
    task = asyncio.create_task(executor.run(rung))
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait([task], timeout=5)
    assert task in done, "the executor slept on a cancel its drain swallowed"
    assert task.cancelled()


async def _never_connects() -> ImapClient:
    raise AssertionError("nothing to perform")
