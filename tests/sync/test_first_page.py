"""A new account's inbox shows its newest mail first: the initial sync of a folder that holds nothing downloads and
commits its newest messages (synccore.folder.FIRST_BATCH, by sequence number) before it lists every UID. The proxy
holds the answer to that listing; meanwhile the newest messages must be in MySQL, parsed and threaded."""

from __future__ import annotations

import asyncio
import contextlib

from sqlalchemy import select

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema.crypto import CredentialBox
from schema.models import Folder, Message, MessagePlace, Thread
from schema.unit import Store
from synccore.folder import FIRST_BATCH
from tests.imapproxy import Exchange, ImapProxy
from tests.sync.support import add_account, assert_identical, sync_once

OLDER = 150  # messages older than the first batch


def _inbox_listing(e: Exchange) -> bool:
    return e.mailbox == "INBOX" and e.verb == "UID FETCH" and e.command.split()[3] == "1:*"


async def _inbox(store: Store, account_id: int) -> dict[int, tuple[str, str]]:
    """UID -> (the message's subject, its thread's subject) of the inbox's places."""
    async with store.sessions() as s:
        rows = await s.execute(
            select(MessagePlace.uid, Message.subject, Thread.subject)
            .join(Folder, Folder.id == MessagePlace.folder_id)
            .join(Message, Message.id == MessagePlace.message_id)
            .join(Thread, Thread.id == Message.thread_id)
            .where(Folder.account_id == account_id, Folder.name == "INBOX")
        )
        return {uid: (subject, thread) for uid, subject, thread in rows}


async def test_the_newest_messages_are_committed_before_the_listing(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    total = FIRST_BATCH + OLDER
    dovecot.append(user, password, "INBOX", list(generate(total, seed=141)))
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        held = proxy.hold(_inbox_listing)
        sync = asyncio.create_task(sync_once(store, credential_box, account_id))
        try:
            async with asyncio.timeout(60):
                await held.seen.wait()
            during = await _inbox(store, account_id)
        finally:
            proxy.release(held)
        await sync
        # Dovecot numbered the appended messages 1..total: the newest FIRST_BATCH, parsed and threaded.
        assert sorted(during) == list(range(OLDER + 1, total + 1))
        assert all(subject and thread for subject, thread in during.values())
        assert sorted(await _inbox(store, account_id)) == list(range(1, total + 1))
        await assert_identical(store, credential_box, account_id)


async def test_a_sync_stopped_after_the_first_batch_resumes(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    total = FIRST_BATCH + OLDER
    dovecot.append(user, password, "INBOX", list(generate(total, seed=142)))
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        held = proxy.hold(_inbox_listing)
        sync = asyncio.create_task(sync_once(store, credential_box, account_id))
        try:
            async with asyncio.timeout(60):
                await held.seen.wait()
            sync.cancel()  # stopped while the listing is on the wire: only the first batch is stored
            with contextlib.suppress(asyncio.CancelledError):
                await sync
        finally:
            proxy.release(held)
        assert sorted(await _inbox(store, account_id)) == list(range(OLDER + 1, total + 1))
        proxy.clear()
        await sync_once(store, credential_box, account_id)
        # Resumed from the listing: the first batch is not downloaded again.
        downloaded = [uid for e in proxy.commands("UID FETCH") if e.bodies for uid in e.fetched_uids]
        assert sorted(downloaded) == list(range(1, OLDER + 1))
        assert sorted(await _inbox(store, account_id)) == list(range(1, total + 1))
        await assert_identical(store, credential_box, account_id)
