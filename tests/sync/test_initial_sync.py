"""An initial sync mirrors every folder exactly, and the change log alone rebuilds the mirror."""

from __future__ import annotations

from sqlalchemy import func, select

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema.crypto import CredentialBox
from schema.models import Folder, Message, MessagePlace
from schema.unit import Store
from tests.sync.support import add_account, assert_identical, fold_log, mirror_objects, sync_once


async def test_initial_sync_mirrors_every_folder_exactly(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    mail = list(generate(600, seed=7))
    flagged = [(raw, ("\\Seen",) if i % 3 else ("\\Flagged", "$Important")) for i, raw in enumerate(mail[:500])]
    dovecot.append(user, password, "INBOX", flagged)
    dovecot.append(user, password, "Archive", mail[500:])
    account_id = await add_account(store, credential_box, dovecot, user, password)

    await sync_once(store, credential_box, account_id)

    await assert_identical(store, credential_box, account_id)
    async with store.sessions() as s:
        counts = dict(
            (
                await s.execute(
                    select(Folder.name, func.count(MessagePlace.id))
                    .join(MessagePlace, MessagePlace.folder_id == Folder.id)
                    .where(Folder.account_id == account_id)
                    .group_by(Folder.name)
                )
            ).all()
        )
        inbox = await s.scalar(select(Folder).where(Folder.account_id == account_id, Folder.role == "inbox"))
    assert counts == {"INBOX": 500, "Archive": 100}
    assert inbox is not None
    assert (inbox.total_count, inbox.unread_count, inbox.sync_state) == (500, 167, "follow")


async def test_folding_the_change_log_reproduces_the_mirror(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(200, seed=11)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)

    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)
    async with store.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Message).where(Message.account_id == account_id)) == 200


async def test_a_second_sync_of_an_unchanged_mailbox_logs_nothing(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(50, seed=3)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)
    before = await fold_log(store, account_id)
    async with store.sessions() as s:
        from schema.changelog import newest_seq

        seq = await newest_seq(s, account_id)
    await sync_once(store, credential_box, account_id)
    async with store.sessions() as s:
        assert await newest_seq(s, account_id) == seq
    assert await fold_log(store, account_id) == before
