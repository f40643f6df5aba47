"""Pure decisions of the folder sync: no I/O, tested with tables."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


class SyncError(Exception):
    """The server answered something the sync cannot work with."""


class FolderGone(SyncError):
    """The folder was deleted (here or on the server) while it was being synced."""


# RFC 3501 §2.3.2: \Recent is a session flag, never stored or compared.
_SESSION_FLAGS = {"\\recent"}


def clean_flags(flags: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted({f for f in flags if f.lower() not in _SESSION_FLAGS}))


def flags_text(flags: Iterable[str]) -> str:
    return " ".join(clean_flags(flags))


def uidvalidity_changed(stored: int | None, reported: int) -> bool:
    # RFC 3501 §2.3.1.1: UIDs hold only under one UIDVALIDITY.
    return stored is not None and stored != reported


def nothing_changed(
    stored_modseq: int | None,
    stored_uidnext: int | None,
    modseq: int | None,
    uidnext: int | None,
    exists: int,
    local_count: int,
) -> bool:
    """CONDSTORE's cheapest answer: same HIGHESTMODSEQ, same UIDNEXT and as many messages as we hold."""
    return (
        stored_modseq is not None
        and stored_modseq == modseq
        and stored_uidnext is not None
        and stored_uidnext == uidnext
        and exists == local_count
    )


# What STATUS (RFC 3501 §6.3.10, HIGHESTMODSEQ from RFC 7162 §3.1.8) is asked of a followed folder before a pass
# selects it (synccore.account: AccountSync._unchanged).
STATUS_ITEMS = ("MESSAGES", "UIDNEXT", "UIDVALIDITY", "HIGHESTMODSEQ")


def status_unchanged(
    uidvalidity: int | None,
    uidnext: int | None,
    highestmodseq: int | None,
    server_count: int | None,
    held: int,
    status: Mapping[str, int],
) -> bool:
    """Whether a folder's STATUS shows it as its last completed sync left it, so that selecting it would end in
    `nothing_changed`: the same UIDVALIDITY (which SELECT checks first), HIGHESTMODSEQ (every flag change, expunge and
    arrival raises it), UIDNEXT (every arrival raises it) and message count as the mirror recorded (the server's count
    at that sync, `server_count`) and holds (`held`, the places under that UIDVALIDITY).

    An answer without one of the items (a server that leaves HIGHESTMODSEQ out), a HIGHESTMODSEQ of 0 (a mailbox without
    persistent mod-sequences, RFC 7162 §3.1.2.2) or a cursor the mirror does not know in full is never unchanged."""
    if any(item not in status for item in STATUS_ITEMS):
        return False
    return (
        uidvalidity is not None
        and status["UIDVALIDITY"] == uidvalidity
        and bool(highestmodseq)
        and server_count == status["MESSAGES"]
        and nothing_changed(
            highestmodseq, uidnext, status["HIGHESTMODSEQ"], status["UIDNEXT"], status["MESSAGES"], held
        )
    )


@dataclass(slots=True)
class ReconcilePlan:
    new: list[int] = field(default_factory=list)  # UIDs to place (newest first)
    removed: list[int] = field(default_factory=list)  # UIDs gone from the server
    flag_changes: list[int] = field(default_factory=list)  # UIDs whose flags differ


def plan_reconcile(
    local: Mapping[int, tuple[str, str]],
    remote: Mapping[int, tuple[str, str | None]],
) -> ReconcilePlan:
    """Compare places (uid -> (flags, identity)) with the server's listing (uid -> (flags, identity|None)).

    A UID whose identity differs from what we hold is a different message (the server broke the UID
    promise, or a bug of ours): it is removed and placed again.
    """
    plan = ReconcilePlan()
    for uid, (flags, identity) in local.items():
        seen = remote.get(uid)
        if seen is None:
            plan.removed.append(uid)
        elif seen[1] is not None and seen[1] != identity:
            plan.removed.append(uid)
            plan.new.append(uid)
        elif seen[0] != flags:
            plan.flag_changes.append(uid)
    plan.new.extend(uid for uid in remote if uid not in local)
    plan.new.sort(reverse=True)
    plan.removed.sort()
    plan.flag_changes.sort()
    return plan


def plan_batches(sizes: Sequence[tuple[int, int | None]], budget: int, most: int) -> list[list[int]]:
    """Cut UIDs (in the order given, with their RFC822.SIZE) into download batches of at most `budget` bytes and
    `most` messages; a message larger than the budget is a batch of its own. A size the server did not report
    counts as nothing, so such messages are bounded by count alone.

    Sized by bytes, a batch takes about as long on a given link whether it holds mail of 5 KB or attachments of
    20 MB, and the three batches in flight (downloading, parsing, writing) hold a bounded amount of memory.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    held = 0
    for uid, size in sizes:
        size = size or 0
        if current and (held + size > budget or len(current) >= most):
            batches.append(current)
            current, held = [], 0
        current.append(uid)
        held += size
    if current:
        batches.append(current)
    return batches


def too_large(size: int | None, limit: int) -> bool:
    """Over the size the sync downloads (RFC822.SIZE, known from the listing before any body is fetched)."""
    return size is not None and size > limit
