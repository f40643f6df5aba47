"""A pass over a followed folder costs what changed, not what the folder holds: neither a no-op pass nor one after
flag changes reads every place of the folder (a count of its places, a recount of its unread ones). The statements
of each pass are recorded; one that reads message_places by folder alone, narrowed by no UID, id or message, is
what grows with the folder. The counts the folder's row keeps must still be right."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, select

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema.crypto import CredentialBox
from schema.models import Folder, Label, Message, MessageLabel, Thread
from schema.unit import Store
from tests.sync.support import add_account, assert_identical, connect, sync_once

# The flags a message row keeps over its places (schema.aggregates.refresh_messages).
FLAG_COLUMNS = {"unread", "starred", "answered", "draft"}
# What narrows a read of message_places below "every place of the folder".
_NARROWER = re.compile(
    r"message_places\.(uid|id|message_id) IN|messages\.(id|thread_id) IN|message_places\.uidvalidity != ", re.I
)


@contextmanager
def recorded(store: Store, *, parameters: bool = False) -> Iterator[list[Any]]:
    """The statements run meanwhile; with `parameters`, (statement, parameters) pairs."""
    statements: list[Any] = []

    def before(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        statements.append((statement, params) if parameters else statement)

    engine = store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", before)


def whole_folder_reads(statements: list[str]) -> list[str]:
    found = []
    for sql in statements:
        flat = " ".join(sql.split())
        if not re.search(r"\bFROM message_places\b", flat, re.I) or "message_places.folder_id" not in flat:
            continue
        if flat.upper().startswith(("INSERT", "UPDATE", "DELETE")) or _NARROWER.search(flat):
            continue
        found.append(flat)
    return found


async def _counts(store: Store, account_id: int) -> tuple[int, int]:
    async with store.sessions() as s:
        folder = await s.scalar(select(Folder).where(Folder.account_id == account_id, Folder.name == "INBOX"))
        assert folder is not None
        return folder.total_count, folder.unread_count


async def test_a_pass_reads_only_what_changed(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", [(raw, ("\\Seen",)) for raw in generate(30, seed=151)])
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)
    assert await _counts(store, account_id) == (30, 0)

    with recorded(store) as noop:
        await sync_once(store, credential_box, account_id)
    assert noop, "no statement recorded"
    assert whole_folder_reads(noop) == []

    other = await connect(dovecot, user, password)
    try:
        await other.select("INBOX")
        await other.uid_store("1:4", "remove", ["\\Seen"])
        await other.uid_store("5:6", "add", ["\\Flagged"])
    finally:
        await other.logout()
    with recorded(store) as flags:
        await sync_once(store, credential_box, account_id)
    assert whole_folder_reads(flags) == []
    assert await _counts(store, account_id) == (30, 4)

    other = await connect(dovecot, user, password)
    try:
        await other.select("INBOX")
        await other.uid_store("1:2", "add", ["\\Seen"])
    finally:
        await other.logout()
    await sync_once(store, credential_box, account_id)
    assert await _counts(store, account_id) == (30, 2)
    await assert_identical(store, credential_box, account_id)


async def test_a_pass_that_finds_new_mail_counts_no_place_of_the_folder(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """New mail moves UIDNEXT: the pass knows the folder changed without counting what it holds (a count that new
    mail makes differ from EXISTS, which was then recounted place by place on every push)."""
    user, password = mail_user
    mail = generate(40, seed=152)
    dovecot.append(user, password, "INBOX", [(next(mail), ("\\Seen",)) for _ in range(30)])
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)
    other = await connect(dovecot, user, password)
    try:
        await other.append("INBOX", next(mail))
        await other.append("INBOX", next(mail))
    finally:
        await other.logout()
    with recorded(store) as arrivals:
        await sync_once(store, credential_box, account_id)
    assert arrivals, "no statement recorded"
    assert whole_folder_reads(arrivals) == []
    assert await _counts(store, account_id) == (32, 2)
    await assert_identical(store, credential_box, account_id)


async def test_a_label_change_lists_the_threads_labels_without_counting_their_members(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """After keywords (labels) added elsewhere, with messages read, each changed thread's counts move by what its
    members' flags did and its labels are listed again: no count over its members, which reads their rows of several
    KiB each (ix_messages_thread holds no flag, migration 0020), as a large mailbox's pass would from disk."""
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(40, seed=152)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)
    other = await connect(dovecot, user, password)
    try:
        await other.select("INBOX")
        await other.uid_store("1:20", "add", ["\\Seen", "$Counted"])
    finally:
        await other.logout()
    with recorded(store) as statements:
        await sync_once(store, credential_box, account_id)
    flat = [" ".join(sql.split()) for sql in statements]
    assert not [sql for sql in flat if re.search(r"SELECT messages\.thread_id, sum\(", sql, re.I)]
    assert [sql for sql in flat if "messages.thread_id IN" in sql and "message_labels.label_id" in sql]
    async with store.sessions() as s:
        label = await s.scalar(select(Label.id).where(Label.account_id == account_id, Label.name == "$Counted"))
        rows = list(
            await s.execute(
                select(Thread.id, Thread.unread_count, Thread.label_ids).where(Thread.account_id == account_id)
            )
        )
        members = list(
            await s.execute(select(Message.thread_id, Message.unread).where(Message.account_id == account_id))
        )
        labelled = set(
            await s.scalars(
                select(Message.thread_id)
                .join(MessageLabel, MessageLabel.message_id == Message.id)
                .where(Message.account_id == account_id, MessageLabel.label_id == label)
            )
        )
    assert label is not None
    assert labelled
    for tid, unread_count, label_ids in rows:
        assert unread_count == sum(1 for t, unread in members if t == tid and unread)
        assert (label in (label_ids or [])) == (tid in labelled)
    await assert_identical(store, credential_box, account_id)


async def test_no_index_of_messages_holds_a_flag(store: Store) -> None:
    """A flag change's UPDATE of messages (unread, starred, answered, draft) writes the changed rows and no index
    entry: an index holding a flag has each changed message's entry rewritten, a page of its own per thread. With
    `ix_messages_thread` covering unread and starred (migration 0017) that UPDATE took 140-560 ms of a pass after
    1,000 flag changes on 100,000 messages and a 128 MiB buffer pool, 8-65 ms without (migration 0020), though the
    thread rows it read (the index's foreign key checked) are then read by the threads' lock: about 100 ms saved."""
    async with store.engine.connect() as conn:
        found = await conn.exec_driver_sql(
            "SELECT index_name, column_name FROM information_schema.statistics"
            " WHERE table_schema = DATABASE() AND table_name = 'messages'"
        )
        rows: list[Any] = list(found)
    indexed = [(str(index), str(column)) for index, column in rows]
    assert indexed
    assert [(index, column) for index, column in indexed if column in FLAG_COLUMNS] == []
