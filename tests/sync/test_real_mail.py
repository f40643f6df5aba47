"""Real-world mail (odd charsets, broken MIME) syncs exactly: every message stored, the malformed flagged."""

from __future__ import annotations

from sqlalchemy import select

from inboxql.devmail import DovecotServer
from mime import parse_message
from schema.crypto import CredentialBox
from schema.models import Folder, Message, MessagePlace
from schema.unit import Store
from tests.corpus import corpus_messages
from tests.sync.support import add_account, assert_identical, connect, fold_log, mirror_objects, sync_once


async def test_real_mail_corpus_syncs_exactly(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    corpus = corpus_messages()
    assert len(corpus) >= 300
    dovecot.append(user, password, "INBOX", [raw for _, raw in corpus])
    account_id = await add_account(store, credential_box, dovecot, user, password)

    await sync_once(store, credential_box, account_id)

    await assert_identical(store, credential_box, account_id)
    other = await connect(dovecot, user, password)
    await other.select("INBOX", readonly=True)
    served = {i.uid: i.body for i in (await other.uid_fetch("1:*", "(UID BODY.PEEK[])")).items}
    await other.logout()
    assert len(served) == len(corpus)
    async with store.sessions() as s:
        rows = (
            await s.execute(
                select(MessagePlace.uid, Message.subject, Message.malformed, Message.snippet)
                .join(Message, Message.id == MessagePlace.message_id)
                .join(Folder, Folder.id == MessagePlace.folder_id)
                .where(Folder.account_id == account_id, Folder.name == "INBOX")
            )
        ).all()
    assert len(rows) == len(corpus)
    malformed = 0
    for uid, subject, flagged, _snippet in rows:
        raw = served[uid]
        assert raw is not None
        parsed = parse_message(raw)
        assert (subject, flagged) == (parsed.subject, parsed.malformed), uid
        malformed += flagged
    assert malformed > 0
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)
