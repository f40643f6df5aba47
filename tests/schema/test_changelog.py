"""The change log: per account, seq order is commit order; every unit logs exactly what it changed.

Runs against the session's MariaDB and Redis (the `store` fixture). Each test makes an account of its own,
so the seqs it sees are its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from mime import parse_message
from mime.compose import Draft, Mailbox
from schema import actions, changelog, folders, labels, messages, outbox
from schema.changelog import Change, ObjectType, Op
from schema.crypto import CredentialBox
from schema.doorbell import Doorbells
from schema.models import Action, ChangeLog, Folder, Label, Message, MessagePlace, MimeBlob, Outbox, Thread
from schema.unit import Store, UnitOfWork
from tests.schema.support import new_account, new_folder

ACCOUNT, FOLDER, LABEL, THREAD, MESSAGE, OUTBOX, ACTION = (
    ObjectType.ACCOUNT,
    ObjectType.FOLDER,
    ObjectType.LABEL,
    ObjectType.THREAD,
    ObjectType.MESSAGE,
    ObjectType.OUTBOX,
    ObjectType.ACTION,
)
CREATE, UPDATE, DELETE = Op.CREATE, Op.UPDATE, Op.DELETE
UIDVALIDITY = 1700


# --- helpers ----------------------------------------------------------------------------------------


async def newest(store: Store, account_id: int) -> int:
    async with store.sessions() as s:
        return await changelog.newest_seq(s, account_id)


async def log_after(store: Store, account_id: int, after: int) -> list[Change]:
    async with store.sessions() as s:
        return await changelog.read(s, account_id, after=after, limit=10_000)


def entries(changes: Sequence[Change]) -> list[tuple[ObjectType, int, Op]]:
    return [(c.object_type, c.object_id, c.op) for c in changes]


def mail(message_id: str, subject: str, *, when: datetime, sender: str = "ann@example.org") -> bytes:
    return (
        f"Message-ID: <{message_id}>\r\n"
        f"Date: {format_datetime(when)}\r\n"
        f"From: Ann <{sender}>\r\n"
        f"To: bob@example.org\r\n"
        f"Subject: {subject}\r\n"
        f"\r\n"
        f"Body of {subject}.\r\n"
    ).encode()


def fetched(uid: int, raw: bytes, flags: tuple[str, ...] = (), modseq: int | None = None) -> messages.Fetched:
    parsed = parse_message(raw)
    return messages.Fetched(
        uid=uid,
        flags=flags,
        modseq=modseq,
        identity=f"hash:{hashlib.sha256(raw).hexdigest()}",
        internaldate=parsed.date,
        raw=raw,
        parsed=parsed,
    )


async def next_doorbell(pubsub: PubSub, timeout: float) -> bytes | None:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        message: dict[str, Any] | None = await pubsub.get_message(ignore_subscribe_messages=True, timeout=left)
        if message is not None and message["type"] == "message":
            data: bytes = message["data"]
            return data
    return None


@asynccontextmanager
async def subscribed(redis: Redis, store: Store, account_id: int) -> AsyncIterator[PubSub]:
    pubsub = redis.pubsub()
    close: Callable[[], Awaitable[None]] = pubsub.aclose  # redis-py leaves PubSub untyped
    try:
        await pubsub.subscribe(store.doorbells.channel(account_id))
        # Wait for the confirmation, so no PUBLISH can race ahead of the subscription.
        deadline = time.monotonic() + 5
        while True:
            assert time.monotonic() < deadline, "no subscribe confirmation from Redis"
            confirmation = await pubsub.get_message(timeout=1.0)
            if confirmation is not None and confirmation["type"] == "subscribe":
                break
        yield pubsub
    finally:
        await close()


def state_of(changes: Sequence[Change], object_type: ObjectType, object_id: int) -> dict[str, Any]:
    """The logged state of that object in these changes (which must hold one, and not a delete)."""
    [data] = [c.data for c in changes if (c.object_type, c.object_id) == (object_type, object_id)]
    assert data is not None
    return data


# --- (a) commit order -------------------------------------------------------------------------------
#
# The hazard (schema.changelog): a writer that has drawn its seq but not yet committed, while a later writer
# commits a higher seq. A reader must never see the later seq before the earlier one is visible, or its cursor
# moves past a change it never read. So the tests hold writers exactly there: after the draw (changelog.append,
# the unit's last statement) and before COMMIT.

# What a writer does just before drawing its seqs, and just after (with the newest seq it drew): set per task.
BEFORE_DRAW: ContextVar[Callable[[], None] | None] = ContextVar("BEFORE_DRAW", default=None)
AFTER_DRAW: ContextVar[Callable[[int | None], Awaitable[None]] | None] = ContextVar("AFTER_DRAW", default=None)


@pytest.fixture
def draw_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Units call BEFORE_DRAW and AFTER_DRAW of their task around the draw of their seqs (still uncommitted)."""
    real = changelog.append

    async def append(
        session: AsyncSession,
        account_id: int,
        changes: changelog.ChangeSet,
        states: Mapping[tuple[ObjectType, int], dict[str, Any]],
    ) -> int | None:
        before, after = BEFORE_DRAW.get(), AFTER_DRAW.get()
        if before is not None:
            before()
        last = await real(session, account_id, changes, states)
        if after is not None:
            await after(last)
        return last

    monkeypatch.setattr(changelog, "append", append)


class Reader:
    """A client following the log: reads after its cursor and moves the cursor to the newest seq it read."""

    def __init__(self, store: Store, account_id: int, cursor: int) -> None:
        self.store = store
        self.account_id = account_id
        self.cursor = cursor
        self.pages: list[list[int]] = []

    async def read(self) -> list[int]:
        async with self.store.sessions() as s:
            seqs = [c.seq for c in await changelog.read(s, self.account_id, after=self.cursor, limit=16)]
        if seqs:
            self.pages.append(seqs)
            self.cursor = seqs[-1]
        return seqs

    @property
    def seen(self) -> list[int]:
        return [seq for page in self.pages for seq in page]

    async def follow(self, done: asyncio.Event) -> None:
        """Read until `done` is set and nothing is left."""
        while True:
            finished = done.is_set()
            if not await self.read():
                if finished:
                    return
                await asyncio.sleep(0.002)


def contiguous(pages: Sequence[Sequence[int]], start: int) -> bool:
    """Every page read carries on exactly where the one before stopped."""
    flat = [seq for page in pages for seq in page]
    return flat == list(range(start + 1, start + 1 + len(flat)))


@pytest.mark.usefixtures("draw_hooks")
async def test_a_writer_held_between_drawing_its_seq_and_committing_is_never_skipped(
    store: Store, credential_box: CredentialBox
) -> None:
    """Writer A draws its seq and stays uncommitted; writer B writes and commits meanwhile. A reader polling all
    along must not see B's seq while A's is invisible, and in the end reads both, A's first."""
    account_id = await new_account(store, credential_box)
    start = await newest(store, account_id)
    a_drawn, release_a, b_drawing = asyncio.Event(), asyncio.Event(), asyncio.Event()
    drawn: dict[str, int | None] = {}

    async def writer_a() -> None:
        async def hold(last: int | None) -> None:
            drawn["a"] = last
            a_drawn.set()
            await release_a.wait()

        AFTER_DRAW.set(hold)
        async with store.unit(account_id) as uow:
            await folders.create(uow, folders.Discovered("held", "/", (), None))

    async def writer_b() -> None:
        async def note(last: int | None) -> None:
            drawn["b"] = last

        BEFORE_DRAW.set(b_drawing.set)
        AFTER_DRAW.set(note)
        async with store.unit(account_id) as uow:
            await labels.ensure(uow, ["late"])

    reader = Reader(store, account_id, start)
    a = asyncio.create_task(writer_a())
    try:
        async with asyncio.timeout(30):
            await a_drawn.wait()
            b = asyncio.create_task(writer_b())
            await b_drawing.wait()
            # B has made its writes and asks for its seq; A holds its own, uncommitted. Long enough for B to
            # commit, were it free to: the reader must see nothing, since A's change is not visible yet.
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                await reader.read()
                await asyncio.sleep(0.01)
            assert reader.pages == [], f"the reader saw {reader.pages} while seq {drawn['a']} was uncommitted"
            release_a.set()
            await asyncio.gather(a, b)
            committed = asyncio.Event()
            committed.set()
            await reader.follow(committed)  # what the writers committed, to the end
    finally:
        release_a.set()
    assert drawn == {"a": start + 1, "b": start + 2}
    assert reader.seen == [start + 1, start + 2]
    assert entries(await log_after(store, account_id, start))[0][0] is FOLDER


@pytest.mark.usefixtures("draw_hooks")
async def test_concurrent_writers_never_leave_a_gap_behind_a_readers_cursor(
    store: Store, credential_box: CredentialBox
) -> None:
    """Eight writers whose transactions overlap, each held a random while after drawing its seqs (before
    COMMIT), and a reader following the log all along: it never finds a gap behind its cursor."""
    account_id = await new_account(store, credential_box)
    start = await newest(store, account_id)
    writers, units_each = 8, 25
    done = asyncio.Event()

    async def writer(w: int) -> None:
        rng = random.Random(w)

        async def hold(last: int | None) -> None:
            await asyncio.sleep(rng.uniform(0, 0.03))

        AFTER_DRAW.set(hold)
        for u in range(units_each):
            async with store.unit(account_id) as uow:
                if u % 2:
                    await labels.ensure(uow, [f"w{w}-u{u}"])
                else:
                    await folders.create(uow, folders.Discovered(f"w{w}/u{u}", "/", (), None))
                # Inside the unit, after its writes: transactions overlap and reach the draw in a shuffled order.
                await asyncio.sleep(rng.uniform(0, 0.01))

    async def writers_then_done() -> None:
        try:
            await asyncio.gather(*(writer(w) for w in range(writers)))
        finally:
            done.set()

    reader = Reader(store, account_id, start)
    await asyncio.wait_for(asyncio.gather(reader.follow(done), writers_then_done()), timeout=120)

    total = writers * units_each
    assert contiguous(reader.pages, start), reader.pages
    assert reader.seen == list(range(start + 1, start + total + 1))
    assert await newest(store, account_id) == start + total
    assert len(reader.pages) > 1  # the reader really read while the writers wrote
    logged = await log_after(store, account_id, start)
    label_units = writers * sum(1 for u in range(units_each) if u % 2)
    assert sorted((c.object_type, c.op) for c in logged) == sorted(
        [(LABEL, CREATE)] * label_units + [(FOLDER, CREATE)] * (total - label_units)
    )
    assert len({(c.object_type, c.object_id) for c in logged}) == total


# --- (c) exact rows ---------------------------------------------------------------------------------


async def test_each_unit_logs_exactly_the_objects_it_changed(store: Store, credential_box: CredentialBox) -> None:
    account_id = await new_account(store, credential_box)
    created = await log_after(store, account_id, 0)
    assert entries(created) == [(ACCOUNT, account_id, CREATE)]
    assert created[0].seq == 1
    assert created[0].data is not None
    assert created[0].data["sync_state"] == "pending"

    folder_id = await new_folder(store, account_id)
    cursor = await newest(store, account_id)
    assert entries(await log_after(store, account_id, 1)) == [(FOLDER, folder_id, CREATE)]

    # Two unrelated messages arrive: two messages, two threads, the folder's counts.
    when = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    raw_a = mail(f"a.{secrets.token_hex(4)}@example.org", "First", when=when)
    raw_b = mail(f"b.{secrets.token_hex(4)}@example.org", "Second", when=when + timedelta(hours=1))
    async with store.unit(account_id) as uow:
        ids = await messages.add(uow, folder_id, UIDVALIDITY, [fetched(1, raw_a, ("\\Flagged",)), fetched(2, raw_b)])
    m1, m2 = ids
    async with store.sessions() as s:
        t1, t2 = [await s.scalar(select(Message.thread_id).where(Message.id == m)) for m in (m1, m2)]
    assert t1 is not None
    assert t2 is not None
    assert t1 != t2
    added = await log_after(store, account_id, cursor)
    assert entries(added) == [
        (FOLDER, folder_id, UPDATE),
        *sorted([(THREAD, t1, CREATE), (THREAD, t2, CREATE)]),
        (MESSAGE, m1, CREATE),
        (MESSAGE, m2, CREATE),
    ]
    assert [c.seq for c in added] == list(range(cursor + 1, cursor + 6))
    assert state_of(added, FOLDER, folder_id)["total_count"] == 2
    assert state_of(added, FOLDER, folder_id)["unread_count"] == 2
    message_a = state_of(added, MESSAGE, m1)
    assert message_a["thread_id"] == t1
    assert message_a["subject"] == "First"
    assert message_a["starred"] is True
    assert message_a["unread"] is True
    assert message_a["folder_ids"] == [folder_id]
    assert state_of(added, THREAD, t1)["message_count"] == 1
    assert state_of(added, THREAD, t1)["starred"] is True
    cursor = added[-1].seq

    # A flag change the server reported: the message, its thread, the folder's unread count.
    async with store.unit(account_id) as uow:
        assert await messages.set_flags(uow, folder_id, UIDVALIDITY, [messages.PlaceFlags(1, ("\\Seen",), 7)]) == 1
    flagged = await log_after(store, account_id, cursor)
    assert entries(flagged) == [(FOLDER, folder_id, UPDATE), (THREAD, t1, UPDATE), (MESSAGE, m1, UPDATE)]
    assert state_of(flagged, MESSAGE, m1) == {**message_a, "unread": False, "starred": False}
    assert state_of(flagged, THREAD, t1)["unread_count"] == 0
    assert state_of(flagged, THREAD, t1)["starred"] is False
    assert state_of(flagged, FOLDER, folder_id)["unread_count"] == 1
    cursor = flagged[-1].seq

    # Expunged: the message waits as an orphan (a move shows up as an expunge first).
    async with store.unit(account_id) as uow:
        assert await messages.remove_places(uow, folder_id, [1]) == 1
    removed = await log_after(store, account_id, cursor)
    assert entries(removed) == [(FOLDER, folder_id, UPDATE), (THREAD, t1, UPDATE), (MESSAGE, m1, UPDATE)]
    assert state_of(removed, MESSAGE, m1)["folder_ids"] == []
    assert state_of(removed, THREAD, t1)["message_count"] == 0
    assert state_of(removed, FOLDER, folder_id)["total_count"] == 1
    cursor = removed[-1].seq

    # Not found again: the orphan and its now empty thread are deleted, children before parents.
    async with store.unit(account_id) as uow:
        assert await messages.collect_orphans(uow, before=datetime.now(UTC).replace(tzinfo=None) + timedelta(1)) == 1
    collected = await log_after(store, account_id, cursor)
    assert entries(collected) == [(MESSAGE, m1, DELETE), (THREAD, t1, DELETE)]
    assert all(c.data is None for c in collected)
    async with store.sessions() as s:
        assert await s.get(Message, m1) is None
        assert await s.get(Thread, t1) is None
        assert await s.scalar(select(MimeBlob.id).where(MimeBlob.sha256 == hashlib.sha256(raw_a).digest())) is None
        assert await s.get(Message, m2) is not None
    assert all(c.data is not None for c in [*created, *added, *flagged, *removed])


@pytest.mark.usefixtures("draw_hooks")
async def test_a_message_moved_while_two_units_see_one_side_each_is_not_marked_an_orphan(
    store: Store, credential_box: CredentialBox
) -> None:
    # The inbox's sync (on its IDLE connection) removes a message's place there while a poll places it in the
    # folder it moved to. The poll's unit is held after its last statement, before COMMIT, while the inbox's
    # runs: that one must compute the message's state after the poll committed, not from what it read before.
    account_id = await new_account(store, credential_box)
    inbox = await new_folder(store, account_id, "INBOX")
    archive = await new_folder(store, account_id, "Archive")
    raw = mail(f"m.{secrets.token_hex(4)}@example.org", "Moved", when=datetime(2026, 11, 1, tzinfo=UTC))
    async with store.unit(account_id) as uow:
        (mid,) = await messages.add(uow, inbox, UIDVALIDITY, [fetched(1, raw)])
    drawn = asyncio.Event()
    release = asyncio.Event()

    async def held(_: int | None) -> None:
        drawn.set()
        await release.wait()

    async def poll() -> None:
        AFTER_DRAW.set(held)
        async with store.unit(account_id) as uow:
            await messages.add(uow, archive, UIDVALIDITY, [fetched(7, raw)])

    async def inbox_sync() -> None:
        async with store.unit(account_id) as uow:
            assert await messages.remove_places(uow, inbox, [1]) == 1

    placing = asyncio.create_task(poll())
    await drawn.wait()
    removing = asyncio.create_task(inbox_sync())
    await asyncio.sleep(0.3)
    release.set()
    await asyncio.gather(placing, removing)
    async with store.sessions() as s:
        assert await s.scalar(select(Message.orphaned_at).where(Message.id == mid)) is None
        assert list(await s.scalars(select(MessagePlace.folder_id).where(MessagePlace.message_id == mid))) == [archive]
    async with store.unit(account_id) as uow:
        assert await messages.collect_orphans(uow, before=datetime.now(UTC).replace(tzinfo=None) + timedelta(1)) == 0


@pytest.mark.usefixtures("draw_hooks")
async def test_two_units_reading_one_folder_and_thread_at_once_both_count(
    store: Store, credential_box: CredentialBox
) -> None:
    # Two units mark a message each read, both in one folder and one thread: the first is held after its last
    # statement, before COMMIT, while the second runs. The counts must hold both, not the second's stale view.
    account_id = await new_account(store, credential_box)
    folder_id = await new_folder(store, account_id)
    subject = f"Thread {secrets.token_hex(3)}"
    first_id = f"a.{secrets.token_hex(4)}@example.org"
    first = mail(first_id, subject, when=datetime(2026, 11, 1, tzinfo=UTC))
    reply = (
        f"Message-ID: <r.{secrets.token_hex(4)}@example.org>\r\nIn-Reply-To: <{first_id}>\r\n"
        f"Date: {format_datetime(datetime(2026, 11, 2, tzinfo=UTC))}\r\nFrom: Bob <bob@example.org>\r\n"
        f"Subject: Re: {subject}\r\n\r\nReply.\r\n"
    ).encode()
    async with store.unit(account_id) as uow:
        root, answer = await messages.add(uow, folder_id, UIDVALIDITY, [fetched(1, first), fetched(2, reply)])
    async with store.sessions() as s:
        thread_id = await s.scalar(select(Message.thread_id).where(Message.id == root))
        assert await s.scalar(select(Message.thread_id).where(Message.id == answer)) == thread_id
    drawn = asyncio.Event()
    release = asyncio.Event()

    async def held(_: int | None) -> None:
        drawn.set()
        await release.wait()

    async def read(uid: int, hold: bool) -> None:
        if hold:
            AFTER_DRAW.set(held)
        async with store.unit(account_id) as uow:
            assert await messages.set_flags(uow, folder_id, UIDVALIDITY, [messages.PlaceFlags(uid, ("\\Seen",), None)])

    holding = asyncio.create_task(read(1, True))
    await drawn.wait()
    second = asyncio.create_task(read(2, False))
    await asyncio.sleep(0.3)
    release.set()
    await asyncio.gather(holding, second)
    async with store.sessions() as s:
        folder = await s.get(Folder, folder_id)
        thread = await s.get(Thread, thread_id)
        assert folder is not None
        assert thread is not None
        assert (folder.total_count, folder.unread_count) == (2, 0)
        assert (thread.message_count, thread.unread_count) == (2, 0)


async def test_orphan_collection_never_deletes_a_message_that_has_a_place(
    store: Store, credential_box: CredentialBox
) -> None:
    # Whatever a stale mark says: deleting the message would take its place along (ON DELETE CASCADE).
    account_id = await new_account(store, credential_box)
    folder_id = await new_folder(store, account_id)
    raw = mail(f"p.{secrets.token_hex(4)}@example.org", "Placed", when=datetime(2026, 11, 1, tzinfo=UTC))
    async with store.unit(account_id) as uow:
        (mid,) = await messages.add(uow, folder_id, UIDVALIDITY, [fetched(1, raw)])
    async with store.sessions() as s, s.begin():
        await s.execute(update(Message).where(Message.id == mid).values(orphaned_at=datetime(2026, 1, 1)))
    async with store.unit(account_id) as uow:
        assert await messages.collect_orphans(uow, before=datetime.now(UTC).replace(tzinfo=None) + timedelta(1)) == 0
    async with store.sessions() as s:
        assert await s.scalar(select(Message.orphaned_at).where(Message.id == mid)) is None  # the mark is cleared
        assert await s.scalar(select(func.count()).select_from(MessagePlace).where(MessagePlace.message_id == mid)) == 1


async def test_a_folder_two_writers_find_gone_is_deleted_once_in_the_log(
    store: Store, credential_box: CredentialBox
) -> None:
    # Discovery (the folder is missing from LIST) and the action executor (the server performed a deleteFolder)
    # can both remove a folder, concurrently: the log must say once that it went.
    account_id = await new_account(store, credential_box)
    folder_id = await new_folder(store, account_id, "Doomed")
    raw = mail(f"g.{secrets.token_hex(4)}@example.org", "Gone", when=datetime(2026, 11, 1, tzinfo=UTC))
    async with store.unit(account_id) as uow:
        await messages.add(uow, folder_id, UIDVALIDITY, [fetched(1, raw)])
    cursor = await newest(store, account_id)
    first_removed = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with store.unit(account_id) as uow:
            await folders.remove(uow, folder_id)
            first_removed.set()
            await release.wait()  # the second writer waits on the folder's lock meanwhile

    async def second() -> None:
        await first_removed.wait()
        async with store.unit(account_id) as uow:
            await folders.remove(uow, folder_id)

    one = asyncio.create_task(first())
    two = asyncio.create_task(second())
    await first_removed.wait()
    await asyncio.sleep(0.3)
    assert not two.done()  # held by the first writer's lock, not deciding on a stale read
    release.set()
    await asyncio.gather(one, two)
    logged = entries(await log_after(store, account_id, cursor))
    assert logged.count((FOLDER, folder_id, DELETE)) == 1, logged
    async with store.unit(account_id) as uow:
        await folders.remove(uow, folder_id)
    assert entries(await log_after(store, account_id, cursor)) == logged


async def test_a_flag_change_no_client_can_see_logs_nothing(store: Store, credential_box: CredentialBox) -> None:
    # schema.aggregates: "the change log carries every visible change and nothing else". \Deleted is not
    # part of any logged state (states.message_states), so setting it must not log a message update.
    account_id = await new_account(store, credential_box)
    folder_id = await new_folder(store, account_id)
    raw = mail(f"d.{secrets.token_hex(4)}@example.org", "Invisible", when=datetime(2026, 11, 1, tzinfo=UTC))
    async with store.unit(account_id) as uow:
        await messages.add(uow, folder_id, UIDVALIDITY, [fetched(1, raw, ("\\Seen",))])
    cursor = await newest(store, account_id)
    async with store.unit(account_id) as uow:
        flags = ("\\Deleted", "\\Seen")
        assert await messages.set_flags(uow, folder_id, UIDVALIDITY, [messages.PlaceFlags(1, flags, None)]) == 1
    assert entries(await log_after(store, account_id, cursor)) == []
    assert uow.last_seq is None


async def test_unchanged_flags_change_nothing_and_log_nothing(store: Store, credential_box: CredentialBox) -> None:
    account_id = await new_account(store, credential_box)
    folder_id = await new_folder(store, account_id)
    raw = mail(f"u.{secrets.token_hex(4)}@example.org", "Same", when=datetime(2026, 11, 1, tzinfo=UTC))
    async with store.unit(account_id) as uow:
        await messages.add(uow, folder_id, UIDVALIDITY, [fetched(1, raw, ("\\Seen",), 3)])
    cursor = await newest(store, account_id)
    async with store.unit(account_id) as uow:
        assert await messages.set_flags(uow, folder_id, UIDVALIDITY, [messages.PlaceFlags(1, ("\\Seen",), 3)]) == 0
    assert uow.last_seq is None
    assert await log_after(store, account_id, cursor) == []


# --- (d) the doorbell -------------------------------------------------------------------------------


async def test_doorbell_carries_the_units_newest_seq_after_commit(
    store: Store, redis: Redis, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    async with subscribed(redis, store, account_id) as pubsub:
        async with store.unit(account_id) as uow:
            await labels.ensure(uow, ["one", "two", "three"])
        assert uow.last_seq is not None
        rung = await next_doorbell(pubsub, timeout=5)
        assert rung == str(uow.last_seq).encode()
        assert uow.last_seq == await newest(store, account_id)
        # Rung after COMMIT: a reader woken by it finds the rows in a fresh session.
        logged = await log_after(store, account_id, uow.last_seq - 3)
        assert [(c.seq, c.object_type, c.op) for c in logged] == [
            (uow.last_seq - 2, LABEL, CREATE),
            (uow.last_seq - 1, LABEL, CREATE),
            (uow.last_seq, LABEL, CREATE),
        ]
        assert await next_doorbell(pubsub, timeout=0.3) is None  # one unit, one ring


async def test_a_unit_without_changes_neither_logs_nor_rings(
    store: Store, redis: Redis, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    async with store.unit(account_id) as uow:
        await labels.ensure(uow, ["existing"])
    before = await newest(store, account_id)
    async with subscribed(redis, store, account_id) as pubsub:
        async with store.unit(account_id) as empty:
            pass
        async with store.unit(account_id) as again:
            assert set(await labels.ensure(again, ["existing"])) == {"existing"}  # found, not created
        assert empty.last_seq is None
        assert again.last_seq is None
        assert await next_doorbell(pubsub, timeout=0.5) is None
        assert await newest(store, account_id) == before
        assert await log_after(store, account_id, before) == []


# --- (e) rollback -----------------------------------------------------------------------------------


async def test_a_rolled_back_unit_logs_nothing_and_leaves_no_rows(
    store: Store, redis: Redis, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    folder_id = await new_folder(store, account_id)
    before = await newest(store, account_id)
    raw = mail(f"r.{secrets.token_hex(4)}@example.org", "Never", when=datetime(2026, 11, 2, tzinfo=UTC))

    async def doomed_unit() -> None:
        async with store.unit(account_id) as uow:
            await labels.ensure(uow, ["doomed"])
            await folders.create(uow, folders.Discovered("Doomed", "/", (), None))
            await messages.add(uow, folder_id, UIDVALIDITY, [fetched(1, raw, ("$Doomed",))])
            units.append(uow)
            raise RuntimeError("server went away")

    units: list[UnitOfWork] = []
    async with subscribed(redis, store, account_id) as pubsub:
        with pytest.raises(RuntimeError, match="server went away"):
            await doomed_unit()
        assert units[0].last_seq is None
        assert await next_doorbell(pubsub, timeout=0.5) is None
    assert await newest(store, account_id) == before
    assert await log_after(store, account_id, before) == []
    async with store.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Label).where(Label.account_id == account_id)) == 0
        assert await s.scalar(select(func.count()).select_from(Folder).where(Folder.account_id == account_id)) == 1
        assert await s.scalar(select(func.count()).select_from(Message).where(Message.account_id == account_id)) == 0
        assert await s.scalar(select(func.count()).select_from(Thread).where(Thread.account_id == account_id)) == 0
        assert (
            await s.scalar(select(func.count()).select_from(MessagePlace).where(MessagePlace.account_id == account_id))
            == 0
        )
        assert await s.scalar(select(MimeBlob.id).where(MimeBlob.sha256 == hashlib.sha256(raw).digest())) is None
        assert (
            await s.scalar(select(func.count()).select_from(ChangeLog).where(ChangeLog.account_id == account_id))
            == before
        )
    # The next unit continues the sequence without a hole.
    async with store.unit(account_id) as uow:
        await labels.ensure(uow, ["after"])
    assert uow.last_seq == before + 1


@pytest.mark.parametrize(
    ("channel", "account"),
    [
        (b"inboxql:mail:doorbell:7", 7),
        ("inboxql:mail:actions:12", 12),
        (b"inboxql:other:doorbell:7", None),  # another deployment's database: not ours
        (b"inboxql:mail:doorbell:x", None),
        (b"inboxql:doorbell:7", None),  # the old, shared name
        (None, None),
    ],
)
def test_doorbells_are_named_after_the_database(channel: object, account: int | None) -> None:
    bells = Doorbells.for_url("mysql+asyncmy://root@127.0.0.1:3306/mail?charset=utf8mb4")
    assert bells.channel(7) == "inboxql:mail:doorbell:7"
    assert bells.account_of(channel) == account


async def test_a_message_placed_by_identity_alone_that_is_gone_meanwhile_is_named_not_written(
    store: Store, credential_box: CredentialBox
) -> None:
    """The folder sync places a known message without its bytes; when the message was deleted since it looked
    (an expunge the write-back finished), add() names it (messages.Unknown) so the sync downloads it."""
    account_id = await new_account(store, credential_box)
    folder_id = await new_folder(store, account_id)
    raw = mail(f"g.{secrets.token_hex(4)}@example.org", "Gone", when=datetime(2026, 11, 2, tzinfo=UTC))
    async with store.unit(account_id) as uow:
        [mid] = await messages.add(uow, folder_id, UIDVALIDITY, [fetched(1, raw)])
    known = fetched(2, raw)
    async with store.unit(account_id) as uow:
        await messages.delete_messages(uow, [mid])
    before = await newest(store, account_id)
    bare = messages.Fetched(uid=2, flags=(), modseq=None, identity=known.identity)
    with pytest.raises(messages.Unknown) as raised:
        async with store.unit(account_id) as uow:
            await messages.add(uow, folder_id, UIDVALIDITY, [bare])
    assert raised.value.identities == {known.identity}
    assert await newest(store, account_id) == before


# --- (f) the write-back queue: actions and outbox entries ---------------------------------------------


async def _one_message(store: Store, account_id: int, folder_id: int) -> tuple[int, int]:
    raw = mail(f"w.{secrets.token_hex(4)}@example.org", "Write-back", when=datetime(2026, 11, 3, tzinfo=UTC))
    async with store.unit(account_id) as uow:
        [mid] = await messages.add(uow, folder_id, UIDVALIDITY, [fetched(1, raw, ("\\Seen",))])
    async with store.sessions() as s:
        thread_id = await s.scalar(select(Message.thread_id).where(Message.id == mid))
    assert thread_id is not None
    return mid, thread_id


async def _action(store: Store, account_id: int, action_id: int) -> Action:
    async with store.sessions() as s:
        [found] = await actions.get(s, [account_id], [action_id])
    return found


async def test_a_queued_action_logs_its_creation_and_its_completion_an_update(
    store: Store, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    folder_id = await new_folder(store, account_id)
    mid, thread_id = await _one_message(store, account_id, folder_id)
    cursor = await newest(store, account_id)

    async with store.unit(account_id) as uow:
        [aid] = await actions.set_flags(uow, [mid], add=["\\Flagged"], remove=[])
    queued = await log_after(store, account_id, cursor)
    # In the mutation's transaction, after the mirror's change it stands for.
    assert entries(queued) == [(THREAD, thread_id, UPDATE), (MESSAGE, mid, UPDATE), (ACTION, aid, CREATE)]
    assert queued[-1].seq == uow.last_seq
    created = state_of(queued, ACTION, aid)
    assert isinstance(created.pop("created_at"), str)
    assert created == {
        "kind": "flags",
        "state": "pending",
        "error": None,
        "message_id": mid,
        "folder_id": None,
        "attempts": 0,
        "finished_at": None,
    }
    cursor = queued[-1].seq

    async with store.unit(account_id) as uow:
        await actions.complete_flags(uow, [await _action(store, account_id, aid)])
    done = await log_after(store, account_id, cursor)
    assert entries(done) == [(ACTION, aid, UPDATE)]
    state = state_of(done, ACTION, aid)
    assert (state["state"], state["error"], state["attempts"]) == ("done", None, 1)
    assert state["finished_at"] is not None
    cursor = done[-1].seq

    # A transient failure: still pending, one attempt more, the reason shown (it is logged in a unit too).
    async with store.unit(account_id) as uow:
        [again] = await actions.set_flags(uow, [mid], add=["$Later"], remove=[])
    cursor = await newest(store, account_id)
    async with store.unit(account_id) as uow:
        await actions.retry_later(uow, await _action(store, account_id, again), 30, "TimeoutError: slow server")
    waiting = await log_after(store, account_id, cursor)
    assert entries(waiting) == [(ACTION, again, UPDATE)]
    state = state_of(waiting, ACTION, again)
    assert (state["state"], state["attempts"], state["error"]) == ("pending", 1, "TimeoutError: slow server")


async def test_a_failed_action_logs_the_undo_then_its_failure_in_one_transaction(
    store: Store, redis: Redis, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    inbox = await new_folder(store, account_id)
    doomed = await new_folder(store, account_id, "Doomed")
    async with store.unit(account_id) as uow:  # selected once, as the folder sync does: a place can be restored
        await folders.set_cursor(uow, inbox, uidvalidity=UIDVALIDITY)
    mid, thread_id = await _one_message(store, account_id, inbox)
    cursor = await newest(store, account_id)
    async with store.unit(account_id) as uow:
        [aid] = await actions.move(uow, [mid], doomed)
    moved = await log_after(store, account_id, cursor)
    assert entries(moved) == [
        (FOLDER, inbox, UPDATE),  # one message fewer
        (FOLDER, doomed, UPDATE),
        (THREAD, thread_id, UPDATE),
        (MESSAGE, mid, UPDATE),
        (ACTION, aid, CREATE),
    ]
    assert state_of(moved, MESSAGE, mid)["folder_ids"] == [doomed]
    assert state_of(moved, ACTION, aid)["folder_id"] == doomed
    cursor = await newest(store, account_id)

    reason = "NO [TRYCREATE] Mailbox doesn't exist: Doomed"
    async with subscribed(redis, store, account_id) as pubsub:
        async with store.unit(account_id) as uow:
            await actions.fail(uow, await _action(store, account_id, aid), reason)
        assert await next_doorbell(pubsub, timeout=5) == str(uow.last_seq).encode()
        assert await next_doorbell(pubsub, timeout=0.3) is None  # one unit, one ring
    failed = await log_after(store, account_id, cursor)
    # The undo of the mirror first, the action's failure last, in one seq range with no one else's entry between.
    assert entries(failed) == [
        (FOLDER, inbox, UPDATE),
        (FOLDER, doomed, UPDATE),
        (THREAD, thread_id, UPDATE),
        (MESSAGE, mid, UPDATE),
        (ACTION, aid, UPDATE),
    ]
    assert [c.seq for c in failed] == list(range(cursor + 1, cursor + 6))
    assert failed[-1].seq == uow.last_seq
    assert len({c.created_at for c in failed}) == 1  # one append, one transaction
    assert state_of(failed, MESSAGE, mid)["folder_ids"] == [inbox]
    assert state_of(failed, FOLDER, doomed)["total_count"] == 0
    action = state_of(failed, ACTION, aid)
    assert (action["state"], action["error"], action["kind"]) == ("failed", reason, "move")
    assert action["finished_at"] is not None


async def test_an_outbox_entry_logs_every_state_it_takes_and_never_its_bytes(
    store: Store, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    async with store.unit(account_id) as uow:
        sent_folder = (await folders.create(uow, folders.Discovered("Sent", "/", ("\\Sent",), "sent"))).id
    draft = Draft(sender=Mailbox("me@example.org"), to=(Mailbox("you@example.org"),), subject="Logged", text="hi")

    async def queue() -> tuple[Outbox, list[Change]]:
        cursor = await newest(store, account_id)
        async with store.unit(account_id) as uow:
            entry = await outbox.queue_draft(uow, draft)
        return entry, await log_after(store, account_id, cursor)

    async def step(write: Callable[[UnitOfWork], Awaitable[object]]) -> dict[str, Any]:
        cursor = await newest(store, account_id)
        async with store.unit(account_id) as uow:
            await write(uow)
        logged = await log_after(store, account_id, cursor)
        assert (OUTBOX, entry.id, UPDATE) in entries(logged)
        return state_of(logged, OUTBOX, entry.id)

    entry, queued = await queue()
    assert entry.mirror_message_id is not None
    # The Sent copy the mirror shows at once is logged before the entry that names it.
    assert entries(queued)[-2:] == [(MESSAGE, entry.mirror_message_id, CREATE), (OUTBOX, entry.id, CREATE)]
    state = state_of(queued, OUTBOX, entry.id)
    assert set(state) == {
        "state",
        "error",
        "smtp_response",
        "send_at",
        "sent_at",
        "recipients",
        "attempts",
        "message_id_header",
        "message_id",
        "replied_message_id",
        "created_at",
    }
    assert state["state"] == "queued"
    assert state["recipients"] == ["you@example.org"]
    assert state["message_id"] == entry.mirror_message_id
    assert b"Logged" not in json.dumps(state).encode()  # neither bytes nor subject: the message is its own object
    assert state_of(queued, MESSAGE, entry.mirror_message_id)["folder_ids"] == [sent_folder]

    assert (await step(lambda uow: outbox.claim(uow, entry)))["state"] == "sending"
    retried = await step(lambda uow: outbox.retry_later(uow, entry, 10, "451 4.3.0 try again"))
    assert (retried["state"], retried["error"], retried["attempts"]) == ("queued", "451 4.3.0 try again", 1)
    assert (await step(lambda uow: outbox.claim(uow, entry)))["state"] == "sending"
    sent = await step(lambda uow: outbox.sent(uow, entry, "250 2.0.0 Ok: queued as 4XyZ"))
    assert (sent["state"], sent["smtp_response"], sent["error"]) == ("sent", "250 2.0.0 Ok: queued as 4XyZ", None)
    assert sent["sent_at"] is not None

    # Cancelled: the entry's update, and its Sent copy leaves the mirror.
    entry, _ = await queue()
    cancelled = await step(lambda uow: outbox.cancel(uow, entry))
    assert (cancelled["state"], cancelled["error"]) == ("cancelled", "cancelled")
    # A claim that finds it cancelled changes and logs nothing.
    cursor = await newest(store, account_id)
    async with store.unit(account_id) as uow:
        assert not await outbox.claim(uow, entry)
    assert uow.last_seq is None
    assert await log_after(store, account_id, cursor) == []

    # Left `sending` by a process that died: uncertain, logged by the process that finds it.
    entry, _ = await queue()
    await step(lambda uow: outbox.claim(uow, entry))
    orphaned = await step(outbox.orphaned_sends)
    assert orphaned["state"] == "uncertain"
    assert "stopped" in orphaned["error"]
