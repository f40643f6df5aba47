"""Webhook event filters: a hook gets exactly the object types and operations it subscribed to, in seq order, and
its cursor still moves past everything it did not want (issue 9, item 23).

Mail is written through the schema write API (folders, messages, flags, a rename, a removal), delivered by the
gateway's deliverer (gateway.delivery) to a receiver on a raw loopback socket, on a database of its own.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.testing import Mail, add_folder, deliver
from schema import folders, messages, webhooks
from schema.db import create_engine
from schema.models import ChangeLog, Webhook, WebhookDelivery
from schema.unit import Store
from tests.conftest import throwaway_database
from tests.gateway.test_webhook_receivers import BOX, delivering, new_account, until
from tests.gateway.webhook_receivers import receiving

# Each filter, and what it means, said apart from schema.webhooks.wants (whose logic it checks).
FILTERS: dict[tuple[str, ...], Callable[[str, str], bool]] = {
    ("*",): lambda kind, op: True,
    ("folder",): lambda kind, op: kind == "folder",
    ("message.create",): lambda kind, op: (kind, op) == ("message", "create"),
    ("thread.update", "folder.delete"): lambda kind, op: (kind, op) in {("thread", "update"), ("folder", "delete")},
    ("message", "thread.create"): lambda kind, op: kind == "message" or (kind, op) == ("thread", "create"),
    ("label",): lambda kind, op: kind == "label",  # nothing below touches a label
}


@pytest.fixture(scope="module")
def wf_database_url() -> Iterator[str]:
    with throwaway_database("inboxql_filters_test") as url:
        yield url


@pytest.fixture(scope="module")
async def wf_engine(wf_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(wf_database_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def wf_store(wf_engine: AsyncEngine) -> Store:
    return Store(wf_engine, None)


async def new_hook(store: Store, account_id: int, url: str, events: tuple[str, ...]) -> int:
    async with store.sessions() as session, session.begin():
        hook, _ = await webhooks.create(session, BOX, account_id, url, list(events))
        return hook.id


async def mail_life(store: Store, account_id: int) -> None:
    """Folders, messages, threads and flags created, updated and deleted, one unit of work each."""
    folder = await add_folder(store, account_id, f"Work-{secrets.token_hex(3)}", None)
    one = Mail("Hello", "a@example.test", ["me@example.test"], "body one").raw()
    two = Mail("Other", "b@example.test", ["me@example.test"], "body two").raw()
    await deliver(store, account_id, folder, [(one, ()), (two, ())])
    async with store.unit(account_id) as uow:
        await messages.set_flags(uow, folder, 1, [messages.PlaceFlags(1, ("\\Seen",), None)])
    async with store.unit(account_id) as uow:
        await folders.rename(uow, folder, f"Renamed-{secrets.token_hex(3)}")
    async with store.unit(account_id) as uow:
        await messages.remove_places(uow, folder, [2])
    async with store.unit(account_id) as uow:
        await folders.remove(uow, folder)


async def log_after(store: Store, account_id: int, cursor: int) -> list[tuple[int, str, str]]:
    async with store.sessions() as session:
        rows = await session.execute(
            select(ChangeLog.seq, ChangeLog.object_type, ChangeLog.op)
            .where(ChangeLog.account_id == account_id, ChangeLog.seq > cursor)
            .order_by(ChangeLog.seq)
        )
        return [(seq, str(kind), str(op)) for seq, kind, op in rows]


async def cursors(store: Store, hooks: list[int]) -> list[int]:
    async with store.sessions() as session:
        found = dict((await session.execute(select(Webhook.id, Webhook.cursor).where(Webhook.id.in_(hooks)))).all())
        return [found[hook] for hook in hooks]


async def test_each_hook_gets_only_the_events_it_subscribed_to_and_its_cursor_passes_the_rest(
    wf_engine: AsyncEngine, wf_store: Store
) -> None:
    account = await new_account(wf_store)
    async with receiving("answer") as receiver:
        hooks = [await new_hook(wf_store, account, receiver.url, events) for events in FILTERS]
        (start,) = set(await cursors(wf_store, hooks))
        await mail_life(wf_store, account)
        log = await log_after(wf_store, account, start)
        kinds = {(kind, op) for _, kind, op in log}
        assert {("folder", "create"), ("folder", "update"), ("folder", "delete")} <= kinds
        assert {("message", "create"), ("message", "update"), ("thread", "create"), ("thread", "update")} <= kinds
        expected = {
            hook: [seq for seq, kind, op in log if wanted(kind, op)]
            for hook, wanted in zip(hooks, FILTERS.values(), strict=True)
        }
        # Every filter but "*" and "label" picks some of the log and leaves some out.
        assert [0 < len(expected[hook]) < len(log) for hook in hooks[1:-1]] == [True] * (len(hooks) - 2)
        assert expected[hooks[-1]] == []
        last = log[-1][0]

        async with delivering(wf_engine):
            await until(lambda: all(receiver.accepted(hook) == expected[hook] for hook in hooks))
            for _ in range(200):
                if await cursors(wf_store, hooks) == [last] * len(hooks):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)  # anything not wanted would have arrived by now

    assert await cursors(wf_store, hooks) == [last] * len(hooks)
    by_seq = {seq: (kind, op) for seq, kind, op in log}
    for hook in hooks:
        got = [(a.seq, a.type, a.op) for a in receiver.arrivals if a.hook == hook]
        assert got == [(seq, *by_seq[seq]) for seq in expected[hook]]  # once each, in seq order, as logged
    async with wf_store.sessions() as session:
        attempts = await session.scalars(
            select(WebhookDelivery.webhook_id).where(WebhookDelivery.webhook_id == hooks[-1])
        )
        assert list(attempts) == []  # the hook that wanted nothing was never called: no attempt logged


async def test_the_cursor_moves_over_unwanted_events_page_after_page(wf_store: Store) -> None:
    account = await new_account(wf_store)
    async with wf_store.sessions() as session, session.begin():
        hook, _ = await webhooks.create(session, BOX, account, "http://127.0.0.1:9/hook", ["folder.delete"])
        start = hook.cursor
    made = [await add_folder(wf_store, account, f"F-{n}", None) for n in range(5)]
    async with wf_store.unit(account) as uow:
        await folders.remove(uow, made[0])
    log = await log_after(wf_store, account, start)
    assert log[-1][1:] == ("folder", "delete")
    assert len(log) > 4  # more than two pages of two

    async with wf_store.sessions() as session, session.begin():
        row = await webhooks.hold(session, hook.id)
        assert row is not None
        change = await webhooks.next_event(session, row, scan=2)
        assert change is not None
        assert (change.seq, change.object_type.value, change.op.value) == log[-1]
        assert row.cursor == log[-1][0] - 1  # moved over the creations, up to the event it wants
        row.cursor = change.seq  # as a successful delivery would
        assert await webhooks.next_event(session, row, scan=2) is None
    await add_folder(wf_store, account, "F-late", None)  # a creation again: not wanted
    async with wf_store.sessions() as session, session.begin():
        row = await webhooks.hold(session, hook.id)
        assert row is not None
        assert await webhooks.next_event(session, row, scan=2) is None
        newest = (await log_after(wf_store, account, start))[-1][0]
        assert row.cursor == newest  # nothing it wants: the cursor is at the newest change
