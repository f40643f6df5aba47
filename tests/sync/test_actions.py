"""Write-back: actions queued by schema.actions, performed by synccore.actions on a real Dovecot.

The server side is checked over a separate plain IMAP connection; `verify` judges the mirror; the change log
must hold every optimistic change and every undo.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import event, select

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import actions, folders, messages
from schema.actions import ActionState
from schema.crypto import CredentialBox
from schema.models import Action, ChangeLog, Folder, Message, MessagePlace
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.actions import ActionExecutor
from synccore.imap import ImapClient, astring
from synccore.verify import verify
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


async def _setup(
    store: Store,
    box: CredentialBox,
    dovecot: DovecotServer,
    user: tuple[str, str],
    count: int = 6,
    via: ImapProxy | None = None,
) -> tuple[int, list[int]]:
    name, password = user
    dovecot.append(name, password, "INBOX", list(generate(count, seed=11)))
    account_id = await add_account(store, box, dovecot, name, password, via=via)
    await sync_once(store, box, account_id)
    async with store.sessions() as s:
        ids = list(await s.scalars(select(Message.id).where(Message.account_id == account_id).order_by(Message.id)))
    return account_id, ids


def _executor(store: Store, box: CredentialBox, account_id: int) -> ActionExecutor:
    sync = AccountSync(store, box, account_id, Tuning())
    return ActionExecutor(store, account_id, sync._connect)


async def _drain(store: Store, box: CredentialBox, account_id: int) -> None:
    executor = _executor(store, box, account_id)
    try:
        assert await executor.drain() is None
    finally:
        await executor.close()


async def _folder_id(store: Store, account_id: int, role_or_name: str) -> int:
    async with store.sessions() as s:
        found = await s.scalar(
            select(Folder.id).where(
                Folder.account_id == account_id, (Folder.role == role_or_name) | (Folder.name == role_or_name)
            )
        )
    assert found is not None, role_or_name
    return found


async def _server_flags(client: ImapClient, folder: str) -> dict[str, set[str]]:
    """Message-ID -> flags, as the server has them."""
    await client.select(folder)
    result = await client.uid_fetch("1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
    out = {}
    for item in result.items:
        header = (next(iter(item.sections.values()), None) or b"").decode().strip()
        out[header.split(":", 1)[1].strip()] = set(item.flags or ())
    return out


async def _message_ids(store: Store, ids: Sequence[int]) -> list[str]:
    async with store.sessions() as s:
        result = await s.execute(select(Message.id, Message.message_id_header).where(Message.id.in_(ids)))
        rows = {mid: header for mid, header in result}
    return [f"<{rows[i]}>" for i in ids]


async def _states(store: Store, ids: Sequence[int]) -> list[tuple[str, str | None]]:
    async with store.sessions() as s:
        rows = await s.execute(select(Action.state, Action.error).where(Action.id.in_(ids)).order_by(Action.id))
        return [(state, error) for state, error in rows]


async def test_flags_and_keywords_reach_the_server_and_the_log(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user)
    seq_before = await _last_seq(store, account_id)
    async with store.unit(account_id) as uow:
        queued = await actions.set_flags(uow, ids[:3], add=["\\Flagged", "$Project"], remove=[])
        queued += await actions.set_flags(uow, ids[3:4], add=[], remove=["\\Seen"])
    assert len(queued) >= 1  # one action for the three messages, and one for the fourth if it was read
    # Optimistic: the mirror and its log show the change before the server has it.
    async with store.sessions() as s:
        starred = set(await s.scalars(select(Message.id).where(Message.id.in_(ids), Message.starred.is_(True))))
    assert starred == set(ids[:3])
    assert await _last_seq(store, account_id) > seq_before

    await _drain(store, credential_box, account_id)
    assert {state for state, _ in await _states(store, queued)} == {ActionState.DONE.value}
    client = await connect(dovecot, *mail_user)
    try:
        server = await _server_flags(client, "INBOX")
    finally:
        await client.logout()
    for mid in await _message_ids(store, ids[:3]):
        assert {"\\Flagged", "$Project"} <= server[mid]
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


@pytest.mark.parametrize("changed", [1, 3])
async def test_a_pending_flag_change_survives_a_pass_over_the_folder(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str], changed: int
) -> None:
    """Of one message (the action names it) and of several (one action, its messages in action_messages)."""
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=4)
    async with store.unit(account_id) as uow:
        assert len(await actions.set_flags(uow, ids[:changed], add=["\\Flagged"], remove=[])) == 1
    # Meanwhile another client changes every message on the server, so the pass reads their flags again.
    client = await connect(dovecot, *mail_user)
    try:
        await client.select("INBOX")
        await client.uid_store([1, 2, 3, 4], "add", ["$Other"])
    finally:
        await client.logout()
    # A pass before the action ran: the server still says unflagged, the mirror keeps the pending change.
    sync = AccountSync(store, credential_box, account_id, Tuning())
    client = await sync._connect()
    try:
        await sync.full_pass(client)
    finally:
        await client.logout()
    async with store.sessions() as s:
        starred = set(await s.scalars(select(Message.id).where(Message.id.in_(ids), Message.starred.is_(True))))
    assert starred == set(ids[:changed])
    await _drain(store, credential_box, account_id)
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)


async def test_move_keeps_the_message_id_and_takes_the_servers_uid(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    mail_user: tuple[str, str],
    route: ImapProxy | None,
) -> None:
    """With Dovecot's X-GUID, and through a proxy that hides it (identity by content hash)."""
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, via=route)
    archive = await _folder_id(store, account_id, "Archive")
    async with store.unit(account_id) as uow:
        queued = await actions.move(uow, ids[:2], archive)
    async with store.sessions() as s:
        placed = list(
            await s.execute(
                select(MessagePlace.folder_id, MessagePlace.uid).where(MessagePlace.message_id.in_(ids[:2]))
            )
        )
    assert [f for f, _ in placed] == [archive, archive]
    assert all(uid < 0 for _, uid in placed)  # placeholders until COPYUID names the UIDs

    await _drain(store, credential_box, account_id)
    assert {state for state, _ in await _states(store, queued)} == {ActionState.DONE.value}
    async with store.sessions() as s:
        placed = list(
            await s.execute(
                select(MessagePlace.folder_id, MessagePlace.uid).where(MessagePlace.message_id.in_(ids[:2]))
            )
        )
    assert all(f == archive and uid > 0 for f, uid in placed)
    client = await connect(dovecot, *mail_user)
    try:
        in_archive = await _server_flags(client, "Archive")
        in_inbox = await _server_flags(client, "INBOX")
    finally:
        await client.logout()
    moved = await _message_ids(store, ids[:2])
    assert set(moved) <= set(in_archive)
    assert not set(moved) & set(in_inbox)
    await sync_once(store, credential_box, account_id)
    async with store.sessions() as s:
        still = set(await s.scalars(select(Message.id).where(Message.account_id == account_id)))
    assert set(ids) == still  # same ids: nothing deleted and re-created
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)
    await assert_identities(store, account_id, route)


async def test_expunge_deletes_on_the_server_and_then_in_the_mirror(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=4)
    async with store.unit(account_id) as uow:
        await actions.expunge(uow, ids[:1])
    await _drain(store, credential_box, account_id)
    async with store.sessions() as s:
        assert await s.get(Message, ids[0]) is None
    client = await connect(dovecot, *mail_user)
    try:
        assert (await _message_ids(store, ids[1:2]))[0] in await _server_flags(client, "INBOX")
        assert len(await _server_flags(client, "INBOX")) == 3
    finally:
        await client.logout()
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def test_a_move_into_a_folder_deleted_on_the_server_fails_and_is_undone(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=3)
    client = await connect(dovecot, *mail_user)
    try:
        await client.create("Doomed")
        await sync_once(store, credential_box, account_id)
        doomed = await _folder_id(store, account_id, "Doomed")
        inbox = await _folder_id(store, account_id, "inbox")
        async with store.unit(account_id) as uow:
            queued = await actions.move(uow, ids[:1], doomed)
        await client.delete("Doomed")
    finally:
        await client.logout()
    await _drain(store, credential_box, account_id)
    [(state, error)] = await _states(store, queued)
    assert state == ActionState.FAILED.value
    assert error is not None
    assert "refused" in error
    async with store.sessions() as s:
        places = list(
            await s.execute(select(MessagePlace.folder_id, MessagePlace.uid).where(MessagePlace.message_id == ids[0]))
        )
    assert [f for f, _ in places] == [inbox]
    assert places[0][1] > 0
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def _places(store: Store, message_id: int) -> list[tuple[int, int, int]]:
    async with store.sessions() as s:
        rows = await s.execute(
            select(MessagePlace.folder_id, MessagePlace.uidvalidity, MessagePlace.uid).where(
                MessagePlace.message_id == message_id
            )
        )
        return [(f, v, u) for f, v, u in rows]


async def test_a_move_queued_on_a_pending_move_moves_from_where_the_first_put_it(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """The second move was queued while the place was a placeholder: the first one's COPYUID is handed to it.
    Before, the first move's UID landed on the place the second had already moved on (claiming a UID of Archive
    in the Trash), the second found nothing in Archive to move and failed, and its undo left a placeholder."""
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=3)
    archive = await _folder_id(store, account_id, "Archive")
    trash = await _folder_id(store, account_id, "Trash")
    async with store.unit(account_id) as uow:
        queued = await actions.move(uow, ids[:1], archive)
    async with store.unit(account_id) as uow:
        queued += await actions.move(uow, ids[:1], trash)
    await _drain(store, credential_box, account_id)
    assert await _states(store, queued) == [(ActionState.DONE.value, None)] * 2
    [(folder, uidvalidity, uid)] = await _places(store, ids[0])
    assert (folder, uidvalidity > 0, uid > 0) == (trash, True, True)
    client = await connect(dovecot, *mail_user)
    try:
        [header] = await _message_ids(store, ids[:1])
        assert header in await _server_flags(client, "Trash")
        assert header not in await _server_flags(client, "Archive")
    finally:
        await client.logout()
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def test_a_move_queued_on_a_move_that_fails_starts_from_where_the_message_is(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """The first move fails (its target was deleted on the server, and then from the mirror): the one queued on
    top of it moves the message from the inbox, where it still is. Before, the first one's undo overwrote the
    second's place, the second found no folder to move from, and its undo put the place into the vanished
    folder: a foreign key error on which the executor stopped for good."""
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=3)
    client = await connect(dovecot, *mail_user)
    try:
        await client.create("Doomed")
        await sync_once(store, credential_box, account_id)
        doomed = await _folder_id(store, account_id, "Doomed")
        archive = await _folder_id(store, account_id, "Archive")
        async with store.unit(account_id) as uow:
            queued = await actions.move(uow, ids[:1], doomed)
        async with store.unit(account_id) as uow:
            queued += await actions.move(uow, ids[:1], archive)
        await client.delete("Doomed")
        async with store.unit(account_id) as uow:  # what discovery does when the folder has gone
            await folders.remove(uow, doomed)
        await _drain(store, credential_box, account_id)
        [(first, reason), (second, _)] = await _states(store, queued)
        assert (first, second) == (ActionState.FAILED.value, ActionState.DONE.value)
        assert reason
        [header] = await _message_ids(store, ids[:1])
        assert header in await _server_flags(client, "Archive")
    finally:
        await client.logout()
    [(folder, uidvalidity, uid)] = await _places(store, ids[0])
    assert (folder, uidvalidity > 0, uid > 0) == (archive, True, True)
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def test_a_failed_move_out_of_a_vanished_folder_leaves_no_place_behind(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """The folder a message was moved out of is gone from the server and the mirror before the move ran: the
    failure cannot put the place back there (the row is gone; before, the undo broke the foreign key and the
    executor stopped on it for good); the message waits as an orphan for the next pass."""
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=3)
    client = await connect(dovecot, *mail_user)
    try:
        await client.create("Doomed")
        await client.select("INBOX")
        await client.uid_move(await client.uid_search("ALL"), "Doomed")
        await sync_once(store, credential_box, account_id)
        doomed = await _folder_id(store, account_id, "Doomed")
        archive = await _folder_id(store, account_id, "Archive")
        async with store.unit(account_id) as uow:
            queued = await actions.move(uow, ids[:1], archive)
        await client.unselect()
        await client.delete("Doomed")
    finally:
        await client.logout()
    async with store.unit(account_id) as uow:
        await folders.remove(uow, doomed)
    await _drain(store, credential_box, account_id)
    [(state, reason)] = await _states(store, queued)
    assert state == ActionState.FAILED.value
    assert reason
    assert await _places(store, ids[0]) == []
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def test_a_flag_change_refused_in_one_folder_is_undone_there_only(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """One action for four messages, two in INBOX and two in a folder deleted on the server before it ran: the
    action fails with the server's reason, and its change is undone in that folder only. In INBOX the server did
    it, and the mirror keeps it (undone there too, the mirror would show unstarred what the server has starred)."""
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=4)
    headers = await _message_ids(store, ids)
    client = await connect(dovecot, *mail_user)
    try:
        await client.create("Doomed")
        await client.select("INBOX")
        await client.uid_move([3, 4], "Doomed")
        await client.unselect()
        await sync_once(store, credential_box, account_id)
        doomed = await _folder_id(store, account_id, "Doomed")
        async with store.sessions() as s:
            in_doomed = set(await s.scalars(select(MessagePlace.message_id).where(MessagePlace.folder_id == doomed)))
        assert len(in_doomed) == 2
        async with store.unit(account_id) as uow:
            queued = await actions.set_flags(uow, ids, add=["\\Flagged"], remove=[])
        assert len(queued) == 1
        await client.delete("Doomed")
        await _drain(store, credential_box, account_id)
        [(state, reason)] = await _states(store, queued)
        assert state == ActionState.FAILED.value
        assert reason
        async with store.sessions() as s:
            starred = set(await s.scalars(select(Message.id).where(Message.id.in_(ids), Message.starred.is_(True))))
        assert starred == set(ids) - in_doomed
        server = await _server_flags(client, "INBOX")
    finally:
        await client.logout()
    kept = [header for mid, header in zip(ids, headers, strict=True) if mid not in in_doomed]
    assert all("\\Flagged" in server[header] for header in kept)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)


async def test_a_store_the_server_refuses_fails_only_its_own_actions_of_the_run(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """Two flag actions run together, on two messages of INBOX: a star, and a keyword longer than Dovecot takes
    (mail_max_keyword_length, 50). Its STORE is refused: that action fails and is undone; the star's STORE was
    done by the server and its action is done (before, the whole run failed and the star was undone in the mirror
    while the server had it)."""
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=3)
    headers = await _message_ids(store, ids)
    long = "k" * 60
    async with store.unit(account_id) as uow:
        starred = await actions.set_flags(uow, ids[:1], add=["\\Flagged"], remove=[])
    async with store.unit(account_id) as uow:
        labelled = await actions.set_flags(uow, ids[1:2], add=[long], remove=[])
    await _drain(store, credential_box, account_id)
    assert [state for state, _ in await _states(store, starred)] == [ActionState.DONE.value]
    [(state, reason)] = await _states(store, labelled)
    assert state == ActionState.FAILED.value
    assert reason
    async with store.sessions() as s:
        assert await s.scalar(select(Message.starred).where(Message.id == ids[0]))
        flags = await s.scalar(select(MessagePlace.flags).where(MessagePlace.message_id == ids[1]))
    assert flags is not None
    assert long not in flags.split()
    client = await connect(dovecot, *mail_user)
    try:
        server = await _server_flags(client, "INBOX")
    finally:
        await client.logout()
    assert "\\Flagged" in server[headers[0]]
    assert long not in server[headers[1]]
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)
    await assert_identical(store, credential_box, account_id)


async def test_a_failed_move_does_not_put_the_place_back_under_an_old_uidvalidity(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """The source folder was re-created meanwhile (a new UIDVALIDITY): the old UID names nothing there. Before,
    the undo put the place back under the old UIDVALIDITY, where no folder compare ever looks again."""
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=2)
    client = await connect(dovecot, *mail_user)
    try:
        for name in ("Source", "Doomed"):
            await client.create(name)
        await client.select("INBOX")
        await client.uid_move(await client.uid_search("ALL"), "Source")
        await sync_once(store, credential_box, account_id)
        source = await _folder_id(store, account_id, "Source")
        doomed = await _folder_id(store, account_id, "Doomed")
        async with store.unit(account_id) as uow:
            queued = await actions.move(uow, ids[:1], doomed)
        await client.unselect()
        await client.delete("Doomed")
        await client.delete("Source")
        await client.create("Source")
        renewed = (await client.select("Source")).uidvalidity
    finally:
        await client.logout()
    async with store.unit(account_id) as uow:  # what the folder's resync does
        await messages.remove_places(uow, source)
        await folders.set_cursor(uow, source, uidvalidity=renewed, uidnext=None, highestmodseq=None)
    await _drain(store, credential_box, account_id)
    [(state, _)] = await _states(store, queued)
    assert state == ActionState.FAILED.value
    assert await _places(store, ids[0]) == []
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def test_a_refused_delete_puts_the_places_back(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=2)
    client = await connect(dovecot, *mail_user)
    try:
        await client.create("Source")
        await client.select("INBOX")
        await client.uid_move(await client.uid_search("ALL"), "Source")
        await sync_once(store, credential_box, account_id)
        source = await _folder_id(store, account_id, "Source")
        before = await _places(store, ids[0])
        async with store.unit(account_id) as uow:
            queued = await actions.expunge(uow, ids[:1])
        await client.unselect()
        await client.delete("Source")  # the mirror still has it: the SELECT is refused
    finally:
        await client.logout()
    await _drain(store, credential_box, account_id)
    [(state, reason)] = await _states(store, queued)
    assert state == ActionState.FAILED.value
    assert reason
    assert await _places(store, ids[0]) == before
    assert before[0][0] == source
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def test_a_delete_queued_on_a_pending_move_expunges_where_the_move_put_it(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """Before, the delete was told the placeholder UID, expunged nothing, and was done: the message stayed."""
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=3)
    archive = await _folder_id(store, account_id, "Archive")
    [header] = await _message_ids(store, ids[:1])
    async with store.unit(account_id) as uow:
        queued = await actions.move(uow, ids[:1], archive)
    async with store.unit(account_id) as uow:
        queued += await actions.expunge(uow, ids[:1])
    await _drain(store, credential_box, account_id)
    assert await _states(store, queued) == [(ActionState.DONE.value, None)] * 2
    client = await connect(dovecot, *mail_user)
    try:
        assert header not in await _server_flags(client, "Archive")
        assert header not in await _server_flags(client, "INBOX")
    finally:
        await client.logout()
    await sync_once(store, credential_box, account_id)
    async with store.sessions() as s:
        assert await s.get(Message, ids[0]) is None
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def test_a_message_with_a_pending_action_in_a_vanished_folder_becomes_an_orphan(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """The folder's places go with its row even where an action is pending; before, such a message was left in
    no folder and never marked an orphan, so nothing ever deleted it."""
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=2)
    client = await connect(dovecot, *mail_user)
    try:
        await client.create("Doomed")
        await client.select("INBOX")
        await client.uid_move(await client.uid_search("ALL"), "Doomed")
        await sync_once(store, credential_box, account_id)
        doomed = await _folder_id(store, account_id, "Doomed")
        async with store.unit(account_id) as uow:
            queued = await actions.set_flags(uow, ids[:1], add=["\\Flagged"], remove=[])
        await client.unselect()
        await client.delete("Doomed")
    finally:
        await client.logout()
    async with store.unit(account_id) as uow:  # what discovery does when the folder has gone
        await folders.remove(uow, doomed)
    async with store.sessions() as s:
        orphaned = set(await s.scalars(select(Message.id).where(Message.orphaned_at.is_not(None))))
    assert set(ids) <= orphaned
    await _drain(store, credential_box, account_id)
    assert len(await _states(store, queued)) == 1
    await sync_once(store, credential_box, account_id)
    async with store.sessions() as s:
        assert list(await s.scalars(select(Message.id).where(Message.id.in_(ids)))) == []
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def test_folder_create_rename_delete_reach_the_server(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    account_id, _ = await _setup(store, credential_box, dovecot, mail_user, count=1)
    async with store.sessions() as s:
        delimiter = await s.scalar(select(Folder.delimiter).where(Folder.account_id == account_id).limit(1))
    async with store.unit(account_id) as uow:
        folder_id, _ = await actions.create_folder(uow, "Projects", delimiter)
    await _drain(store, credential_box, account_id)
    async with store.unit(account_id) as uow:
        folder = await uow.session.get(Folder, folder_id)
        assert folder is not None
        await actions.rename_folder(uow, folder, "Clients")
    await _drain(store, credential_box, account_id)
    client = await connect(dovecot, *mail_user)
    try:
        names = {m.name for m in await client.list_folders()}
    finally:
        await client.logout()
    assert "Clients" in names
    assert "Projects" not in names
    await sync_once(store, credential_box, account_id)
    async with store.sessions() as s:
        assert (await s.get(Folder, folder_id)) is not None  # the same folder row, renamed
    await assert_identical(store, credential_box, account_id)

    async with store.unit(account_id) as uow:
        folder = await uow.session.get(Folder, folder_id)
        assert folder is not None
        await actions.delete_folder(uow, folder)
    await _drain(store, credential_box, account_id)
    client = await connect(dovecot, *mail_user)
    try:
        assert "Clients" not in {m.name for m in await client.list_folders()}
    finally:
        await client.logout()
    async with store.sessions() as s:
        assert await s.get(Folder, folder_id) is None
    await sync_once(store, credential_box, account_id)
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def _last_seq(store: Store, account_id: int) -> int:
    async with store.sessions() as s:
        found = await s.scalar(
            select(ChangeLog.seq).where(ChangeLog.account_id == account_id).order_by(ChangeLog.seq.desc()).limit(1)
        )
    return found or 0


async def test_a_change_made_on_the_server_while_an_action_waited_is_mirrored_when_it_runs(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=3)
    async with store.unit(account_id) as uow:
        await actions.set_flags(uow, ids[:1], add=["\\Flagged"], remove=[])
    # Another client changes the same message on the server; a pass sees it but leaves the pending message alone.
    [message_id] = await _message_ids(store, ids[:1])
    client = await connect(dovecot, *mail_user)
    try:
        await client.select("INBOX")
        [uid] = await client.uid_search([b"HEADER", b"Message-ID", message_id.strip("<>").encode()])
        await client.uid_store([uid], "add", ["$Elsewhere"])
    finally:
        await client.logout()
    sync = AccountSync(store, credential_box, account_id, Tuning())
    passer = await sync._connect()
    try:
        await sync.full_pass(passer)
        async with store.sessions() as s:
            flags = await s.scalar(select(MessagePlace.flags).where(MessagePlace.message_id == ids[0]))
        assert flags is not None
        assert "$Elsewhere" not in flags.split()  # skipped: the message waits for its action
        await _drain(store, credential_box, account_id)
        async with store.sessions() as s:
            flags = await s.scalar(select(MessagePlace.flags).where(MessagePlace.message_id == ids[0]))
        assert flags is not None
        assert {"\\Flagged", "$Elsewhere"} <= set(flags.split())  # what the STORE answered
        await sync.full_pass(passer)  # an incremental pass (CONDSTORE): no full compare was needed
    finally:
        await passer.logout()
    await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def test_the_idle_watched_inbox_looks_again_when_a_failed_move_puts_a_place_back(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """Another client moved the message out of the inbox and back (a new UID) before the move queued on it ran:
    the move fails (its UID is gone, the target holds no copy) and its undo puts the old UID back. The inbox's
    pass left the new UID alone while the action was pending, and the server pushes nothing more: before, the
    IDLE-watched inbox kept the old UID and missed the new one until the next change there (a write-back fault
    run: 'UID 207 on the server, not in the mirror' beside 'UID 150 in the mirror, not on the server')."""
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=4)
    other = await connect(dovecot, *mail_user)
    [header] = await _message_ids(store, ids[:1])
    await other.select("INBOX")
    by_header = [b"HEADER", b"Message-ID", astring(header.strip("<>"))]
    [uid] = await other.uid_search(by_header)
    await other.uid_move([uid], "Archive")
    await other.select("Archive")
    await other.uid_move(await other.uid_search(by_header), "INBOX")
    await other.logout()
    async with store.unit(account_id) as uow:
        [queued] = await actions.move(uow, ids[:1], await _folder_id(store, account_id, "Trash"))

    sync = AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2))
    client, idler = await sync._connect(), await sync._connect()
    watching: asyncio.Task[None] | None = None
    try:
        await sync.full_pass(client, skip_roles={"inbox"})
        watching = asyncio.create_task(sync._idle_inbox(idler))
        inbox = await _folder_id(store, account_id, "inbox")
        # The inbox's first pass has run (the new UID left to the pending action) and it idles.
        while sync._watched.get(inbox, True) is not None:
            await asyncio.sleep(0.05)
        executor = sync._executor()
        try:
            await executor.drain()
        finally:
            await executor.close()
        [(state, reason)] = await _states(store, [queued])
        assert (state, reason) == (ActionState.FAILED.value, "the message was expunged on the server")
        diffs = await verify(store, credential_box, account_id)
        for _ in range(100):  # the inbox's pass after the failure, with nothing pushed by the server
            if not diffs:
                break
            await asyncio.sleep(0.1)
            diffs = await verify(store, credential_box, account_id)
        assert diffs == []
    finally:
        if watching is not None:
            watching.cancel()
            await asyncio.gather(watching, return_exceptions=True)
        for c in (client, idler):
            await c.close()
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def test_the_most_ids_a_mutation_names_are_one_uid_store(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    mail_user: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A mutation may name 1,000 messages: their flag change is one action, read from the queue once and sent as
    one UID STORE (Dovecot's UIDs are consecutive: one range). The action is done (committed) before the 1,000
    flags and MODSEQs the STORE answered are written, in a unit after it."""
    user, password = mail_user
    dovecot.append(
        user, password, "INBOX", [f"Message-ID: <run{n}@inboxql.test>\r\n\r\n{n}\r\n".encode() for n in range(1000)]
    )
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        await sync_once(store, credential_box, account_id)
        async with store.sessions() as s:
            ids = list(await s.scalars(select(Message.id).where(Message.account_id == account_id)))
        assert len(ids) == 1000
        async with store.unit(account_id) as uow:
            queued = await actions.set_flags(uow, ids, add=["\\Flagged"], remove=[])
        assert len(queued) == 1
        proxy.clear()
        seen_at_answers: list[set[str]] = []
        original = messages.set_flags

        async def set_flags(uow: Any, *args: Any) -> int:
            seen_at_answers.append({state for state, _ in await _states(store, queued)})
            return await original(uow, *args)

        monkeypatch.setattr(messages, "set_flags", set_flags)
        await _drain(store, credential_box, account_id)
        assert seen_at_answers == [{ActionState.DONE.value}]
        stores = [e.command for e in proxy.commands("UID STORE")]
        assert len(stores) == 1, stores
        assert {state for state, _ in await _states(store, queued)} == {ActionState.DONE.value}
        client = await connect(dovecot, user, password)
        try:
            assert all("\\Flagged" in flags for flags in (await _server_flags(client, "INBOX")).values())
        finally:
            await client.logout()
        await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def test_from_the_bell_to_the_uid_store_is_one_session_and_two_reads(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    mail_user: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A one-message flag change (BENCHMARKS.md, write-back (a)): the executor woken by its bell reads the queue,
    then the action's place with its folder, in one session (one pool checkout and its ping), before the UID STORE.
    Before, the place and the folder were two more reads in a second session."""
    account_id, ids = await _setup(store, credential_box, dovecot, mail_user, count=3)
    async with store.unit(account_id) as uow:
        [queued] = await actions.set_flags(uow, ids[:1], add=["\\Flagged"], remove=[])
    executor = _executor(store, credential_box, account_id)
    await executor._client()  # a running account's executor holds its connection open
    sent: list[str] = []
    checkouts: list[object] = []
    at_store: list[tuple[int, int]] = []
    original = ImapClient.uid_store

    async def uid_store(self: ImapClient, *args: Any, **kwargs: Any) -> Any:
        at_store.append((len(sent), len(checkouts)))
        return await original(self, *args, **kwargs)

    def statement(conn: Any, cursor: Any, text: str, *args: Any) -> None:
        sent.append(text)

    def checkout(*args: Any) -> None:
        checkouts.append(args)

    monkeypatch.setattr(ImapClient, "uid_store", uid_store)
    engine = store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", statement)
    event.listen(engine, "checkout", checkout)
    try:
        assert await executor.drain() is None
    finally:
        event.remove(engine, "before_cursor_execute", statement)
        event.remove(engine, "checkout", checkout)
        await executor.close()
    assert at_store[0] == (2, 1), "\n".join(sent)
    assert sent[0].startswith("SELECT actions.id")
    assert "JOIN folders" in sent[1]
    assert {state for state, _ in await _states(store, [queued])} == {ActionState.DONE.value}
    await assert_identical(store, credential_box, account_id)
