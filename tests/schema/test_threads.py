"""Threading through the write API: JWZ by Message-ID / In-Reply-To / References, subject as a fallback.

Every test makes an account of its own, so threads of other tests cannot join its messages.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from sqlalchemy import select

from mime import parse_message
from schema import changelog, messages
from schema.changelog import Change, ObjectType, Op
from schema.crypto import CredentialBox
from schema.models import Label, Message, Thread
from schema.unit import Store
from tests.schema.support import new_account, new_folder

UIDVALIDITY = 42
NOW = datetime.now(UTC).replace(microsecond=0)


# --- helpers ----------------------------------------------------------------------------------------


def msgid(tag: str) -> str:
    return f"{tag}.{secrets.token_hex(6)}@example.org"


def mail(
    message_id: str,
    subject: str,
    *,
    when: datetime = NOW,
    references: Sequence[str] = (),
    in_reply_to: str | None = None,
    sender: str = "Ann <ann@example.org>",
    to: str = "bob@example.org",
    cc: str | None = None,
) -> bytes:
    lines = [
        f"Message-ID: <{message_id}>",
        f"Date: {format_datetime(when)}",
        f"From: {sender}",
        f"To: {to}",
        f"Subject: {subject}",
    ]
    if cc:
        lines.append(f"Cc: {cc}")
    if references:
        lines.append("References: " + " ".join(f"<{r}>" for r in references))
    if in_reply_to:
        lines.append(f"In-Reply-To: <{in_reply_to}>")
    return ("\r\n".join(lines) + f"\r\n\r\nBody of {subject}.\r\n").encode()


def fetched(uid: int, raw: bytes, flags: tuple[str, ...] = ()) -> messages.Fetched:
    parsed = parse_message(raw)
    return messages.Fetched(
        uid=uid,
        flags=flags,
        modseq=None,
        identity=f"hash:{hashlib.sha256(raw).hexdigest()}",
        internaldate=parsed.date,
        raw=raw,
        parsed=parsed,
    )


class Mailbox:
    """One account with one folder, and a way to add mail to it one unit at a time."""

    def __init__(self, store: Store, account_id: int, folder_id: int) -> None:
        self.store = store
        self.account_id = account_id
        self.folder_id = folder_id
        self.next_uid = 1

    @classmethod
    async def open(cls, store: Store, box: CredentialBox) -> Mailbox:
        account_id = await new_account(store, box)
        return cls(store, account_id, await new_folder(store, account_id))

    async def add(self, *raws: bytes | tuple[bytes, tuple[str, ...]], folder_id: int | None = None) -> list[int]:
        """Add messages in one unit; returns their message ids in order."""
        items = []
        for item in raws:
            raw, flags = (item, ()) if isinstance(item, bytes) else item
            items.append(fetched(self.next_uid, raw, flags))
            self.next_uid += 1
        async with self.store.unit(self.account_id) as uow:
            await messages.add(uow, folder_id or self.folder_id, UIDVALIDITY, items)
        async with self.store.sessions() as s:
            ids = await messages.known_identities(s, self.account_id, [f.identity for f in items])
        return [ids[f.identity] for f in items]

    async def thread_of(self, message_id: int) -> int:
        async with self.store.sessions() as s:
            found = await s.scalar(select(Message.thread_id).where(Message.id == message_id))
        assert found is not None
        return found

    async def thread(self, thread_id: int) -> Thread | None:
        async with self.store.sessions() as s:
            return await s.get(Thread, thread_id)

    async def newest(self) -> int:
        async with self.store.sessions() as s:
            return await changelog.newest_seq(s, self.account_id)

    async def log_after(self, seq: int) -> list[Change]:
        async with self.store.sessions() as s:
            return await changelog.read(s, self.account_id, after=seq)

    async def label_id(self, name: str) -> int:
        async with self.store.sessions() as s:
            found = await s.scalar(select(Label.id).where(Label.account_id == self.account_id, Label.name == name))
        assert found is not None
        return found


def naive(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


# --- references -------------------------------------------------------------------------------------


async def test_a_reply_with_references_joins_its_parents_thread(store: Store, credential_box: CredentialBox) -> None:
    box = await Mailbox.open(store, credential_box)
    parent_id = msgid("parent")
    [parent] = await box.add(mail(parent_id, "Plans"))
    [reply] = await box.add(
        mail(msgid("reply"), "Re: Plans", references=[parent_id], in_reply_to=parent_id, when=NOW + timedelta(1))
    )
    [unrelated] = await box.add(mail(msgid("other"), "Plans"))  # same subject, not a reply: its own thread
    assert await box.thread_of(reply) == await box.thread_of(parent)
    assert await box.thread_of(unrelated) != await box.thread_of(parent)
    thread = await box.thread(await box.thread_of(parent))
    assert thread is not None
    assert thread.message_count == 2


async def test_in_reply_to_alone_joins_the_parent(store: Store, credential_box: CredentialBox) -> None:
    box = await Mailbox.open(store, credential_box)
    parent_id = msgid("parent")
    [parent] = await box.add(mail(parent_id, "Question"))
    [reply] = await box.add(mail(msgid("reply"), "Answer", in_reply_to=parent_id))
    assert await box.thread_of(reply) == await box.thread_of(parent)


async def test_a_reply_before_its_parent_shares_a_thread_with_parent_and_sibling(
    store: Store, credential_box: CredentialBox
) -> None:
    box = await Mailbox.open(store, credential_box)
    parent_id = msgid("parent")
    [first_reply] = await box.add(mail(msgid("r1"), "Re: Trip", references=[parent_id], when=NOW + timedelta(hours=2)))
    [sibling] = await box.add(mail(msgid("r2"), "Re: Trip", in_reply_to=parent_id, when=NOW + timedelta(hours=3)))
    [parent] = await box.add(mail(parent_id, "Trip", when=NOW))
    thread_id = await box.thread_of(parent)
    assert await box.thread_of(first_reply) == thread_id
    assert await box.thread_of(sibling) == thread_id
    thread = await box.thread(thread_id)
    assert thread is not None
    assert thread.message_count == 3
    assert thread.first_message_at == naive(NOW)


async def test_a_reply_before_its_parent_in_one_batch_shares_its_thread(
    store: Store, credential_box: CredentialBox
) -> None:
    box = await Mailbox.open(store, credential_box)
    parent_id = msgid("parent")
    ids = await box.add(
        mail(msgid("r1"), "Re: Batch", references=[parent_id]),
        mail(msgid("r2"), "Re: Batch", references=[parent_id]),
        mail(parent_id, "Batch"),
    )
    assert len({await box.thread_of(m) for m in ids}) == 1


async def test_a_message_linking_two_threads_merges_them(store: Store, credential_box: CredentialBox) -> None:
    box = await Mailbox.open(store, credential_box)
    a_id, b_id = msgid("a"), msgid("b")
    [a] = await box.add(mail(a_id, "Alpha", when=NOW))
    [b] = await box.add(mail(b_id, "Beta", when=NOW + timedelta(minutes=1)))
    ta, tb = await box.thread_of(a), await box.thread_of(b)
    assert ta != tb
    keep, gone = min(ta, tb), max(ta, tb)
    moved = b if gone == tb else a
    cursor = await box.newest()

    [link] = await box.add(mail(msgid("link"), "Re: both", references=[a_id, b_id], when=NOW + timedelta(hours=1)))

    for m in (a, b, link):
        assert await box.thread_of(m) == keep
    assert await box.thread(gone) is None
    kept = await box.thread(keep)
    assert kept is not None
    assert kept.message_count == 3
    logged = await box.log_after(cursor)
    assert [(c.object_type, c.object_id, c.op) for c in logged] == [
        (ObjectType.FOLDER, box.folder_id, Op.UPDATE),
        (ObjectType.THREAD, keep, Op.UPDATE),
        *sorted([(ObjectType.MESSAGE, moved, Op.UPDATE), (ObjectType.MESSAGE, link, Op.CREATE)]),
        (ObjectType.THREAD, gone, Op.DELETE),
    ]
    data = {(c.object_type, c.object_id): c.data for c in logged}
    assert data[(ObjectType.THREAD, gone)] is None
    moved_state = data[(ObjectType.MESSAGE, moved)]
    assert moved_state is not None
    assert moved_state["thread_id"] == keep
    kept_state = data[(ObjectType.THREAD, keep)]
    assert kept_state is not None
    assert kept_state["message_count"] == 3

    # The merged-away thread's references followed it: a late reply to it lands in the kept thread.
    [late] = await box.add(mail(msgid("late"), "Re: Beta", in_reply_to=b_id if moved == b else a_id))
    assert await box.thread_of(late) == keep


# --- subject fallback -------------------------------------------------------------------------------


async def test_a_reply_without_references_joins_a_recent_thread_by_subject(
    store: Store, credential_box: CredentialBox
) -> None:
    box = await Mailbox.open(store, credential_box)
    topic = f"Lunch {secrets.token_hex(3)}"
    [original] = await box.add(mail(msgid("o"), topic, when=NOW - timedelta(days=2)))
    [reply] = await box.add(mail(msgid("re"), f"Re: {topic}", when=NOW))
    [forward] = await box.add(mail(msgid("fw"), f"Fwd: RE: {topic.upper()}", when=NOW))
    assert await box.thread_of(reply) == await box.thread_of(original)
    assert await box.thread_of(forward) == await box.thread_of(original)


async def test_a_reply_without_references_does_not_join_a_thread_older_than_the_window(
    store: Store, credential_box: CredentialBox
) -> None:
    box = await Mailbox.open(store, credential_box)
    topic = f"Budget {secrets.token_hex(3)}"
    [old] = await box.add(mail(msgid("old"), topic, when=NOW - timedelta(days=60)))
    [reply] = await box.add(mail(msgid("re"), f"Re: {topic}", when=NOW))
    assert await box.thread_of(reply) != await box.thread_of(old)


async def test_same_subject_without_reply_prefix_does_not_join_by_subject(
    store: Store, credential_box: CredentialBox
) -> None:
    box = await Mailbox.open(store, credential_box)
    topic = f"Weekly report {secrets.token_hex(3)}"
    [first] = await box.add(mail(msgid("w1"), topic, when=NOW - timedelta(days=1)))
    [second] = await box.add(mail(msgid("w2"), topic, when=NOW))
    assert await box.thread_of(second) != await box.thread_of(first)


# --- aggregates -------------------------------------------------------------------------------------


async def test_thread_aggregates_follow_arrivals_flag_changes_and_removals(
    store: Store, credential_box: CredentialBox
) -> None:
    box = await Mailbox.open(store, credential_box)
    archive = await new_folder(store, box.account_id, "Archive")
    parent_id = msgid("p")
    t0 = NOW - timedelta(hours=5)
    t1 = NOW - timedelta(hours=4)
    [parent] = await box.add(
        (mail(parent_id, "Offsite", when=t0, sender="Ann <ann@example.org>", to="bob@example.org"), ("\\Seen", "Work"))
    )
    [reply] = await box.add(
        mail(
            msgid("r"),
            "Re: Offsite",
            when=t1,
            references=[parent_id],
            sender="Bob <BOB@example.org>",
            to="Ann <ann@example.org>",
            cc="Carol <carol@example.org>",
        )
    )
    tid = await box.thread_of(parent)
    assert await box.thread_of(reply) == tid
    work = await box.label_id("Work")

    thread = await box.thread(tid)
    assert thread is not None
    assert thread.subject == "Offsite"
    assert thread.message_count == 2
    assert thread.unread_count == 1
    assert thread.starred is False
    assert thread.participants == [
        {"name": "Ann", "address": "ann@example.org"},
        {"name": "", "address": "bob@example.org"},
        {"name": "Carol", "address": "carol@example.org"},
    ]
    assert thread.first_message_at == naive(t0)
    assert thread.last_message_at == naive(t1)
    assert thread.folder_ids == [box.folder_id]
    assert thread.label_ids == [work]

    # The reply is read and starred elsewhere, and gets a keyword: unread, starred and labels follow.
    cursor = await box.newest()
    async with store.unit(box.account_id) as uow:
        change = messages.PlaceFlags(2, ("\\Seen", "\\Flagged", "Urgent"), None)
        assert await messages.set_flags(uow, box.folder_id, UIDVALIDITY, [change]) == 1
    urgent = await box.label_id("Urgent")
    thread = await box.thread(tid)
    assert thread is not None
    assert thread.unread_count == 0
    assert thread.starred is True
    assert thread.label_ids == sorted([work, urgent])
    logged = {(c.object_type, c.object_id): c for c in await box.log_after(cursor)}
    assert logged[(ObjectType.LABEL, urgent)].op is Op.CREATE
    thread_entry = logged[(ObjectType.THREAD, tid)]
    assert thread_entry.op is Op.UPDATE
    assert thread_entry.data is not None
    assert thread_entry.data["unread_count"] == 0
    assert thread_entry.data["starred"] is True
    assert thread_entry.data["label_ids"] == sorted([work, urgent])

    # The reply is copied to another folder: the thread is in both.
    async with store.sessions() as s:
        reply_row = await s.get(Message, reply)
    assert reply_row is not None
    async with store.unit(box.account_id) as uow:
        await messages.add(
            uow,
            archive,
            UIDVALIDITY,
            [messages.Fetched(1, ("\\Seen", "\\Flagged", "Urgent"), None, reply_row.identity)],
        )
    thread = await box.thread(tid)
    assert thread is not None
    assert thread.folder_ids == sorted([box.folder_id, archive])

    # The parent is expunged: it no longer counts, nor do its participants, date or keyword.
    async with store.unit(box.account_id) as uow:
        await messages.remove_places(uow, box.folder_id, [1])
    thread = await box.thread(tid)
    assert thread is not None
    assert thread.message_count == 1
    assert thread.unread_count == 0
    assert thread.first_message_at == naive(t1)
    assert thread.last_message_at == naive(t1)
    assert thread.participants == [
        {"name": "Bob", "address": "BOB@example.org"},
        {"name": "Ann", "address": "ann@example.org"},
        {"name": "Carol", "address": "carol@example.org"},
    ]
    assert thread.label_ids == [urgent]
    assert thread.folder_ids == sorted([box.folder_id, archive])

    # The reply is unflagged in one folder but still flagged in the other: still starred.
    async with store.unit(box.account_id) as uow:
        await messages.set_flags(uow, archive, UIDVALIDITY, [messages.PlaceFlags(1, ("\\Seen",), None)])
    thread = await box.thread(tid)
    assert thread is not None
    assert thread.starred is True
    assert thread.label_ids == [urgent]

    # Gone from the inbox too: only the archive holds the thread now, unflagged and without keywords.
    async with store.unit(box.account_id) as uow:
        await messages.remove_places(uow, box.folder_id, [2])
    thread = await box.thread(tid)
    assert thread is not None
    assert thread.folder_ids == [archive]
    assert thread.starred is False
    assert thread.label_ids == []
    assert thread.message_count == 1
