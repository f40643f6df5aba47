"""Threading, JWZ-style (on Gmail accounts by X-GM-THRID instead: ThreadKey.gmail_thread): messages that share
any Message-ID (their own, In-Reply-To or References) share a
thread. ``thread_refs`` keeps every Message-ID a thread has seen, including those of messages we do not
have (JWZ's empty containers), so a reply that arrives before its parent still joins its siblings, and a
message that links two threads merges them. The subject is a fallback only for replies that carry no
references, and only within a time window, as JWZ warns that subjects alone join unrelated mail.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select, update

from schema.changelog import ObjectType, Op
from schema.db import upsert
from schema.models import Message, Thread, ThreadRef, table

if TYPE_CHECKING:
    from schema.unit import UnitOfWork

SUBJECT_WINDOW = timedelta(days=14)


@dataclass(frozen=True, slots=True)
class ThreadKey:
    """What threading needs to know of a new message."""

    message_id: str | None
    references: tuple[str, ...]  # References, then In-Reply-To
    subject: str
    normalized_subject: str
    is_reply: bool
    when: datetime
    # Gmail's X-GM-THRID: the thread Gmail put the message in, which wins over references and subjects.
    gmail_thread: int | None = None


def _gmail_ref(thread: int) -> bytes:
    # Kept among the thread's refs under a key no Message-ID hashes to (a Message-ID holds an @).
    return ref_hash(f"x-gm-thrid:{thread}")


def ref_hash(message_id: str) -> bytes:
    return hashlib.md5(message_id.strip().strip("<>").lower().encode(), usedforsecurity=False).digest()


class _Union:
    def __init__(self) -> None:
        self.parent: dict[object, object] = {}

    def find(self, x: object) -> object:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def join(self, a: object, b: object) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


async def assign(uow: UnitOfWork, keys: Sequence[ThreadKey]) -> list[int]:
    """The thread id of each new message, creating, joining and merging threads as needed."""
    s = uow.session
    hashes = [
        [_gmail_ref(k.gmail_thread)]
        if k.gmail_thread is not None
        else [ref_hash(m) for m in ((k.message_id,) if k.message_id else ()) + k.references if m.strip("<> ")]
        for k in keys
    ]
    every = {h for hs in hashes for h in hs}
    known: dict[bytes, int] = {}
    for start in range(0, len(every), 1000):
        part = list(every)[start : start + 1000]
        for h, tid in await s.execute(
            select(ThreadRef.ref_hash, ThreadRef.thread_id).where(
                ThreadRef.account_id == uow.account_id, ThreadRef.ref_hash.in_(part)
            )
        ):
            known[h] = tid

    groups = _Union()
    for i, hs in enumerate(hashes):
        groups.find(("m", i))
        for h in hs:
            groups.join(("m", i), ("h", h))
            if h in known:
                groups.join(("h", h), ("t", known[h]))
    await _subject_fallback(uow, keys, groups)

    members: dict[object, list[int]] = defaultdict(list)
    for i in range(len(keys)):
        members[groups.find(("m", i))].append(i)
    existing: dict[object, set[int]] = defaultdict(set)
    for node in list(groups.parent):
        if isinstance(node, tuple) and node[0] == "t":
            existing[groups.find(node)].add(int(node[1]))

    result = [0] * len(keys)
    fresh: list[object] = []
    for root, idx in members.items():
        tids = existing.get(root)
        if tids:
            keep = min(tids)
            await _merge(uow, keep, sorted(tids - {keep}))
            for i in idx:
                result[i] = keep
            uow.dirty_threads.add(keep)
        else:
            fresh.append(root)
    if fresh:
        rows = []
        for root in fresh:
            first = min(members[root], key=lambda i: keys[i].when)
            rows.append(
                {
                    "account_id": uow.account_id,
                    "subject": keys[first].subject,
                    "normalized_subject": keys[first].normalized_subject[:191],
                    "participants": [],
                    "folder_ids": [],
                    "label_ids": [],
                }
            )
        threads_table = table(Thread)
        created = (
            await s.execute(insert(threads_table).returning(threads_table.c.id, sort_by_parameter_order=True), rows)
        ).scalars()
        for root, tid in zip(fresh, created, strict=True):
            for i in members[root]:
                result[i] = tid
            uow.dirty_threads.add(tid)
            uow.record(ObjectType.THREAD, Op.CREATE, [tid])

    refs = {(h, result[i]) for i, hs in enumerate(hashes) for h in hs}
    if refs:
        await s.execute(
            upsert(table(ThreadRef), "thread_id"),
            [{"account_id": uow.account_id, "ref_hash": h, "thread_id": t} for h, t in refs],
        )
    return result


async def _subject_fallback(uow: UnitOfWork, keys: Sequence[ThreadKey], groups: _Union) -> None:
    lonely = [
        i
        for i, k in enumerate(keys)
        if k.is_reply and not k.references and k.normalized_subject and k.gmail_thread is None
    ]
    if not lonely:
        return
    subjects = {keys[i].normalized_subject[:191] for i in lonely}
    candidates: dict[str, list[tuple[int, datetime | None]]] = defaultdict(list)
    for tid, subj, last in await uow.session.execute(
        select(Thread.id, Thread.normalized_subject, Thread.last_message_at).where(
            Thread.account_id == uow.account_id, Thread.normalized_subject.in_(subjects)
        )
    ):
        candidates[subj].append((tid, last))
    for i in lonely:
        k = keys[i]
        for tid, last in candidates.get(k.normalized_subject[:191], []):
            if last is not None and abs(last - k.when.replace(tzinfo=None)) <= SUBJECT_WINDOW:
                groups.join(("m", i), ("t", tid))
                break
        else:
            for j, other in enumerate(keys):
                if (
                    j != i
                    and other.gmail_thread is None
                    and other.normalized_subject == k.normalized_subject
                    and abs(other.when - k.when) <= SUBJECT_WINDOW
                ):
                    groups.join(("m", i), ("m", j))
                    break


async def _merge(uow: UnitOfWork, keep: int, others: Sequence[int]) -> None:
    """Fold threads into one when a message links them; their messages change thread (logged)."""
    if not others:
        return
    s = uow.session
    moved = list(await s.scalars(select(Message.id).where(Message.thread_id.in_(others))))
    await s.execute(update(Message).where(Message.thread_id.in_(others)).values(thread_id=keep))
    await s.execute(update(ThreadRef).where(ThreadRef.thread_id.in_(others)).values(thread_id=keep))
    await s.execute(delete(Thread).where(Thread.id.in_(others)))
    uow.record(ObjectType.MESSAGE, Op.UPDATE, moved)
    uow.record(ObjectType.THREAD, Op.DELETE, others)
    uow.dirty_threads.difference_update(others)
