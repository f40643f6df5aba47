"""RFC 3501 §2.3.1.1: a new UIDVALIDITY voids every UID of a folder; messages still there keep their ids.

Each test runs twice (the `route` fixture): against Dovecot with its X-GUID, and through a proxy that hides it,
where a message is known by the hash of its content."""

from __future__ import annotations

from sqlalchemy import func, select

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import actions
from schema.crypto import CredentialBox
from schema.models import Folder, Message, MessagePlace
from schema.unit import Store
from synccore.account import AccountSync, Tuning
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


async def _ids(store: Store, account_id: int) -> dict[str, int]:
    async with store.sessions() as s:
        rows = await s.execute(select(Message.identity, Message.id).where(Message.account_id == account_id))
        return {identity: mid for identity, mid in rows}


async def test_uidvalidity_change_keeps_message_ids(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    mail_user: tuple[str, str],
    route: ImapProxy | None,
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(40, seed=21)))
    account_id = await add_account(store, credential_box, dovecot, user, password, via=route)
    await sync_once(store, credential_box, account_id)
    before = await _ids(store, account_id)

    dovecot.doveadm("mailbox", "update", "-u", user, "--uid-validity", "4242", "INBOX")
    await sync_once(store, credential_box, account_id)

    await assert_identical(store, credential_box, account_id)
    assert await _ids(store, account_id) == before
    async with store.sessions() as s:
        validities = set(await s.scalars(select(MessagePlace.uidvalidity).where(MessagePlace.account_id == account_id)))
    assert validities == {4242}
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)
    await assert_identities(store, account_id, route)


async def test_folder_deleted_and_recreated_under_the_same_name(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    mail_user: tuple[str, str],
    route: ImapProxy | None,
) -> None:
    user, password = mail_user
    other = await connect(dovecot, user, password)
    await other.create("Projects")
    for raw in generate(20, seed=22):
        await other.append("Projects", raw)
    account_id = await add_account(store, credential_box, dovecot, user, password, via=route)
    await sync_once(store, credential_box, account_id)
    before = await _ids(store, account_id)
    async with store.sessions() as s:
        old_validity = await s.scalar(
            select(Folder.uidvalidity).where(Folder.account_id == account_id, Folder.name == "Projects")
        )

    # Keep 12 of the 20 (copies keep Dovecot's X-GUID), drop the folder, make it anew, bring them back.
    await other.select("Projects")
    uids = await other.uid_search("ALL")
    await other.uid_copy(uids[:12], "INBOX")
    await other.unselect()
    await other.delete("Projects")
    await other.create("Projects")
    await other.select("INBOX")
    await other.uid_move(await other.uid_search("ALL"), "Projects")
    for raw in generate(5, seed=23):
        await other.append("Projects", raw)
    await other.logout()
    await sync_once(store, credential_box, account_id)

    await assert_identical(store, credential_box, account_id)
    after = await _ids(store, account_id)
    kept = {identity for identity in before if identity in after}
    assert len(kept) == 12
    assert all(after[identity] == before[identity] for identity in kept)
    assert len(after) == 17
    async with store.sessions() as s:
        new_validity = await s.scalar(
            select(Folder.uidvalidity).where(Folder.account_id == account_id, Folder.name == "Projects")
        )
    assert new_validity != old_validity
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)
    await assert_identities(store, account_id, route)


async def test_a_new_uidvalidity_voids_places_that_pending_actions_protect(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    mail_user: tuple[str, str],
    route: ImapProxy | None,
) -> None:
    """A pending action keeps the folder sync off its message's places, but not off UIDs that mean nothing any
    more: left under the old UIDVALIDITY, they stayed for good (the cheap CONDSTORE check counts only the new
    UIDVALIDITY's places), each message shown twice in the folder."""
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(20, seed=24)))
    account_id = await add_account(store, credential_box, dovecot, user, password, via=route)
    await sync_once(store, credential_box, account_id)
    async with store.sessions() as s:
        marked = list(await s.scalars(select(Message.id).where(Message.account_id == account_id).limit(3)))
        old_validity = await s.scalar(
            select(Folder.uidvalidity).where(Folder.account_id == account_id, Folder.name == "INBOX")
        )
    async with store.unit(account_id) as uow:
        await actions.set_flags(uow, marked, add=["$Pending"], remove=[])

    # The server voids every UID of INBOX while the actions wait; a pass runs before the executor does.
    dovecot.doveadm("mailbox", "update", "-u", user, "--uid-validity", "4343", "INBOX")
    sync = AccountSync(store, credential_box, account_id, Tuning())
    client = await sync._connect()
    try:
        await sync.full_pass(client)
    finally:
        await client.logout()
    async with store.sessions() as s:
        stale = await s.scalar(
            select(func.count())
            .select_from(MessagePlace)
            .where(MessagePlace.account_id == account_id, MessagePlace.uidvalidity == old_validity)
        )
    assert stale == 0

    await sync_once(store, credential_box, account_id)  # the actions end, and the pass after them
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)
    async with store.sessions() as s:
        validities = set(await s.scalars(select(MessagePlace.uidvalidity).where(MessagePlace.account_id == account_id)))
    assert validities == {4343}
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)
