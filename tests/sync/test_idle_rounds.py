"""An idle sync process's rounds: the heartbeat and the renewal are one transaction, and the account list is read
only when something may have changed (or every LIST_ROUNDS rounds): an idle process's CPU goes to its rounds'
statements (bench.empty_idle_bench)."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from schema.db import create_engine
from schema.models import SyncProcess, utcnow
from schema.settings import Settings
from schema.unit import Store
from synccore import supervisor as supervisor_module
from synccore.supervisor import Supervisor
from tests.conftest import REDIS_URL, throwaway_database


@pytest.fixture
def own_database() -> Iterator[str]:
    """A database of its own: the process below holds no account, and another process is added by hand."""
    with throwaway_database("inboxql_rounds") as url:
        yield url


def _count(supervisor: Supervisor) -> Counter[str]:
    """Statements (by their first word) and connection checkouts of the rounds' own connections."""
    counts: Counter[str] = Counter()

    def statement(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        counts[sql.split()[0].upper()] += 1

    def checkout(*_args: Any) -> None:
        counts["checkout"] += 1

    for _, engine in supervisor._round_shards.engines():
        event.listen(engine.sync_engine, "before_cursor_execute", statement)
        event.listen(engine.sync_engine.pool, "checkout", checkout)
    return counts


async def test_an_idle_round_is_one_transaction_and_reads_the_list_only_when_something_changed(
    own_database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "LIST_ROUNDS", 4)
    settings = Settings(database_url=own_database, redis_url=REDIS_URL, secret_key=secrets.token_urlsafe(32))
    supervisor = Supervisor(settings)
    lane = supervisor.lanes[0]
    counts = _count(supervisor)
    try:
        assert await supervisor._round(lane, None)  # the first round reads the list, and sweeps the queues
        assert counts["SELECT"] == 4 + 2  # live and draining, leases held, the accounts, the queue depths
        counts.clear()
        for _ in range(3):
            assert await supervisor._round(lane, None)
        # Each: one connection, the heartbeat's upsert, the renewal's update and its two reads.
        assert counts == Counter({"checkout": 3, "INSERT": 3, "UPDATE": 3, "SELECT": 6})
        counts.clear()
        assert await supervisor._round(lane, None)  # the LIST_ROUNDS-th round reads it in any case
        assert counts == Counter({"checkout": 2, "INSERT": 1, "UPDATE": 1, "SELECT": 4})

        counts.clear()
        lane.bell.set()  # the accounts bell (an account added, removed or re-authorized)
        assert await supervisor._round(lane, None)
        assert counts["SELECT"] == 4
        assert not lane.bell.is_set()

        counts.clear()
        engine = create_engine(own_database, pool_size=1)
        try:
            async with Store(engine).sessions() as s, s.begin():  # another process starts: shares move
                s.add(SyncProcess(owner="other:1:aa", group_name=None, started_at=utcnow(), heartbeat_at=utcnow()))
        finally:
            await engine.dispose()
        assert await supervisor._round(lane, None)
        assert counts["SELECT"] == 4
        counts.clear()
        assert await supervisor._round(lane, None)  # nothing changed since
        assert counts["SELECT"] == 2
    finally:
        await supervisor.close()
