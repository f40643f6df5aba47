"""What the operator's views read (schema.status) and the bookkeeping behind it: the server's count of a folder and
the times of errors are written without flooding the change log, and a snapshot has them."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from schema import accounts, changelog, folders, status, webhooks
from schema.crypto import CredentialBox
from schema.models import ChangeLog
from schema.unit import Store
from tests.schema.support import new_account, new_folder


async def _log(store: Store, account_id: int) -> list[tuple[str, int, str]]:
    async with store.sessions() as s:
        rows = await s.execute(
            select(ChangeLog.object_type, ChangeLog.object_id, ChangeLog.op)
            .where(ChangeLog.account_id == account_id)
            .order_by(ChangeLog.seq)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def _snap(store: Store, account_id: int) -> status.AccountStatus:
    async with store.sessions() as s:
        found = await status.snapshot(s, [account_id])
    assert len(found.accounts) == 1
    return found.accounts[0]


async def test_the_servers_count_is_recorded_unlogged_and_read_as_x_of_n(
    store: Store, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    inbox = await new_folder(store, account_id, "INBOX")
    sent = await new_folder(store, account_id, "Sent")
    logged = await _log(store, account_id)
    assert (await _snap(store, account_id)).progress == "0 of ?"

    async with store.unit(account_id) as uow:
        await folders.record_server_counts(uow, {inbox: 1000, sent: 2})
    assert uow.last_seq is None  # nothing a client sees changed: no entry, no doorbell

    snap = await _snap(store, account_id)
    assert [(f.name, f.mirrored, f.server_count, f.progress) for f in snap.folders] == [
        ("INBOX", 0, 1000, "0 of 1,000"),
        ("Sent", 0, 2, "0 of 2"),
    ]
    assert (snap.mirrored, snap.server_count, snap.progress) == (0, 1002, "0 of 1,002")
    assert await _log(store, account_id) == logged


async def test_an_error_keeps_its_time_and_a_repeat_moves_it_without_a_log_entry(
    store: Store, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    folder_id = await new_folder(store, account_id, "INBOX")
    before = len(await _log(store, account_id))

    async with store.unit(account_id) as uow:
        await folders.set_sync_error(uow, folder_id, "CommandFailed: NO [SERVERBUG]")
    first = (await _snap(store, account_id)).folders[0]
    assert first.sync_error == "CommandFailed: NO [SERVERBUG]"
    assert first.sync_error_at is not None
    assert len(await _log(store, account_id)) == before + 1  # a new error: clients see it

    await asyncio.sleep(0.01)
    async with store.unit(account_id) as uow:
        await folders.set_sync_error(uow, folder_id, "CommandFailed: NO [SERVERBUG]")
    again = (await _snap(store, account_id)).folders[0]
    assert again.sync_error_at is not None
    assert again.sync_error_at > first.sync_error_at
    assert len(await _log(store, account_id)) == before + 1  # the same error: only its time moved

    async with store.unit(account_id) as uow:
        await folders.set_sync_error(uow, folder_id, None)
    cleared = (await _snap(store, account_id)).folders[0]
    assert (cleared.sync_error, cleared.sync_error_at) == (None, None)

    async with store.unit(account_id) as uow:
        await accounts.set_state(uow, "error", "ConnectionRefusedError: [Errno 111]")
    snap = await _snap(store, account_id)
    assert snap.sync_error == "ConnectionRefusedError: [Errno 111]"
    assert snap.sync_error_at is not None
    async with store.unit(account_id) as uow:
        await accounts.set_state(uow, "syncing")
    snap = await _snap(store, account_id)
    assert (snap.sync_error, snap.sync_error_at) == (None, None)


async def test_a_snapshot_has_the_change_log_head_and_webhook_health_without_secrets(
    store: Store, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    await new_folder(store, account_id, "INBOX")
    async with store.sessions() as s, s.begin():
        head = await changelog.newest_seq(s, account_id)
        _, secret = await webhooks.create(
            s, credential_box, account_id, "https://user:pw@hooks.example.com:8443/in?key=abc", ["*"]
        )
    snap = await _snap(store, account_id)
    assert head > 0
    assert snap.change_log_head == head
    [health] = snap.webhooks
    assert health.endpoint == "https://hooks.example.com:8443/in"
    assert (health.state, health.failing, health.last_attempt_at) == ("active", False, None)
    assert secret not in repr(health)
    assert "pw" not in health.endpoint
    assert "abc" not in health.endpoint
