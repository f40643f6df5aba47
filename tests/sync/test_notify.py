"""Following an account with RFC 5465 NOTIFY: one connection per idle account watches every folder; IDLE on the
inbox plus polling where the server has no NOTIFY; accounts of a process start on a ramp."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema.crypto import CredentialBox
from schema.models import Account, Folder, MessagePlace
from schema.settings import Settings
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.supervisor import Supervisor
from tests.conftest import new_user
from tests.imapproxy import ImapProxy
from tests.sync.support import add_account, assert_identical, connect, wait_for_messages

# Longer than any test: a change reaches the mirror only by a push, never by a poll round.
NO_POLLING = Tuning(poll_interval=3600, notify=True)


@contextlib.asynccontextmanager
async def following(store: Store, box: CredentialBox, account_id: int, tuning: Tuning) -> AsyncIterator[None]:
    task = asyncio.create_task(AccountSync(store, box, account_id, tuning).run_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def connections(dovecot: DovecotServer, user: str) -> int:
    """The user's IMAP connections as Dovecot counts them (`doveadm who`: user, count, protocol, pids, ips)."""
    out = (await asyncio.to_thread(dovecot.doveadm, "who", user)).decode()
    return sum(int(words[1]) for words in (line.split() for line in out.splitlines()[1:]) if words[:1] == [user])


async def test_an_idle_account_holds_one_connection_where_the_server_offers_notify(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    user, password = new_user(dovecot)
    mail = generate(10, seed=71)
    dovecot.append(user, password, "INBOX", [next(mail) for _ in range(4)])
    dovecot.append(user, password, "Archive", [next(mail) for _ in range(2)])
    account_id = await add_account(store, credential_box, dovecot, user, password)
    async with following(store, credential_box, account_id, NO_POLLING):
        await wait_for_messages(store, account_id, 6)
        other = await connect(dovecot, user, password)
        try:
            await other.append("INBOX", next(mail))
            await wait_for_messages(store, account_id, 7)  # followed, pushed: the account is set up to idle
        finally:
            await other.logout()
        assert await connections(dovecot, user) == 1
    await assert_identical(store, credential_box, account_id)


async def test_a_change_in_another_folder_arrives_by_notify_without_a_poll_round(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    user, password = new_user(dovecot)
    mail = generate(10, seed=72)
    dovecot.append(user, password, "INBOX", [next(mail) for _ in range(3)])
    dovecot.append(user, password, "Archive", [next(mail) for _ in range(2)])
    account_id = await add_account(store, credential_box, dovecot, user, password)
    async with following(store, credential_box, account_id, NO_POLLING):
        await wait_for_messages(store, account_id, 5)
        other = await connect(dovecot, user, password)
        try:
            await other.append("Archive", next(mail))
            await wait_for_messages(store, account_id, 6)
            # A flag changed elsewhere: a STATUS with a new HIGHESTMODSEQ, no new message.
            await other.select("Archive")
            await other.uid_store("1", "add", ["\\Flagged"])
            async with asyncio.timeout(30):
                while not await _flagged_in(store, account_id, "Archive"):
                    await asyncio.sleep(0.05)
        finally:
            await other.logout()
    await assert_identical(store, credential_box, account_id)


async def _flagged_in(store: Store, account_id: int, folder: str) -> bool:
    async with store.sessions() as s:
        flags = await s.scalars(
            select(MessagePlace.flags)
            .join(Folder, Folder.id == MessagePlace.folder_id)
            .where(Folder.account_id == account_id, Folder.name == folder)
        )
        return any("\\Flagged" in f.split() for f in flags)


async def test_without_notify_the_inbox_is_idled_on_and_the_other_folders_polled(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    user, password = new_user(dovecot)
    mail = generate(10, seed=73)
    dovecot.append(user, password, "INBOX", [next(mail) for _ in range(3)])
    dovecot.append(user, password, "Archive", [next(mail) for _ in range(2)])
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        proxy.hidden = {b"NOTIFY"}
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        async with following(store, credential_box, account_id, Tuning(poll_interval=0.5, notify=True)):
            await wait_for_messages(store, account_id, 5)
            other = await connect(dovecot, user, password)
            try:
                await other.append("INBOX", next(mail))
                await wait_for_messages(store, account_id, 6)
                await other.append("Archive", next(mail))
                await wait_for_messages(store, account_id, 7)
            finally:
                await other.logout()
            assert await connections(dovecot, user) == 2  # the passes' and the inbox's IDLE
        assert not proxy.commands("NOTIFY")
        assert proxy.commands("IDLE")
        await assert_identical(store, credential_box, account_id)


async def test_a_process_starts_its_accounts_on_a_ramp(
    settings: Settings, store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        ids = []
        for n in range(3):
            user, password = new_user(dovecot)
            dovecot.append(user, password, "INBOX", list(generate(5 + n, seed=80 + n)))
            ids.append(await add_account(store, credential_box, dovecot, user, password, via=proxy))
        supervisor = Supervisor(settings, NO_POLLING, start_slots=1)
        task = asyncio.create_task(supervisor.run_forever(ids))
        try:
            async with asyncio.timeout(60):
                while True:
                    async with store.sessions() as s:
                        states = set(await s.scalars(select(Account.sync_state).where(Account.id.in_(ids))))
                    if states == {"ready"} and len(proxy.commands("NOTIFY")) == len(ids):
                        break
                    await asyncio.sleep(0.1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await supervisor.close()
        # With one slot, an account logs in only once the one before it has caught up and set NOTIFY.
        order = [(e.connection, e.verb) for e in proxy.exchanges if e.verb in ("LOGIN", "NOTIFY")]
        assert [verb for _, verb in order] == ["LOGIN", "NOTIFY"] * len(ids), order
        assert all(a == b for (a, _), (b, _) in zip(order[::2], order[1::2], strict=True)), order


@pytest.mark.parametrize("notify", [True, False], ids=["notify", "idle"])
async def test_a_pass_after_the_first_waits_for_a_slot_of_the_process(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, notify: bool
) -> None:
    user, password = new_user(dovecot)
    mail = generate(10, seed=93)
    dovecot.append(user, password, "INBOX", [next(mail) for _ in range(3)])
    account_id = await add_account(store, credential_box, dovecot, user, password)
    slots = asyncio.Semaphore(1)
    tuning = Tuning(poll_interval=3600, notify=notify)
    sync = AccountSync(store, credential_box, account_id, tuning, pass_slots=slots)
    task = asyncio.create_task(sync.run_forever())
    try:
        await wait_for_messages(store, account_id, 3)  # the first pass takes no slot of these (it has the ramp's)
        async with asyncio.timeout(30):
            await slots.acquire()  # once the pass that follows the first (if any) has let it go
        other = await connect(dovecot, user, password)
        try:
            await other.append("INBOX", next(mail))
        finally:
            await other.logout()
        await asyncio.sleep(2)  # told at once (NOTIFY or IDLE): its pass waits for the slot
        with pytest.raises(TimeoutError):
            await wait_for_messages(store, account_id, 4, timeout=0.5)
        slots.release()
        await wait_for_messages(store, account_id, 4)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await assert_identical(store, credential_box, account_id)


async def _idling(proxy: ImapProxy) -> None:
    """Until the connection's pass has ended and it idles (the last command sent is an IDLE)."""
    async with asyncio.timeout(30):
        while not (proxy.exchanges and proxy.exchanges[-1].verb == "IDLE"):
            await asyncio.sleep(0.02)


def _selected(proxy: ImapProxy) -> list[str]:
    return [e.mailbox or "" for e in proxy.commands("SELECT")]


async def _places(store: Store, account_id: int) -> dict[str, set[int]]:
    async with store.sessions() as s:
        rows = await s.execute(
            select(Folder.name, MessagePlace.message_id)
            .join(Folder, Folder.id == MessagePlace.folder_id)
            .where(Folder.account_id == account_id)
        )
        out: dict[str, set[int]] = {}
        for name, message_id in rows:
            out.setdefault(name, set()).add(message_id)
        return out


async def test_a_notice_has_only_the_folder_it_names_synced(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    """A STATUS notice names its folder: that folder alone is selected, with no LIST and no STATUS of the others
    first. A folder created on the server (a LIST notice, naming no folder mirrored) has every folder passed over:
    it is discovered and synced."""
    user, password = new_user(dovecot)
    mail = generate(20, seed=94)
    dovecot.append(user, password, "INBOX", [next(mail) for _ in range(3)])
    dovecot.append(user, password, "Archive", [next(mail) for _ in range(2)])
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        async with following(store, credential_box, account_id, NO_POLLING):
            await wait_for_messages(store, account_id, 5)
            async with asyncio.timeout(30):
                while not proxy.commands("NOTIFY"):
                    await asyncio.sleep(0.02)
            await _idling(proxy)
            other = await connect(dovecot, user, password)
            try:
                for n, folder in enumerate(["Archive", "INBOX", "Archive"], start=6):
                    proxy.clear()
                    await other.append(folder, next(mail))
                    await wait_for_messages(store, account_id, n)
                    await _idling(proxy)
                    assert _selected(proxy) == [folder], proxy.exchanges
                    assert not proxy.commands("LIST"), proxy.exchanges
                    assert not proxy.commands("STATUS"), proxy.exchanges
                    # The server's count, written with the cursor once the new mail is in (the operator's "x of N").
                    async with store.sessions() as s:
                        rows = await s.execute(
                            select(Folder.name, Folder.server_count).where(Folder.account_id == account_id)
                        )
                        counts = {name: count for name, count in rows}
                    assert counts["INBOX"] == 3 + (n >= 7)
                    assert counts["Archive"] == 2 + (n >= 6) + (n >= 8)
                proxy.clear()
                await other.create("Projects")
                await other.append("Projects", next(mail))
                await wait_for_messages(store, account_id, 9)
                assert proxy.commands("LIST")
                assert "Projects" in _selected(proxy)
            finally:
                await other.logout()
        await assert_identical(store, credential_box, account_id)


async def test_a_move_told_by_notices_keeps_its_id_and_a_deletion_is_collected(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    """A message moved by another client is an expunge in one folder and an arrival in another, each told by a notice
    of its own: it keeps its id. A message deleted leaves an orphan, which the passes over every folder that follow
    collect (here within the full compare's few seconds, with no other change to set a pass off)."""
    user, password = new_user(dovecot)
    mail = generate(10, seed=95)
    dovecot.append(user, password, "INBOX", [next(mail) for _ in range(3)])
    dovecot.append(user, password, "Archive", [next(mail) for _ in range(2)])
    account_id = await add_account(store, credential_box, dovecot, user, password)
    tuning = Tuning(poll_interval=3600, notify=True, full_compare_seconds=3.0)
    async with following(store, credential_box, account_id, tuning):
        await wait_for_messages(store, account_id, 5)
        before = await _places(store, account_id)
        other = await connect(dovecot, user, password)
        try:
            await other.select("INBOX")
            await other.uid_move("1", "Archive")
            async with asyncio.timeout(30):
                while len((await _places(store, account_id)).get("Archive", set())) != 3:
                    await asyncio.sleep(0.05)
            after = await _places(store, account_id)
            moved = before["INBOX"] - after["INBOX"]
            assert len(moved) == 1
            assert moved <= after["Archive"]
            assert before["INBOX"] | before["Archive"] == after["INBOX"] | after["Archive"]
            await other.select("Archive")
            await other.uid_store("1", "add", ["\\Deleted"])
            await other.uid_expunge("1")
            await wait_for_messages(store, account_id, 4)
        finally:
            await other.logout()
    await assert_identical(store, credential_box, account_id)
