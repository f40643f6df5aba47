"""A message keeps its id while it exists, whatever the server starts (or stops) offering as ids of its own."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy import func, select, update

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema.changelog import ObjectType, Op
from schema.crypto import CredentialBox
from schema.models import Account, ChangeLog, Message
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.folder import BODY_BATCH
from tests.imapproxy import Exchange, ImapProxy
from tests.sync.support import add_account, assert_identical, connect, fold_log, mirror_objects, sync_once


async def _ids(store: Store, account_id: int) -> dict[str, int]:
    async with store.sessions() as s:
        rows = await s.execute(select(Message.identity, Message.id).where(Message.account_id == account_id))
        return {identity: mid for identity, mid in rows}


async def _last_seq(store: Store, account_id: int) -> int:
    async with store.sessions() as s:
        found = await s.scalar(select(func.max(ChangeLog.seq)).where(ChangeLog.account_id == account_id))
    return found or 0


async def _deleted_since(store: Store, account_id: int, seq: int) -> list[int]:
    async with store.sessions() as s:
        return list(
            await s.scalars(
                select(ChangeLog.object_id).where(
                    ChangeLog.account_id == account_id,
                    ChangeLog.seq > seq,
                    ChangeLog.object_type == ObjectType.MESSAGE.value,
                    ChangeLog.op == Op.DELETE.value,
                )
            )
        )


async def _mode(store: Store, account_id: int) -> str | None:
    async with store.sessions() as s:
        found: str | None = await s.scalar(select(Account.identity_mode).where(Account.id == account_id))
    return found


async def _move_some_and_add(dovecot: DovecotServer, user: str, password: str) -> None:
    """What makes the sync match messages by identity: moves between folders, and new mail beside them."""
    other = await connect(dovecot, user, password)
    await other.select("INBOX")
    await other.uid_move((await other.uid_search("ALL"))[:5], "Archive")
    for raw in generate(2, seed=62):
        await other.append("INBOX", raw)
    await other.logout()


@pytest.mark.parametrize("first", ["xguid", "hash"])
async def test_a_server_that_starts_offering_objectid_keeps_every_id(
    first: str, store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(20, seed=61)))
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        proxy.hide_identity = first == "hash"
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        await sync_once(store, credential_box, account_id)
        before = await _ids(store, account_id)
        seq = await _last_seq(store, account_id)

        # The server is upgraded: X-GUID answered again, and OBJECTID (RFC 8474) advertised with its EMAILID.
        proxy.hide_identity = False
        proxy.offer_objectid = True
        await _move_some_and_add(dovecot, user, password)
        await sync_once(store, credential_box, account_id)

        after = await _ids(store, account_id)
        assert {identity: after.get(identity) for identity in before} == before
        assert len(after) == len(before) + 2
        assert await _deleted_since(store, account_id, seq) == []
        assert await _mode(store, account_id) == first
        await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def test_an_account_mirrored_before_the_mode_was_recorded_keeps_its_ids(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """A database from before the mode was stored: the messages' identities tell it, not the server's offer."""
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(20, seed=67)))
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        await sync_once(store, credential_box, account_id)
        before = await _ids(store, account_id)
        seq = await _last_seq(store, account_id)
        async with store.sessions() as s, s.begin():
            await s.execute(update(Account).where(Account.id == account_id).values(identity_mode=None))

        proxy.offer_objectid = True
        await _move_some_and_add(dovecot, user, password)
        await sync_once(store, credential_box, account_id)

        after = await _ids(store, account_id)
        assert {identity: after.get(identity) for identity in before} == before
        assert await _deleted_since(store, account_id, seq) == []
        assert await _mode(store, account_id) == "xguid"
        await assert_identical(store, credential_box, account_id)


async def test_a_server_that_stops_giving_x_guid_rekeys_messages_by_content(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(20, seed=63)))
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        await sync_once(store, credential_box, account_id)
        before = set((await _ids(store, account_id)).values())
        seq = await _last_seq(store, account_id)

        proxy.hide_identity = True  # the mailbox moved to a server without ids of its own
        await _move_some_and_add(dovecot, user, password)
        await sync_once(store, credential_box, account_id)

        after = await _ids(store, account_id)
        assert before <= set(after.values())
        assert len(after) == len(before) + 2
        assert all(identity.startswith("sha:") for identity in after)
        assert await _deleted_since(store, account_id, seq) == []
        assert await _mode(store, account_id) == "hash"
        await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


def _inbox_download(e: Exchange) -> bool:
    return e.mailbox == "INBOX" and e.verb == "UID FETCH" and e.bodies > 0


async def test_a_message_moved_into_the_inbox_during_its_long_sync_keeps_its_id(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """The inbox's IDLE connection downloads new mail (the server holds back the answer to its first fetch of bodies)
    while the poll's passes go on over the other folders and a message moves from Archive into the inbox, after the
    inbox's listing. Before, the poll's orphan collection deleted the moved message meanwhile, and the inbox's next
    sync created it anew: a delete and a create in the feed, a new id. (Dovecot ends the session on a UIDVALIDITY
    change, so a resync restarts the account's passes; a long download of new mail is the long inbox sync here.)"""
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(5, seed=64)))
    dovecot.append(user, password, "Archive", list(generate(3, seed=65)))
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        # Without RECENT, as IMAP4rev2 servers: Dovecot's IDLE would wake for the \Recent of a message already
        # reported during the download, and hide a sync that idles on a change it was told of.
        proxy.drop_recent = True
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        await sync_once(store, credential_box, account_id)
        before = await _ids(store, account_id)
        seq = await _last_seq(store, account_id)

        sync = AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.1, notify=False))
        task = asyncio.create_task(sync.run_forever())
        try:
            async with asyncio.timeout(30):
                while not [e for e in proxy.commands("IDLE") if not e.status]:
                    await asyncio.sleep(0.05)
            held = proxy.hold(_inbox_download)
            # More than a batch of bodies: the fetch of the second batch, after the move, hears of it (EXISTS).
            dovecot.append(user, password, "INBOX", list(generate(BODY_BATCH + 50, seed=66)))
            other = await connect(dovecot, user, password)
            async with asyncio.timeout(30):
                await held.seen.wait()

            await other.select("Archive")
            await other.uid_move((await other.uid_search("ALL"))[:1], "INBOX")
            await other.logout()
            passes = sync.passes
            async with asyncio.timeout(30):  # several passes over Archive and the other folders, each collecting
                while sync.passes < passes + 5:
                    await asyncio.sleep(0.05)
            proxy.release(held)

            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(15):
                    while (
                        len(await _ids(store, account_id)) != len(before) + BODY_BATCH + 50 or await sync._has_orphans()
                    ):
                        await asyncio.sleep(0.1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        after = await _ids(store, account_id)
        assert {identity: after.get(identity) for identity in before} == before
        assert await _deleted_since(store, account_id, seq) == []
        await sync_once(store, credential_box, account_id)
        assert await _ids(store, account_id) == after
        await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)
