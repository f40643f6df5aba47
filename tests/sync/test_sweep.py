"""The write-back executors' safety net is one sweep per sync process, not a timer per account: an idle account's
executor makes no query until its bell rings."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from schema import accounts, actions
from schema.crypto import CredentialBox
from schema.settings import Settings
from schema.unit import Store
from synccore import actions as executor_module
from synccore.actions import ActionExecutor
from synccore.imap import ImapClient
from synccore.supervisor import Supervisor


async def _never_connects() -> ImapClient:
    raise AssertionError("nothing to perform")


async def test_an_executor_with_a_bell_looks_at_its_queue_only_when_rung(
    store: Store, credential_box: CredentialBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = accounts.ImapEndpoint("127.0.0.1", 1, "none", "nobody")
    account_id = await accounts.create(store, credential_box, "bell@example.test", endpoint, "pw")
    monkeypatch.setattr(executor_module, "SAFETY_WAKE", 0.01)  # a timer, if there were one, would fire often
    drains = 0

    async def counting(self: ActionExecutor) -> float | None:
        nonlocal drains
        drains += 1
        return None  # nothing pending

    monkeypatch.setattr(ActionExecutor, "drain", counting)
    bell = asyncio.Event()
    task = asyncio.create_task(ActionExecutor(store, account_id, _never_connects).run(bell))
    try:
        await asyncio.sleep(0.5)
        assert drains == 0  # no look at start, none on a timer: the process's sweep rings it if work is queued
        bell.set()
        async with asyncio.timeout(10):
            while drains < 1:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert drains == 1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_sweep_rings_the_accounts_held_that_have_work_queued(
    settings: Settings, store: Store, credential_box: CredentialBox
) -> None:
    endpoint = accounts.ImapEndpoint("127.0.0.1", 1, "none", "nobody")
    busy = await accounts.create(store, credential_box, "busy@example.test", endpoint, "pw")
    idle = await accounts.create(store, credential_box, "idle@example.test", endpoint, "pw")
    async with store.unit(busy) as uow:
        await actions.create_folder(uow, "Projects", "/")
    supervisor = Supervisor(settings)
    try:
        assert await supervisor.acquire(busy)
        assert await supervisor.acquire(idle)
        await supervisor.sweep()
        assert supervisor.bells.event(busy).is_set()
        assert not supervisor.bells.event(idle).is_set()
    finally:
        await supervisor.close()
