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
from schema.models import Folder
from schema.unit import Store
from tests.sync.support import add_account, assert_identical, connect, sync_once

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


async def test_a_threads_flag_count_reads_the_index_not_the_messages(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """After flag changes that need a count (here a label added), each changed thread's unread and starred are
    counted over its members: from the index on messages (thread_id, orphaned_at, unread, starred), not from the
    members' rows of several KiB each, which a large mailbox reads from disk (migration 0017)."""
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(40, seed=152)))
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)
    other = await connect(dovecot, user, password)
    try:
        await other.select("INBOX")
        # A keyword as well: a label changed has the threads counted (a read flag alone moves their counts).
        await other.uid_store("1:20", "add", ["\\Seen", "$Counted"])
    finally:
        await other.logout()
    with recorded(store, parameters=True) as statements:
        await sync_once(store, credential_box, account_id)
    counts = [
        (sql, params)
        for sql, params in statements
        if re.search(r"SELECT messages\.thread_id, sum\(", sql, re.I) and "GROUP BY messages.thread_id" in sql
    ]
    assert counts, "no thread flag count ran"
    async with store.engine.connect() as conn:
        for sql, params in counts:
            plan = (await conn.exec_driver_sql(f"EXPLAIN {sql}", params)).mappings().all()
            # The count is the statement's first SELECT; the threads' labels are read after it (UNION ALL).
            [messages] = [row for row in plan if row["table"] == "messages" and row["id"] == 1]
            assert "Using index" in (messages["Extra"] or ""), plan
