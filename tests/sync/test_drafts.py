"""Drafts against the real Dovecot: schema.drafts writes the mirror and queues draft_save; the executor APPENDs to
Drafts and replaces the older copy; a plain imaplib connection checks the server; the log folds to the mirror and
`verify` finds the mirror identical after a sync.
"""

from __future__ import annotations

import email
import imaplib
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest
from sqlalchemy import select, update

from inboxql.devmail import DovecotServer
from mime.compose import ComposeError, Draft, Mailbox
from schema import actions, blobs, drafts
from schema.actions import ActionState
from schema.changelog import ObjectType, Op
from schema.crypto import CredentialBox
from schema.models import Action, Folder, Message, MessagePlace
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from tests.conftest import new_user
from tests.sync.support import add_account, assert_identical, fold_log, mirror_objects, sync_once


def _server_drafts(dovecot: DovecotServer, user: str, password: str) -> list[tuple[int, set[str], EmailMessage]]:
    client = imaplib.IMAP4(dovecot.host, dovecot.port)
    client.login(user, password)
    try:
        client.select("Drafts", readonly=True)
        _, data = client.uid("SEARCH", "ALL")
        found = []
        for uid in data[0].split():
            _, parts = client.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
            meta, raw = parts[0]
            parsed = email.message_from_bytes(raw, policy=default_policy)
            assert isinstance(parsed, EmailMessage)
            found.append((int(uid), {f.decode() for f in imaplib.ParseFlags(meta)}, parsed))
        return found
    finally:
        client.logout()


async def _drain(store: Store, box: CredentialBox, account_id: int) -> None:
    executor = AccountSync(store, box, account_id, Tuning())._executor()
    try:
        await executor.drain()
    finally:
        await executor.close()


async def _setup(store: Store, box: CredentialBox, dovecot: DovecotServer) -> tuple[int, str, str, int]:
    user, password = new_user(dovecot)
    account = await add_account(store, box, dovecot, user, password)
    await sync_once(store, box, account)
    async with store.sessions() as s:
        folder = await drafts.folder_of(s, account)
    assert folder is not None
    return account, user, password, folder


def _draft(dovecot: DovecotServer, user: str, **fields: object) -> Draft:
    base = Draft(
        sender=Mailbox(dovecot.address(user)),
        to=(Mailbox("b@example.test", "Bé"),),
        bcc=(Mailbox("hidden@example.test"),),
        subject="Plans",
        text="first version",
    )
    return Draft(**{**{f: getattr(base, f) for f in Draft.__slots__}, **fields})


async def _places(store: Store, message_id: int) -> list[tuple[int, int, int, str]]:
    async with store.sessions() as s:
        rows = await s.execute(
            select(MessagePlace.folder_id, MessagePlace.uidvalidity, MessagePlace.uid, MessagePlace.flags).where(
                MessagePlace.message_id == message_id
            )
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_a_draft_shows_at_once_then_lands_in_drafts_with_the_draft_flag(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    account, user, password, folder = await _setup(store, credential_box, dovecot)
    async with store.unit(account) as uow:
        saved = await drafts.create(uow, folder, _draft(dovecot, user))
    # At once: in Drafts under a placeholder, flagged as a draft, with its own thread.
    [(folder_id, uidvalidity, uid, flags)] = await _places(store, saved.message_id)
    assert (folder_id, uidvalidity) == (folder, actions.PLACEHOLDER_UIDVALIDITY)
    assert uid < 0
    assert flags == "\\Draft \\Seen"
    async with store.sessions() as s:
        message = await s.get(Message, saved.message_id)
        assert message is not None
        assert message.draft
        assert not message.unread
        assert message.subject == "Plans"
        assert message.bcc_addrs == [{"name": "", "address": "hidden@example.test"}]

    await _drain(store, credential_box, account)
    async with store.sessions() as s:
        action = await s.get(Action, saved.action_id)
        assert action is not None
        assert action.state == ActionState.DONE.value, action.error
    [(uid, server_flags, copy)] = _server_drafts(dovecot, user, password)
    assert {"\\Draft", "\\Seen"} <= server_flags
    assert copy["Bcc"] == "hidden@example.test"
    assert copy["Subject"] == "Plans"
    [(_, uidvalidity, mirrored_uid, _)] = await _places(store, saved.message_id)
    assert uidvalidity != actions.PLACEHOLDER_UIDVALIDITY
    assert mirrored_uid == uid

    await sync_once(store, credential_box, account)
    await assert_identical(store, credential_box, account)
    assert await fold_log(store, account) == await mirror_objects(store, account)


async def test_updates_keep_the_message_id_and_leave_one_copy_on_the_server(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    account, user, password, folder = await _setup(store, credential_box, dovecot)
    async with store.unit(account) as uow:
        saved = await drafts.create(uow, folder, _draft(dovecot, user))
    await _drain(store, credential_box, account)
    [(first_uid, _, _)] = _server_drafts(dovecot, user, password)

    # Saved twice before the executor runs: each version queued in turn, the mirror showing the newest.
    for n, text in enumerate(("second version", "third version")):
        async with store.sessions() as s:
            current = await drafts.stored(s, account, saved.message_id)
        assert current is not None
        assert current.bcc == (Mailbox("hidden@example.test"),)
        async with store.unit(account) as uow:
            await drafts.update_draft(uow, saved.message_id, _replace(current, text=text, subject=f"Plans v{n + 2}"))
    async with store.sessions() as s:
        message = await s.get(Message, saved.message_id)
        assert message is not None
        assert message.subject == "Plans v3"
        assert message.text_body.strip() == "third version"

    await _drain(store, credential_box, account)
    copies = _server_drafts(dovecot, user, password)
    assert len(copies) == 1
    [(uid, flags, copy)] = copies
    assert uid != first_uid
    assert copy.get_content().strip() == "third version"
    assert copy["Subject"] == "Plans v3"
    assert "\\Draft" in flags
    async with store.sessions() as s:
        ids = list(await s.scalars(select(Message.id).where(Message.account_id == account)))
    assert ids == [saved.message_id]
    [(_, _, mirrored_uid, _)] = await _places(store, saved.message_id)
    assert mirrored_uid == uid

    await sync_once(store, credential_box, account)
    async with store.sessions() as s:
        assert list(await s.scalars(select(Message.id).where(Message.account_id == account))) == [saved.message_id]
    await assert_identical(store, credential_box, account)
    assert await fold_log(store, account) == await mirror_objects(store, account)


async def _folder_pass(store: Store, box: CredentialBox, account_id: int) -> None:
    """A pass over the folders alone (no executor first), as the follow loop runs one while actions wait."""
    sync = AccountSync(store, box, account_id, Tuning(poll_interval=0.2))
    client = await sync._connect()
    try:
        await sync.full_pass(client)
    finally:
        await client.logout()


async def test_the_folder_sync_leaves_a_pending_save_alone_and_a_repeated_save_leaves_one_copy(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    account, user, password, folder = await _setup(store, credential_box, dovecot)
    async with store.unit(account) as uow:
        saved = await drafts.create(uow, folder, _draft(dovecot, user))
    await _drain(store, credential_box, account)
    [(first_uid, _, _)] = _server_drafts(dovecot, user, password)
    async with store.sessions() as s:
        current = await drafts.stored(s, account, saved.message_id)
    assert current is not None
    async with store.unit(account) as uow:
        await drafts.update_draft(uow, saved.message_id, _replace(current, text="after the crash"))
    async with store.sessions() as s:
        message = await s.get(Message, saved.message_id)
        assert message is not None
        raw = await blobs.get(s, message.blob_sha256)
    assert raw is not None
    # The executor died after its APPEND and the expunge of the old copy, before it recorded anything.
    client = imaplib.IMAP4(dovecot.host, dovecot.port)
    client.login(user, password)
    try:
        assert client.append("Drafts", "(\\Draft \\Seen)", None, raw)[0] == "OK"
        client.select("Drafts")
        client.uid("STORE", str(first_uid), "+FLAGS", "(\\Deleted)")
        client.expunge()
    finally:
        client.logout()

    # A folder pass meanwhile: the new copy is not a new message, the old UID's disappearance not a delete.
    before = await _places(store, saved.message_id)
    await _folder_pass(store, credential_box, account)
    async with store.sessions() as s:
        assert list(await s.scalars(select(Message.id).where(Message.account_id == account))) == [saved.message_id]
    assert await _places(store, saved.message_id) == before

    # The save runs again: it APPENDs once more and expunges the copy the crash left.
    await _drain(store, credential_box, account)
    [(uid, _, copy)] = _server_drafts(dovecot, user, password)
    assert copy.get_content().strip() == "after the crash"
    [(_, _, mirrored_uid, _)] = await _places(store, saved.message_id)
    assert mirrored_uid == uid
    await sync_once(store, credential_box, account)
    async with store.sessions() as s:
        assert list(await s.scalars(select(Message.id).where(Message.account_id == account))) == [saved.message_id]
    await assert_identical(store, credential_box, account)
    assert await fold_log(store, account) == await mirror_objects(store, account)


def _replace(draft: Draft, **fields: object) -> Draft:
    return Draft(**{**{f: getattr(draft, f) for f in Draft.__slots__}, **fields})


async def test_a_refused_edit_shows_the_version_before_it_again(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    account, user, _password, folder = await _setup(store, credential_box, dovecot)
    async with store.unit(account) as uow:
        saved = await drafts.create(uow, folder, _draft(dovecot, user))
    await _drain(store, credential_box, account)
    async with store.sessions() as s:
        current = await drafts.stored(s, account, saved.message_id)
    assert current is not None
    async with store.unit(account) as uow:
        edit = await drafts.update_draft(uow, saved.message_id, _replace(current, subject="Changed"))
    # The folder went away on the server (Dovecot recreates its special-use folders, so the mirror is made to name
    # one it does not have): the APPEND is refused for good (NO [TRYCREATE]).
    async with store.unit(account) as uow:
        await uow.session.execute(update(Folder).where(Folder.id == folder).values(name="Drafts that went away"))
        uow.record(ObjectType.FOLDER, Op.UPDATE, [folder])
    await _drain(store, credential_box, account)
    async with store.sessions() as s:
        action = await s.get(Action, edit)
        assert action is not None
        assert action.state == ActionState.FAILED.value
        message = await s.get(Message, saved.message_id)
        assert message is not None
        assert message.subject == "Plans"
    assert await fold_log(store, account) == await mirror_objects(store, account)


def test_line_breaks_in_a_header_are_refused_naming_the_field(dovecot: DovecotServer) -> None:
    with pytest.raises(ComposeError) as caught:
        drafts._version(_draft(dovecot, "u", subject="Hi\r\nBcc: victim@example.test"))
    assert caught.value.field == "subject"
