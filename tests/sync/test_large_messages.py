"""One message cannot stop its folder: one the store refuses is kept raw and flagged, one over the size limit is
skipped with its reason, and the messages around them (older ones, later folders) are mirrored all the same."""

from __future__ import annotations

from sqlalchemy import func, select

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import blobs
from schema.crypto import CredentialBox
from schema.messages import STORED_RAW_ONLY
from schema.models import Folder, Message, MessagePlace, SkippedMessage
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.verify import verify
from tests.sync.support import add_account, connect


def long_subject_message() -> bytes:
    """A real message whose Subject (139 KB) is longer than its TEXT column (64 KB): MariaDB's strict mode refuses
    the row, and with it the whole batch it is written in."""
    subject = b" ".join(b"word%d" % i for i in range(15000))
    return (
        b"From: Sender <s@example.com>\r\nTo: r@example.org\r\nSubject: " + subject + b"\r\n"
        b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\nMessage-ID: <long-subject@example.com>\r\n\r\n"
        b"A body all the same.\r\n"
    )


async def places(store: Store, account_id: int) -> dict[str, int]:
    async with store.sessions() as s:
        rows = await s.execute(
            select(Folder.name, func.count(MessagePlace.id))
            .join(MessagePlace, MessagePlace.folder_id == Folder.id)
            .where(Folder.account_id == account_id)
            .group_by(Folder.name)
        )
        return {name: count for name, count in rows}


async def test_a_message_the_store_refuses_is_kept_raw_and_flagged_and_the_rest_syncs(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    mail = list(generate(30, seed=31))
    bad = long_subject_message()
    dovecot.append(user, password, "INBOX", [*mail[:20], bad, *mail[20:25]])
    dovecot.append(user, password, "Archive", mail[25:])
    account_id = await add_account(store, credential_box, dovecot, user, password)

    await AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2)).run_once()

    assert await verify(store, credential_box, account_id) == []
    assert await places(store, account_id) == {"INBOX": 26, "Archive": 5}
    async with store.sessions() as s:
        row = (
            await s.execute(
                select(Message.subject, Message.malformed, Message.defects, Message.blob_sha256).where(
                    Message.account_id == account_id, Message.message_id_header == "long-subject@example.com"
                )
            )
        ).one()
        assert row.malformed
        assert STORED_RAW_ONLY in row.defects.split()
        assert row.subject.startswith("word0 word1 word2")
        assert await blobs.get(s, row.blob_sha256) == bad.replace(b"\0", b"\x80")
        others = await s.scalar(
            select(func.count())
            .select_from(Message)
            .where(Message.account_id == account_id, Message.malformed.is_(True))
        )
        assert others == 1, "only the refused message is stored raw only"


async def test_a_message_over_the_size_limit_is_skipped_with_its_reason(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    mail = list(generate(12, seed=32))
    big = [m.replace(b"\r\n\r\n", b"\r\n\r\n" + b"x" * 76 * 30_000, 1) for m in mail[:2]]  # 2.3 MB each
    dovecot.append(user, password, "INBOX", [*mail[2:9], *big, *mail[9:10]])  # the large ones are UIDs 8 and 9
    dovecot.append(user, password, "Archive", mail[10:])
    account_id = await add_account(store, credential_box, dovecot, user, password)
    tuning = Tuning(poll_interval=0.2, max_message_bytes=1 << 20)

    await AccountSync(store, credential_box, account_id, tuning).run_once()

    assert await places(store, account_id) == {"INBOX": 8, "Archive": 2}
    skips = await skipped_of(store, account_id)
    assert [(k.uid, k.kind, k.size) for k in skips] == [(8, "too_large", len(big[0])), (9, "too_large", len(big[1]))]
    assert f"over the limit of {1 << 20} bytes" in skips[0].reason
    assert await verify(store, credential_box, account_id) == [
        f"folder 'INBOX': UID {k.uid} on the server, not in the mirror (skipped: {k.reason})" for k in skips
    ]
    await AccountSync(store, credential_box, account_id, tuning).run_once()  # skipped again, nothing else changes
    assert await places(store, account_id) == {"INBOX": 8, "Archive": 2}
    assert len(await skipped_of(store, account_id)) == 2

    # UID 9 expunged on the server, and the limit raised: UID 8 is mirrored, and neither record stays.
    client = await connect(dovecot, user, password)
    try:
        await client.select("INBOX")
        await client.uid_store([9], "add", ["\\Deleted"])
        await client.expunge()
    finally:
        await client.logout()
    await AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2)).run_once()
    assert await places(store, account_id) == {"INBOX": 9, "Archive": 2}
    assert await skipped_of(store, account_id) == []
    assert await verify(store, credential_box, account_id) == []


async def skipped_of(store: Store, account_id: int) -> list[SkippedMessage]:
    async with store.sessions() as s:
        return list(
            await s.scalars(
                select(SkippedMessage).where(SkippedMessage.account_id == account_id).order_by(SkippedMessage.uid)
            )
        )


async def test_a_message_the_store_refuses_even_raw_is_skipped_with_the_stores_reason(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    mail = list(generate(12, seed=33))
    # A From display name of 100 KB: the searchable address text outgrows its TEXT column even for the raw-only
    # row (which keeps the sender).
    name = b" ".join(b"name%d" % i for i in range(12000))
    bad = b'From: "' + name + b'" <s@example.com>\r\nTo: r@example.org\r\nSubject: hi\r\n'
    bad += b"Message-ID: <long-name@example.com>\r\n\r\nbody\r\n"
    dovecot.append(user, password, "INBOX", [*mail[:8], bad, *mail[8:10]])
    dovecot.append(user, password, "Archive", mail[10:])
    account_id = await add_account(store, credential_box, dovecot, user, password)

    await AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2)).run_once()

    assert await places(store, account_id) == {"INBOX": 10, "Archive": 2}
    [skip] = await skipped_of(store, account_id)
    assert (skip.uid, skip.kind, skip.size) == (9, "unstorable", len(bad))
    assert skip.reason.startswith('the store refused it: DataError: (1406, "Data too long for column')
    assert await verify(store, credential_box, account_id) == [
        f"folder 'INBOX': UID 9 on the server, not in the mirror (skipped: {skip.reason})"
    ]
    # Not tried again under this UIDVALIDITY: the record stays as it was.
    await AccountSync(store, credential_box, account_id, Tuning(poll_interval=0.2)).run_once()
    [again] = await skipped_of(store, account_id)
    assert (again.id, again.skipped_at) == (skip.id, skip.skipped_at)
