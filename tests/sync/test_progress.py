"""The sync core records "of N" before it downloads: a folder's server count is in MySQL while its first batch is
still on the wire (the proxy holds the answer to the first FETCH of bodies), and every other folder's count too,
from STATUS, before those folders are selected."""

from __future__ import annotations

import asyncio

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import status
from schema.crypto import CredentialBox
from schema.unit import Store
from tests.imapproxy import Exchange, ImapProxy
from tests.sync.support import add_account, sync_once


def _first_download(e: Exchange) -> bool:
    return e.verb == "UID FETCH" and e.bodies > 0


async def _folders(store: Store, account_id: int) -> dict[str, tuple[int, int | None]]:
    async with store.sessions() as s:
        snap = await status.snapshot(s, [account_id])
    return {f.name: (f.mirrored, f.server_count) for f in snap.accounts[0].folders}


async def test_the_server_counts_are_known_before_the_first_batch_is_written(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(600, seed=131)))
    dovecot.append(user, password, "Archive", list(generate(7, seed=132)))
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        held = proxy.hold(_first_download)
        sync = asyncio.create_task(sync_once(store, credential_box, account_id))
        try:
            async with asyncio.timeout(30):
                await held.seen.wait()
            during = await _folders(store, account_id)
        finally:
            proxy.release(held)
        await sync
    assert during["INBOX"] == (0, 600)
    assert during["Archive"] == (0, 7)  # never selected yet: STATUS told
    assert set(during.values()) <= {(0, 600), (0, 7), (0, 0)}
    after = await _folders(store, account_id)
    assert after["INBOX"] == (600, 600)
    assert after["Archive"] == (7, 7)


async def test_a_follow_pass_records_the_servers_new_count(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(3, seed=133)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)
    assert (await _folders(store, account_id))["INBOX"] == (3, 3)
    dovecot.append(user, password, "INBOX", list(generate(2, seed=134)))
    await sync_once(store, credential_box, account_id)
    assert (await _folders(store, account_id))["INBOX"] == (5, 5)


async def test_the_counts_of_unselected_folders_are_asked_at_once(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "Archive", list(generate(3, seed=135)))
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        held = proxy.hold(lambda e: e.verb == "STATUS")
        sync = asyncio.create_task(sync_once(store, credential_box, account_id))
        try:
            async with asyncio.timeout(30):
                await held.seen.wait()
                # Pipelined: the other folders' STATUS go out while the first answer is held back.
                while len(proxy.commands("STATUS")) < 2:
                    await asyncio.sleep(0.01)
        finally:
            proxy.release(held)
        await sync
    assert (await _folders(store, account_id))["Archive"] == (3, 3)
