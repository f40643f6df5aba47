"""A folder the server refuses to open is skipped with its error shown and tried again with backoff; the account's
other folders go on syncing, and the folder catches up once the server serves it again."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import select

from gateway.config import GatewayConfig
from gateway.ids import to_global
from gateway.testing import Client, start_gateway
from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import tokens
from schema.crypto import CredentialBox
from schema.models import Folder, Message, MessagePlace
from schema.settings import Settings
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from tests.sync.support import add_account, assert_identical, connect, sync_once

LOCKED = "Aardvark"  # sorted before the other role-less folders, so a failure there would come first
FOLDERS = "query($a: ID!) { folders(accountId: $a, first: 100) { nodes { name syncState syncError } } }"


def _refusals(dovecot: DovecotServer, user: str) -> int:
    """SELECTs of the locked folder that Dovecot refused: it logs each as a failed stat() of the folder's tmp/
    (a LIST logs another line, about its index)."""
    lines = dovecot.log_file.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if f"imap({user})" in line and f"/.{LOCKED}/tmp) failed" in line)


async def _places(store: Store, account_id: int) -> dict[str, int]:
    async with store.sessions() as s:
        rows = await s.execute(
            select(Folder.name, MessagePlace.uid)
            .join(MessagePlace, MessagePlace.folder_id == Folder.id)
            .where(Folder.account_id == account_id)
        )
        counts: dict[str, int] = {}
        for name, _ in rows:
            counts[name] = counts.get(name, 0) + 1
        return counts


async def _sync_error(store: Store, account_id: int, name: str) -> str | None:
    async with store.sessions() as s:
        error: str | None = await s.scalar(
            select(Folder.sync_error).where(Folder.account_id == account_id, Folder.name == name)
        )
        return error


async def test_a_folder_that_refuses_select_is_skipped_shown_retried_with_backoff_and_recovers(
    settings: Settings,
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    mail_user: tuple[str, str],
) -> None:
    user, password = mail_user
    setup = await connect(dovecot, user, password)
    for name in (LOCKED, "Zebra"):
        await setup.create(name)
    await setup.logout()
    mail = list(generate(40, seed=81))
    for n, folder in enumerate((LOCKED, "Zebra", "INBOX", "Archive")):
        dovecot.append(user, password, folder, mail[n * 5 : n * 5 + 5])
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)

    # The folder becomes unreadable on disk: Dovecot answers its SELECT with NO [SERVERBUG].
    maildir = dovecot.root / "home" / user / "Maildir" / f".{LOCKED}"
    maildir.chmod(0)
    try:
        dovecot.append(user, password, "Zebra", mail[20:25])
        dovecot.append(user, password, "INBOX", mail[25:30])
        dovecot.append(user, password, "Archive", mail[30:35])
        before = _refusals(dovecot, user)
        # Passes on a timer (not NOTIFY's, which pass only when told of a change or when a retry is due): the passes
        # count the time, and the folder is tried in far fewer of them.
        tuning = Tuning(poll_interval=0.1, backoff_base=1.0, backoff_cap=4.0, notify=False)
        sync = AccountSync(store, credential_box, account_id, tuning)
        task = asyncio.create_task(sync.run_forever())
        try:
            async with asyncio.timeout(60):
                while sync.passes < 12:
                    assert not task.done()
                    await asyncio.sleep(0.1)
            # The other folders synced past it.
            assert await _places(store, account_id) == {LOCKED: 5, "Zebra": 10, "INBOX": 10, "Archive": 10}
            error = await _sync_error(store, account_id, LOCKED)
            assert error is not None
            assert "SERVERBUG" in error
            # Retried, but with backoff: far fewer SELECTs of it than passes over the account.
            refusals = _refusals(dovecot, user) - before
            assert 1 <= refusals <= 6, (refusals, sync.passes)

            # The error is part of the API.
            async with store.sessions() as s, s.begin():
                token = await tokens.create_token(s, [account_id])
            gateway = start_gateway(settings, GatewayConfig(webhooks=False))
            try:
                async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
                    data = await Client(http, token).data(FOLDERS, {"a": to_global("Account", account_id)})
            finally:
                gateway.stop()
            shown = {f["name"]: f["syncError"] for f in data["folders"]["nodes"]}
            assert "SELECT failed: NO [SERVERBUG]" in (shown[LOCKED] or "")  # the latest answer (Dovecot's has a time)
            assert {name: e for name, e in shown.items() if name != LOCKED} == dict.fromkeys(
                set(shown) - {LOCKED}, None
            )

            # Readable again: the retry catches it up and clears the error.
            maildir.chmod(0o700)
            dovecot.append(user, password, LOCKED, mail[35:40])
            async with asyncio.timeout(60):
                while await _sync_error(store, account_id, LOCKED) is not None:
                    assert not task.done()
                    await asyncio.sleep(0.1)
            assert (await _places(store, account_id))[LOCKED] == 10
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        Path(maildir).chmod(0o700)
    await assert_identical(store, credential_box, account_id)


async def _ids(store: Store, account_id: int) -> set[int]:
    async with store.sessions() as s:
        return set(await s.scalars(select(Message.id).where(Message.account_id == account_id)))


async def test_a_message_moved_into_a_refusing_folder_keeps_its_id(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """The move leaves the message without a place the mirror can see (an orphan) until the folder opens again:
    orphans wait for a pass that reached every folder, instead of being deleted and created anew."""
    user, password = mail_user
    other = await connect(dovecot, user, password)
    await other.create(LOCKED)
    dovecot.append(user, password, "INBOX", list(generate(6, seed=82)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)
    before = await _ids(store, account_id)
    assert len(before) == 6

    await other.select("INBOX")
    await other.uid_move([1, 2], LOCKED)
    await other.logout()
    maildir = dovecot.root / "home" / user / "Maildir" / f".{LOCKED}"
    maildir.chmod(0)
    try:
        await sync_once(store, credential_box, account_id)  # two passes: both skip the folder
        assert await _sync_error(store, account_id, LOCKED) is not None
        assert await _ids(store, account_id) == before
    finally:
        maildir.chmod(0o700)
    await sync_once(store, credential_box, account_id)
    assert await _ids(store, account_id) == before
    assert (await _places(store, account_id))[LOCKED] == 2
    assert await _sync_error(store, account_id, LOCKED) is None
    await assert_identical(store, credential_box, account_id)
