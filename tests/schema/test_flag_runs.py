"""Flag changes of many messages are set-based (BENCHMARKS.md, write-back): a flag mutation's unit of work takes as
many statements for forty messages of varied flags, in forty threads, as for one, and recording its actions as done
reads none of them back; what both log is what a fresh read of the mirror finds."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event, select

from schema import actions, messages
from schema.actions import ActionState
from schema.changelog import ObjectType, Op
from schema.crypto import CredentialBox
from schema.db import MANY_IDS
from schema.models import Action, ActionMessage, Message, MessageLabel, MessagePlace, Thread
from schema.unit import Store
from tests.schema.support import new_account, new_folder
from tests.schema.test_changelog import fetched, log_after, mail, newest
from tests.schema.test_settle import assert_logged_as_stored, counts, reply

UIDVALIDITY = 1900
# Each message's flags on the server: the new flags of their places fall into as many sets, and their threads
# into as many (unread, starred, labels) kinds.
FLAG_SETS: list[tuple[str, ...]] = [
    (),
    ("\\Seen",),
    ("\\Answered",),
    ("\\Seen", "\\Answered"),
    ("$Work",),
    ("\\Seen", "$Work"),
    ("\\Draft", "$Work", "$Later"),
    ("\\Seen", "\\Draft", "$Later"),
]


@contextmanager
def statements(store: Store) -> Iterator[list[str]]:
    """The SQL statements sent through the store's engine inside the block."""
    sent: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    engine = store.engine.sync_engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", count)


async def _messages(store: Store, account_id: int, folder_id: int, n: int) -> list[int]:
    """n messages in as many threads, the i-th with FLAG_SETS[i % 8]; their ids by UID."""
    when = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    async with store.unit(account_id) as uow:
        await messages.add(
            uow,
            folder_id,
            UIDVALIDITY,
            [
                fetched(
                    i + 1,
                    mail(f"r{i}.{secrets.token_hex(4)}@example.org", f"Topic {i}", when=when + timedelta(minutes=i)),
                    FLAG_SETS[i % len(FLAG_SETS)],
                )
                for i in range(n)
            ],
        )
    async with store.sessions() as s:
        rows = await s.execute(
            select(MessagePlace.message_id).where(MessagePlace.folder_id == folder_id).order_by(MessagePlace.uid)
        )
        found = [mid for (mid,) in rows]
    assert len(found) == n
    return found


async def test_a_flag_change_of_many_messages_takes_the_statements_of_one(
    store: Store, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    inbox = await new_folder(store, account_id)
    ids = await _messages(store, account_id, inbox, 41)
    change = {"add": ["\\Flagged", "\\Seen"], "remove": ["$Work"]}

    cursor = await newest(store, account_id)
    with statements(store) as one:  # unread, a label to drop and one to keep, as many below
        async with store.unit(account_id) as uow:
            [single] = await actions.set_flags(uow, ids[6:7], **change)
    logged = await log_after(store, account_id, cursor)
    await assert_logged_as_stored(store, logged)

    cursor = await newest(store, account_id)
    with statements(store) as many:
        async with store.unit(account_id) as uow:
            queued = await actions.set_flags(uow, ids[:6] + ids[7:], **change)
    # One action for the forty, naming them (before: forty actions, forty entries in the log and the answer).
    assert len(queued) == 1
    # On a statement per resulting flag set, per (unread, starred, labels) kind of thread, per label dropped and
    # a read back of the actions, the forty took 30 statements more than the one. Now one more: the action's
    # messages (action_messages).
    assert len(many) == len(one) + 1, "\n".join(many)
    assert len([q for q in many if q.startswith("INSERT INTO action_messages")]) == 1
    logged = await log_after(store, account_id, cursor)
    await assert_logged_as_stored(store, logged)
    created = {c.object_id for c in logged if c.object_type is ObjectType.ACTION and c.op is Op.CREATE}
    assert created == set(queued)
    assert single not in created
    async with store.sessions() as s:
        named = set(await s.scalars(select(ActionMessage.message_id).where(ActionMessage.action_id == queued[0])))
        assert await s.scalar(select(Action.message_id).where(Action.id == queued[0])) is None
    assert named == set(ids[:6] + ids[7:])
    async with store.sessions() as s:
        assert await actions.pending_messages(s, account_id, ids) == set(ids)
    stored, counted = await counts(store, inbox)
    assert stored == counted  # the unread count moved by the difference is the count of the places


async def test_a_flag_change_of_one_message_takes_ten_statements(store: Store, credential_box: CredentialBox) -> None:
    """The unit of `updateMessages(ids: [one], starred: true)` (BENCHMARKS.md, write-back (a)): the account's mode,
    the places locked, written, the action queued; the message locked, its places and label links read in one
    statement, written; its thread locked and written (its counts moved by the one star gained, not counted again);
    the counter. Each statement is about half a millisecond of Python: 13 before (14 for a message with labels)."""
    account_id = await new_account(store, credential_box)
    inbox = await new_folder(store, account_id)
    ids = await _messages(store, account_id, inbox, 8)
    cursor = await newest(store, account_id)
    with statements(store) as sent:  # a message with labels ($Work, $Later): its links are read and kept
        async with store.unit(account_id) as uow:
            [queued] = await actions.set_flags(uow, ids[6:7], add=["\\Flagged"], remove=[])
    assert len(sent) == 10, "\n".join(sent)
    assert len([q for q in sent if "UNION ALL" in q]) == 1
    logged = await log_after(store, account_id, cursor)
    assert {(c.object_type, c.op) for c in logged} == {
        (ObjectType.THREAD, Op.UPDATE),
        (ObjectType.MESSAGE, Op.UPDATE),
        (ObjectType.ACTION, Op.CREATE),
    }
    assert [c.object_id for c in logged if c.object_type is ObjectType.ACTION] == [queued]
    await assert_logged_as_stored(store, logged)
    await _assert_threads_counted(store, account_id)


async def _assert_threads_counted(store: Store, account_id: int) -> None:
    """Each thread's unread count, star and labels are what its members (not orphaned) hold."""
    async with store.sessions() as s:
        threads = {
            t.id: (t.unread_count, bool(t.starred), sorted(t.label_ids or ()))
            for t in await s.scalars(select(Thread).where(Thread.account_id == account_id))
        }
        members = list(
            await s.execute(
                select(Message.id, Message.thread_id, Message.unread, Message.starred).where(
                    Message.account_id == account_id, Message.orphaned_at.is_(None)
                )
            )
        )
        links = list(await s.execute(select(MessageLabel.message_id, MessageLabel.label_id)))
    thread_of = {m.id: m.thread_id for m in members}
    counted = {
        tid: (
            sum(1 for m in members if m.thread_id == tid and m.unread),
            any(m.starred for m in members if m.thread_id == tid),
            sorted({lid for mid, lid in links if thread_of.get(mid) == tid}),
        )
        for tid in threads
    }
    assert threads == counted


async def test_a_threads_counts_move_with_its_members_flags_and_are_counted_when_a_star_goes(
    store: Store, credential_box: CredentialBox
) -> None:
    """A thread of three: its unread count moves with each member read or unread, its star with a member starred;
    a member unstarred (another may be starred) has the thread counted again. A member relabelled has the thread's
    labels listed again, not its members counted: a count reads the members' rows (ix_messages_thread holds no
    flag, migration 0020), the labels come from the index and message_labels. Each unit logs what a count of the
    members finds."""
    account_id = await new_account(store, credential_box)
    inbox = await new_folder(store, account_id)
    when = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    root = f"root.{secrets.token_hex(4)}@example.org"
    async with store.unit(account_id) as uow:
        await messages.add(
            uow,
            inbox,
            UIDVALIDITY,
            [
                fetched(1, mail(root, "Plans", when=when)),
                fetched(2, reply(root, "Plans", when + timedelta(minutes=1)), ("\\Seen",)),
                fetched(3, reply(root, "Plans", when + timedelta(minutes=2)), ("$Work",)),
            ],
        )
    async with store.sessions() as s:
        ids = list(
            await s.scalars(
                select(MessagePlace.message_id).where(MessagePlace.folder_id == inbox).order_by(MessagePlace.uid)
            )
        )
        assert len({t for t in await s.scalars(select(Message.thread_id).where(Message.id.in_(ids)))}) == 1
    # (messages, flags added, flags removed, the thread counted, its labels listed)
    steps: list[tuple[list[int], list[str], list[str], bool, bool]] = [
        (ids[:1], ["\\Seen"], [], False, False),  # read: moved
        (ids[1:2], [], ["\\Seen"], False, False),  # unread: moved
        (ids[:2], ["\\Flagged"], [], False, False),  # two starred: moved
        (ids[:1], [], ["\\Flagged"], True, True),  # one unstarred: counted (the other keeps the thread starred)
        (ids[1:2], [], ["\\Flagged"], True, True),  # the last unstarred: counted
        (ids[2:3], ["\\Seen"], ["$Work"], False, True),  # read and a label gone: moved, the labels listed
        (ids[:1], ["$Later", "\\Flagged"], [], False, True),  # starred and labelled: moved, the labels listed
        (ids[:1], [], ["$Later", "\\Flagged"], True, True),  # unstarred and unlabelled: counted
        (ids[1:2], ["$Work"], ["\\Seen"], False, True),  # unread and labelled: moved, the labels listed
        (ids, [], ["\\Seen"], False, False),  # all unread: moved
    ]
    for mids, add, remove, counts_again, listed in steps:
        cursor = await newest(store, account_id)
        with statements(store) as sent:
            async with store.unit(account_id) as uow:
                await actions.set_flags(uow, mids, add=add, remove=remove)
        assert any("sum(CASE" in q for q in sent) == counts_again, (add, remove)
        assert any("messages.thread_id" in q and "message_labels.label_id" in q for q in sent) == listed, (add, remove)
        await assert_logged_as_stored(store, await log_after(store, account_id, cursor))
        await _assert_threads_counted(store, account_id)


async def test_a_thread_of_one_message_unstarred_takes_its_star_without_a_count(
    store: Store, credential_box: CredentialBox
) -> None:
    """A lost star has a thread counted (another member may have one), but not a thread of a single member: its star
    goes with that member's, and its unread count moves. Threads of several members are still counted; each unit
    logs what a count of the members finds."""
    account_id = await new_account(store, credential_box)
    inbox = await new_folder(store, account_id)
    ids = await _messages(store, account_id, inbox, 8)  # eight threads of one message
    root_reply = await _messages_in_one_thread(store, account_id, inbox)
    # (messages, flags added, flags removed, a thread counted)
    steps: list[tuple[list[int], list[str], list[str], bool]] = [
        (ids[:4], ["\\Flagged"], [], False),  # starred: moved
        (ids[:2], [], ["\\Flagged"], False),  # unstarred, alone in their threads: moved
        (ids[2:4], ["\\Seen"], ["\\Flagged"], False),  # read and unstarred: moved
        (root_reply, ["\\Flagged"], [], False),  # both of a thread of two starred: moved
        (root_reply[:1], [], ["\\Flagged"], True),  # one of them unstarred: counted, the other keeps the star
    ]
    for mids, add, remove, counts_again in steps:
        cursor = await newest(store, account_id)
        with statements(store) as sent:
            async with store.unit(account_id) as uow:
                await actions.set_flags(uow, mids, add=add, remove=remove)
        assert any("sum(CASE" in q for q in sent) == counts_again, (add, remove)
        await assert_logged_as_stored(store, await log_after(store, account_id, cursor))
        await _assert_threads_counted(store, account_id)


async def _messages_in_one_thread(store: Store, account_id: int, folder_id: int) -> list[int]:
    """A message and its reply (UIDs 101 and 102): one thread of two; their ids."""
    when = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    root = f"pair.{secrets.token_hex(4)}@example.org"
    async with store.unit(account_id) as uow:
        await messages.add(
            uow,
            folder_id,
            UIDVALIDITY,
            [
                fetched(101, mail(root, "Pair", when=when)),
                fetched(102, reply(root, "Pair", when + timedelta(minutes=1))),
            ],
        )
    async with store.sessions() as s:
        found = list(
            await s.scalars(
                select(MessagePlace.message_id)
                .where(MessagePlace.folder_id == folder_id, MessagePlace.uid > 100)
                .order_by(MessagePlace.uid)
            )
        )
        assert len(set(await s.scalars(select(Message.thread_id).where(Message.id.in_(found))))) == 1
    return found


async def test_flag_actions_recorded_as_done_are_logged_without_reading_them_back(
    store: Store, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    inbox = await new_folder(store, account_id)
    ids = await _messages(store, account_id, inbox, 40)
    async with store.unit(account_id) as uow:
        queued = await actions.set_flags(uow, ids, add=["\\Flagged"], remove=[])
    async with store.sessions() as s:
        due = await actions.due(s, account_id, 500)
    assert [a.id for a in due] == queued

    cursor = await newest(store, account_id)
    with statements(store) as sent:
        async with store.unit(account_id) as uow:
            await actions.complete_flags(uow, due)
    assert [q for q in sent if "FROM actions" in q] == [], "the actions were read back"
    assert len([q for q in sent if q.startswith("UPDATE actions")]) == 1

    logged = await log_after(store, account_id, cursor)
    assert [(c.object_type, c.object_id, c.op) for c in logged] == [(ObjectType.ACTION, a, Op.UPDATE) for a in queued]
    await assert_logged_as_stored(store, logged)
    async with store.sessions() as s:
        states = set(await s.execute(select(Action.state, Action.attempts).where(Action.id.in_(queued))))
    assert states == {(ActionState.DONE.value, 1)}


async def test_a_flag_change_of_many_messages_writes_its_id_lists_as_numbers(
    store: Store, credential_box: CredentialBox
) -> None:
    """From MANY_IDS ids a list is written into the statement's text (schema.db.ids_in), not a bound parameter per
    id; mixed flags take the CASE of per-value lists; what is logged is what a fresh read finds."""
    account_id = await new_account(store, credential_box)
    inbox = await new_folder(store, account_id)
    ids = await _messages(store, account_id, inbox, 2 * MANY_IDS + 8)
    cursor = await newest(store, account_id)
    with statements(store) as sent:
        async with store.unit(account_id) as uow:
            [queued] = await actions.set_flags(uow, ids, add=["\\Seen"], remove=["$Work"])
    bound = [
        (q.split(" WHERE")[0], n)
        for q in sent
        for n in (m.count("%s") for m in re.findall(r"IN \(((?:%s, )*%s)\)", q))
        if n >= MANY_IDS
    ]
    # The WHERE of the messages' UPDATE stays bound (the ORM matches it to the objects a session has loaded).
    assert bound == [("UPDATE messages SET unread=%s", len(ids) // 2)], bound
    assert any(f"IN ({ids[0]},{ids[1]}," in q for q in sent)
    # A list in the text is a comparison the index serves, not a boolean compared with 1 (a full scan).
    assert not [q[:80] for q in sent if re.search(r"IN \([0-9,]+\) = 1", q)]
    logged = await log_after(store, account_id, cursor)
    await assert_logged_as_stored(store, logged)
    stored, counted = await counts(store, inbox)
    assert stored == counted
    async with store.sessions() as s:
        unread = set(await s.scalars(select(Message.id).where(Message.id.in_(ids), Message.unread.is_(True))))
        named = set(await s.scalars(select(ActionMessage.message_id).where(ActionMessage.action_id == queued)))
    assert not unread
    # Every message but those already read without $Work (three of the eight FLAG_SETS) changed.
    assert len(named) == len(ids) * 5 // 8
