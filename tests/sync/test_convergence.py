"""Whatever other clients do while the sync runs, the mirror ends identical to the server."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import actions
from schema.changelog import ObjectType
from schema.crypto import CredentialBox
from schema.models import ChangeLog, Folder, Message, MessagePlace, utcnow
from schema.unit import Store
from synccore import planning
from synccore.account import AccountSync, Tuning
from synccore.folder import FolderSync
from synccore.identity import detect
from synccore.verify import verify
from tests.conftest import new_user
from tests.imapproxy import ImapProxy
from tests.sync.support import (
    add_account,
    assert_identical,
    assert_identities,
    connect,
    fold_log,
    mirror_objects,
    sync_once,
)
from tests.sync.workload import Workload


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_random_workload_during_sync_converges(
    seed: int, store: Store, credential_box: CredentialBox, any_dovecot: DovecotServer
) -> None:
    """On servers with QRESYNC, with CONDSTORE only, and with neither."""
    dovecot = any_dovecot
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", list(generate(120, seed=100 + seed)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    other = await connect(dovecot, user, password)
    workload = Workload(other, seed)
    sync = asyncio.create_task(AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.3)).run_forever())
    try:
        for _ in range(120):
            await workload.step()
            await asyncio.sleep(workload.rng.uniform(0, 0.03))
    finally:
        sync.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sync
        await other.logout()

    await sync_once(store, credential_box, account_id)

    diffs = await verify(store, credential_box, account_id)
    assert diffs == [], "\n".join([*diffs[:40], *(await _history(store, account_id, diffs))])
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id), workload.log


async def _history(store: Store, account_id: int, diffs: list[str]) -> list[str]:
    """For a failure's message: what the log says happened to the messages in no folder (a rare interleaving)."""
    ids = [int(d.split()[1].rstrip(":")) for d in diffs if d.startswith("message ") and d.endswith("in no folder")]
    lines = []
    async with store.sessions() as s:
        for mid in ids:
            row = (await s.execute(select(Message.orphaned_at).where(Message.id == mid))).one()
            lines.append(f"message {mid}: orphaned_at {row.orphaned_at}, now {utcnow()}")
            for seq, op, data, at in await s.execute(
                select(ChangeLog.seq, ChangeLog.op, ChangeLog.data, ChangeLog.created_at)
                .where(ChangeLog.account_id == account_id, ChangeLog.object_type == ObjectType.MESSAGE)
                .where(ChangeLog.object_id == mid)
                .order_by(ChangeLog.seq)
            ):
                lines.append(f"  seq {seq} {op} at {at}: folders {(data or {}).get('folder_ids')}")
    return lines


async def test_moves_and_copies_keep_message_ids(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    mail_user: tuple[str, str],
    route: ImapProxy | None,
) -> None:
    """With Dovecot's X-GUID, and through a proxy that hides it (identity by content hash)."""
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(30, seed=5)))
    account_id = await add_account(store, credential_box, dovecot, user, password, via=route)
    await sync_once(store, credential_box, account_id)
    async with store.sessions() as s:
        before = set(await s.scalars(select(Message.id).where(Message.account_id == account_id)))

    other = await connect(dovecot, user, password)
    await other.select("INBOX")
    uids = await other.uid_search("ALL")
    await other.uid_move(uids[:10], "Archive")
    await other.uid_copy(uids[10:15], "Sent")
    await other.logout()
    await sync_once(store, credential_box, account_id)

    await assert_identical(store, credential_box, account_id)
    async with store.sessions() as s:
        after = set(await s.scalars(select(Message.id).where(Message.account_id == account_id)))
    assert after == before
    await assert_identities(store, account_id, route)


async def test_a_folder_deleted_between_the_list_and_its_select_is_gone_not_an_error(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """Dovecot answers a plain NO (no [NONEXISTENT]); before, it restarted the whole account's sync."""
    user, password = mail_user
    other = await connect(dovecot, user, password)
    await other.create("Doomed")
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)
    await other.delete("Doomed")
    await other.logout()
    async with store.sessions() as s:
        doomed = await s.scalar(select(Folder).where(Folder.account_id == account_id, Folder.name == "Doomed"))
    assert doomed is not None
    sync = AccountSync(store, credential_box, account_id, Tuning())
    client = await sync._connect()
    try:
        sync.mode = await detect(client)
        with pytest.raises(planning.FolderGone):
            await FolderSync(sync._ctx(), doomed).run(client)
    finally:
        await client.logout()
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)


async def test_a_message_placed_again_while_its_orphan_is_collected_stays(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    mail_user: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Moved from Archive into the inbox: the poll's pass over Archive leaves the message an orphan, and the inbox's
    IDLE connection places it again while the poll collects orphans. Before, the collection deleted it all the same,
    and its new place with it (ON DELETE CASCADE), after the inbox's cursor had passed its UID and with the inbox's
    count still holding it: no later sync looked at the inbox's UIDs again."""
    user, password = mail_user
    dovecot.append(user, password, "Archive", list(generate(3, seed=7)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)
    other = await connect(dovecot, user, password)
    await other.select("Archive")
    moved = (await other.uid_search("ALL"))[:2]
    await other.uid_move(moved, "INBOX")
    await other.logout()

    sync = AccountSync(store, credential_box, account_id, Tuning())
    client = await sync._connect()
    try:
        sync.mode = await detect(client)
        by_name = {f.name: f for f in await sync.discover(client)}
        await FolderSync(sync._ctx(), by_name["Archive"]).run(client)
        assert await sync._has_orphans()

        # The inbox is synced between the collection's read of the orphans and its delete.
        pending_messages = actions.pending_messages
        inbox_synced = False

        async def inbox_syncs_meanwhile(session: AsyncSession, account: int, ids: Iterable[int]) -> set[int]:
            nonlocal inbox_synced
            if not inbox_synced:
                inbox_synced = True
                await FolderSync(sync._ctx(), by_name["INBOX"]).run(client)
            return await pending_messages(session, account, ids)

        monkeypatch.setattr(actions, "pending_messages", inbox_syncs_meanwhile)
        await sync._collect_orphans(utcnow() + timedelta(seconds=5))
        monkeypatch.undo()
        assert inbox_synced
    finally:
        await client.logout()

    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


@pytest.mark.parametrize("every", [0.0, 0.5])
async def test_a_drift_the_cheap_check_cannot_see_is_found_by_the_periodic_full_compare(
    every: float, store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """A place the mirror holds wrongly beside one it misses leaves HIGHESTMODSEQ, UIDNEXT and the count as they
    were: CONDSTORE's cheap check says nothing changed, forever. The full compare (every `every` seconds; 0: never)
    finds it."""
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(12, seed=41)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)
    async with store.sessions() as s, s.begin():
        inbox = await s.scalar(select(Folder).where(Folder.account_id == account_id, Folder.name == "INBOX"))
        assert inbox is not None
        place = await s.scalar(
            select(MessagePlace).where(MessagePlace.folder_id == inbox.id).order_by(MessagePlace.uid).limit(1)
        )
        assert place is not None
        real = place.uid
        place.uid = 99_999  # the mirror drifted: UID `real` missing, a UID the server never gave held instead
    sync = AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2, full_compare_seconds=every))
    client = await sync._connect()
    try:
        for _ in range(2):  # the first follow starts the folder's clock, the second is past it
            await sync.full_pass(client)
            await asyncio.sleep(every + 0.1)
    finally:
        await client.logout()
    diffs = await verify(store, credential_box, account_id)
    if every:
        assert diffs == []
    else:
        assert sorted(diffs) == sorted(
            [
                "folder 'INBOX': UID 99999 in the mirror, not on the server",
                f"folder 'INBOX': UID {real} on the server, not in the mirror",
            ]
        )
