"""A pass asks every followed folder's STATUS first, in one round trip, and selects only the folders whose STATUS
differs from what their last sync left (synccore.account: AccountSync._unchanged): selecting a large mailbox costs
the server what the mailbox holds. Checked on the wire (tests.imapproxy): which folders a pass SELECTs, and that a
change of any kind, made from another connection or another process, is still mirrored by the next pass."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime

import pytest
from sqlalchemy import select

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import actions
from schema.crypto import CredentialBox
from schema.models import Folder, Message, MessagePlace
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.folder import FolderSync
from synccore.imap import ImapClient
from tests.conftest import new_user
from tests.imapproxy import ImapProxy
from tests.sync.support import add_account, assert_identical, connect, sync_once

# The test Dovecot's folders (inboxql.devmail: INBOX and the special-use ones).
FOLDERS = {"INBOX", "Archive", "Drafts", "Junk", "Sent", "Trash"}


def _selected(proxy: ImapProxy) -> list[str]:
    return [e.mailbox or "" for e in proxy.commands("SELECT")]


def _asked(proxy: ImapProxy) -> set[str]:
    """The folders whose STATUS was asked with HIGHESTMODSEQ (not the count alone of a folder never selected)."""
    return {e.command.split()[2].strip('"') for e in proxy.commands("STATUS") if "HIGHESTMODSEQ" in e.command}


async def _mirrored(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, proxy: ImapProxy
) -> tuple[str, str, int]:
    """An account with mail in INBOX and Archive, mirrored by a first `sync --once`."""
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", list(generate(20, seed=61)))
    dovecot.append(user, password, "Archive", list(generate(15, seed=62)))
    account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
    await sync_once(store, credential_box, account_id)
    return user, password, account_id


@pytest.mark.parametrize("any_dovecot", ["qresync", "condstore", "plain"], indirect=True)
async def test_a_no_op_pass_selects_no_folder(
    store: Store, credential_box: CredentialBox, any_dovecot: DovecotServer
) -> None:
    """With CONDSTORE (and QRESYNC or not) a pass over folders that did not change sends their STATUS and no SELECT;
    a server without CONDSTORE (no HIGHESTMODSEQ to compare) has every folder selected, as before."""
    dovecot = any_dovecot
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        _, _, account_id = await _mirrored(store, credential_box, dovecot, proxy)
        for _ in range(2):
            proxy.clear()
            await sync_once(store, credential_box, account_id)
            if dovecot.capabilities is None or "CONDSTORE" in dovecot.capabilities:
                assert _selected(proxy) == []
                assert _asked(proxy) == FOLDERS
                # (but the probe of the server's identity items: synccore.identity)
                assert [e.command for e in proxy.commands("UID FETCH") if "4294967295" not in e.command] == []
            else:
                assert sorted(_selected(proxy)) == sorted(FOLDERS)
                assert _asked(proxy) == set()
        await assert_identical(store, credential_box, account_id)


async def _append(dovecot: DovecotServer, other: ImapClient, user: str, folder: str) -> None:
    await other.append(folder, next(iter(generate(1, seed=63))), flags=["\\Seen"])


async def _deliver(dovecot: DovecotServer, other: ImapClient, user: str, folder: str) -> None:
    """As the MTA delivers: another process (doveadm) writes into the folder."""
    dovecot.doveadm("save", "-u", user, "-m", folder, input=next(iter(generate(1, seed=64))))


async def _flag(dovecot: DovecotServer, other: ImapClient, user: str, folder: str) -> None:
    await other.select(folder)
    uids = await other.uid_search("ALL")
    await other.uid_store(uids[2:4], "add", ["\\Flagged"])
    await other.uid_store(uids[5:6], "remove", ["\\Seen"])


async def _expunge(dovecot: DovecotServer, other: ImapClient, user: str, folder: str) -> None:
    await other.select(folder)
    uids = await other.uid_search("ALL")
    await other.uid_store(uids[1:3], "add", ["\\Deleted"])
    await other.uid_expunge(uids[1:3])


async def _expunge_and_append(dovecot: DovecotServer, other: ImapClient, user: str, folder: str) -> None:
    """The count stays as it was: UIDNEXT and HIGHESTMODSEQ tell."""
    await _expunge(dovecot, other, user, folder)
    await other.unselect()
    await other.append(folder, next(iter(generate(1, seed=65))))
    await other.append(folder, next(iter(generate(1, seed=66))))


async def _uidvalidity(dovecot: DovecotServer, other: ImapClient, user: str, folder: str) -> None:
    dovecot.doveadm("mailbox", "update", "-u", user, "--uid-validity", "4242", folder)


Change = Callable[[DovecotServer, ImapClient, str, str], Awaitable[None]]
CHANGES: dict[str, Change] = {
    "append": _append,
    "delivery": _deliver,
    "flags": _flag,
    "expunge": _expunge,
    "expunge-and-append": _expunge_and_append,
    "uidvalidity": _uidvalidity,
}


@pytest.mark.parametrize("folder", ["INBOX", "Archive"])
@pytest.mark.parametrize("change", sorted(CHANGES))
async def test_a_change_of_any_kind_is_mirrored_and_only_its_folder_selected(
    change: str, folder: str, store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        user, password, account_id = await _mirrored(store, credential_box, dovecot, proxy)
        other = await connect(dovecot, user, password)
        try:
            await CHANGES[change](dovecot, other, user, folder)
        finally:
            await other.logout()
        proxy.clear()
        await sync_once(store, credential_box, account_id)
        assert set(_selected(proxy)) == {folder}
        await assert_identical(store, credential_box, account_id)

        proxy.clear()  # what the pass recorded of the folder is what its STATUS says now
        await sync_once(store, credential_box, account_id)
        assert _selected(proxy) == []


async def test_the_folder_a_pass_left_selected_is_not_taken_at_its_word(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    """The connection that passes over the folders keeps the last one selected. Dovecot answers STATUS of the selected
    mailbox from that session's view, which has not heard of other connections' changes yet: the pass leaves it
    first (UNSELECT), and without UNSELECT selects it as before."""
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        user, password, account_id = await _mirrored(store, credential_box, dovecot, proxy)
        sync = AccountSync(store, credential_box, account_id, Tuning())
        client = await sync._connect()
        try:
            await sync.full_pass(client)
            for unselect in (True, False):
                # A change makes the pass select that folder, and it stays selected after the pass.
                last = "Archive" if unselect else "INBOX"
                other = await connect(dovecot, user, password)
                await _flag(dovecot, other, user, last)
                await other.logout()
                await sync.full_pass(client)
                assert client.selected is not None
                assert client.selected.name == last
                if not unselect:
                    client._set_caps(client.capabilities - {"UNSELECT"})

                other = await connect(dovecot, user, password)
                await _append(dovecot, other, user, last)
                await _flag(dovecot, other, user, last)
                await other.logout()
                proxy.clear()
                await sync.full_pass(client)
                assert _selected(proxy) == [last]
                assert [e.mailbox for e in proxy.commands("UNSELECT")] == ([last] if unselect else [])
                await assert_identical(store, credential_box, account_id)
        finally:
            await client.logout()


async def test_a_folder_a_pending_action_names_is_selected(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    """Write-back may be changing it: a pass selects it rather than trust its STATUS, and leaves the others."""
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        _, _, account_id = await _mirrored(store, credential_box, dovecot, proxy)
        async with store.sessions() as s:
            archive = await s.scalar(select(Folder.id).where(Folder.account_id == account_id, Folder.name == "Archive"))
            archived = await s.scalar(select(MessagePlace.message_id).where(MessagePlace.folder_id == archive).limit(1))
        assert archived is not None
        async with store.unit(account_id) as uow:
            assert await actions.set_flags(uow, [archived], add=["\\Flagged"], remove=[])
        sync = AccountSync(store, credential_box, account_id, Tuning())
        client = await sync._connect()
        try:
            proxy.clear()
            await sync.full_pass(client)  # no executor here: the action stays pending
        finally:
            await client.logout()
        assert _selected(proxy) == ["Archive"]
        await sync_once(store, credential_box, account_id)  # the action runs, then a pass
        await assert_identical(store, credential_box, account_id)


async def test_a_move_during_a_pass_keeps_the_message_id(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message moves from Archive to Trash after the pass asked Trash's STATUS and before it selects Archive: the
    pass sees it leave Archive (an orphan) but skips Trash, unchanged when asked. It must not be collected as gone: the
    next pass finds it in Trash, and it keeps its id."""
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        user, password, account_id = await _mirrored(store, credential_box, dovecot, proxy)
        async with store.sessions() as s:
            before = set(await s.scalars(select(Message.id).where(Message.account_id == account_id)))
        run = FolderSync.run
        moved = False

        async def move_first(self: FolderSync, client: ImapClient) -> None:
            nonlocal moved
            if self.folder.name == "Archive" and not moved:
                moved = True
                other = await connect(dovecot, user, password)
                await other.select("Archive")
                await other.uid_move((await other.uid_search("ALL"))[:2], "Trash")
                await other.logout()
            await run(self, client)

        other = await connect(dovecot, user, password)
        await _flag(dovecot, other, user, "Archive")  # so that the pass selects Archive
        await other.logout()
        monkeypatch.setattr(FolderSync, "run", move_first)
        proxy.clear()
        await sync_once(store, credential_box, account_id)
        monkeypatch.undo()
        assert moved
        assert "Trash" in _asked(proxy)
        assert "Trash" in _selected(proxy)  # by the second pass, which run_once makes when a pass left orphans
        async with store.sessions() as s:
            after = set(await s.scalars(select(Message.id).where(Message.account_id == account_id)))
        assert after == before
        await assert_identical(store, credential_box, account_id)


async def test_a_pass_records_when_each_folder_was_found_in_sync(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    """`synced_at` (the status page's syncedAt) is set by the sync that mirrored each folder, and moves on with a
    later pass that found the folder unchanged by its STATUS alone."""

    async def synced_at() -> dict[str, datetime]:
        async with store.sessions() as s:
            rows = await s.execute(select(Folder.name, Folder.synced_at).where(Folder.account_id == account_id))
            found = {name: at for name, at in rows}
        assert all(at is not None for at in found.values()), found
        return {name: at for name, at in found.items() if at is not None}

    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        _, _, account_id = await _mirrored(store, credential_box, dovecot, proxy)
        first = await synced_at()
        assert set(first) == FOLDERS
        proxy.clear()
        await sync_once(store, credential_box, account_id)
        assert _selected(proxy) == []  # found unchanged by STATUS
        later = await synced_at()
        assert all(later[name] > first[name] for name in FOLDERS), (first, later)
        # Written at most every Tuning.synced_at_every by one sync: its next pass leaves it as it is.
        sync = AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2, synced_at_every=3600))
        await sync.run_once()
        marked = await synced_at()
        assert all(marked[name] > later[name] for name in FOLDERS), (later, marked)
        await sync.run_once()
        assert await synced_at() == marked
