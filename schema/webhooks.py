"""Webhooks: an account's change log, POSTed to an HTTP endpoint, signed, in seq order, durably.

A hook keeps a cursor: the newest change-log seq it has been given. Delivery reads the log after the cursor,
and the cursor advances in the same transaction that records the successful attempt in the delivery log, so a
restarted process resumes exactly where the last one stopped.

An attempt takes two short transactions and no lock in between (a receiver may take its time; a row lock held
meanwhile would stall every writer of the hook, and a pooled connection held meanwhile every other delivery):
1. `claim`: lock the hook (``FOR UPDATE SKIP LOCKED``), pick the next event it wants, and write a claim (a token,
   and when it lapses); commit. While the claim holds, no other process attempts the hook.
2. the POST, outside any transaction.
3. `settle`: lock the hook again; if the claim is still ours, log the attempt, move the cursor (on success) or
   the backoff (on failure), drop the claim and prune the delivery log; commit.
A process that dies between 1 and 3 leaves its claim to lapse; then the event is sent again (at-least-once, and
in order: the cursor moves only in 3, only for the claim's own event). A claim that lapsed and was taken over
is not settled by its late first owner: the newer attempt records the outcome.

The HMAC secret is sealed at rest (schema.crypto) and shown to its creator once.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import Select, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schema import changelog
from schema.changelog import Change, ObjectType, Op
from schema.crypto import CredentialBox, Purpose
from schema.models import Account, ChangeSeq, Webhook, WebhookDelivery, table, utcnow

ACTIVE = "active"
DISABLED = "disabled"
SECRET_PREFIX = "whsec_"
ALL = "*"
MAX_EVENTS = 32
MAX_HOOKS_PER_ACCOUNT = 25
PRUNE_BATCH = 100  # delivery-log rows one attempt deletes at most (see prune)


class TooManyHooks(ValueError):
    """An account has as many hooks as it may have."""


class BadEvents(ValueError):
    """An event filter names an object type or operation that does not exist."""


def normalise_events(events: Sequence[str]) -> list[str]:
    """Validated, deduplicated event names: "*", an object type ("message") or type.op ("message.create")."""
    if not events:
        raise BadEvents('name at least one event (or "*")')
    if len(events) > MAX_EVENTS:
        raise BadEvents(f"at most {MAX_EVENTS} events")
    found: list[str] = []
    kinds = {k.value for k in ObjectType}
    ops = {o.value for o in Op}
    for event in events:
        kind, dot, op = event.partition(".")
        if event != ALL and (kind not in kinds or (dot and op not in ops)):
            raise BadEvents(f"unknown event {event[:64]!r}")
        if event not in found:
            found.append(event)
    return [ALL] if ALL in found else found


def wants(events: Sequence[str], change: Change) -> bool:
    return (
        ALL in events or change.object_type.value in events or f"{change.object_type.value}.{change.op.value}" in events
    )


async def create(
    session: AsyncSession, box: CredentialBox, account_id: int, url: str, events: Sequence[str]
) -> tuple[Webhook, str]:
    """A new active hook that starts after the account's current newest change; returns it and its secret."""
    wanted = normalise_events(events)
    if await session.scalar(select(Account.id).where(Account.id == account_id).with_for_update()) is None:
        raise LookupError("no such account")
    if (
        await session.scalar(select(func.count()).where(Webhook.account_id == account_id)) or 0
    ) >= MAX_HOOKS_PER_ACCOUNT:
        raise TooManyHooks(f"an account may have at most {MAX_HOOKS_PER_ACCOUNT} webhooks")
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    hook = Webhook(
        account_id=account_id,
        url=url,
        events=wanted,
        secret=box.seal(secret, Purpose.WEBHOOK),
        cursor=await changelog.newest_seq(session, account_id),
        state=ACTIVE,
        failures=0,
    )
    session.add(hook)
    await session.flush()
    return hook, secret


async def get(session: AsyncSession, hook_id: int, account_ids: Sequence[int] | frozenset[int]) -> Webhook | None:
    hook = await session.get(Webhook, hook_id)
    return hook if hook is not None and hook.account_id in account_ids else None


async def remove(session: AsyncSession, hook_id: int) -> bool:
    result = await session.execute(delete(Webhook).where(Webhook.id == hook_id))
    return bool(getattr(result, "rowcount", 0))


async def enable(session: AsyncSession, hook_id: int) -> None:
    """Re-enable a hook: it resumes at its cursor, with a fresh failure clock."""
    await session.execute(
        update(Webhook)
        .where(Webhook.id == hook_id)
        .values(state=ACTIVE, disabled_reason=None, failing_since=None, failures=0, next_attempt_at=None)
    )


def active() -> Select[int, int, datetime | None, bool, bool]:
    """Every active hook: id, account, end of its backoff, whether its account logged changes after its cursor,
    and whether its last attempt failed (what a deliverer keeps in memory to choose from; a plain read, it waits
    on no writer's lock)."""
    behind = func.coalesce(ChangeSeq.last_seq, 0) > Webhook.cursor
    return (
        select(Webhook.id, Webhook.account_id, Webhook.next_attempt_at, behind, Webhook.failures > 0)
        .outerjoin(ChangeSeq, ChangeSeq.account_id == Webhook.account_id)
        .where(Webhook.state == ACTIVE)
    )


async def hold(session: AsyncSession, hook_id: int) -> Webhook | None:
    """Lock an active hook; None when another transaction has it locked, or it is gone or disabled."""
    return await session.scalar(
        select(Webhook).where(Webhook.id == hook_id, Webhook.state == ACTIVE).with_for_update(skip_locked=True)
    )


@dataclass(frozen=True, slots=True)
class Claim:
    """One attempt, claimed: what to send where, and the token that says the attempt still owns its hook."""

    hook_id: int
    account_id: int
    url: str
    secret: bytes  # sealed (schema.crypto)
    change: Change
    token: str


def busy_until(hook: Webhook, now: datetime) -> datetime | None:
    """When the hook may be attempted again: the end of its backoff or of another attempt's claim (None: now)."""
    ends = [t for t in (hook.next_attempt_at, hook.claimed_until if hook.claim else None) if t is not None and t > now]
    return max(ends, default=None)


async def claim(
    session: AsyncSession, hook_id: int, now: datetime, lease: timedelta
) -> tuple[Webhook | None, Claim | None]:
    """Claim the hook's next event for one attempt (the caller commits, then posts, then `settle`s).

    Returns the hook as locked (None: another transaction has it, or it is gone or disabled) and the claim
    (None: nothing to send, the hook waits (`busy_until`), or its log expired and `next_event` disabled it).
    """
    hook = await hold(session, hook_id)
    if hook is None or busy_until(hook, now) is not None:
        return hook, None
    change = await next_event(session, hook)
    if change is None:
        return hook, None
    hook.claim = secrets.token_hex(16)
    hook.claimed_until = now + lease
    return hook, Claim(hook.id, hook.account_id, hook.url, hook.secret, change, hook.claim)


async def settle(
    session: AsyncSession,
    claimed: Claim,
    *,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
    ok: bool,
    now: datetime,
    retry_in: timedelta,
    disable_after: timedelta,
    keep: int,
    keep_for: timedelta,
) -> Webhook | None:
    """Record the outcome of a claimed attempt (see `record`), end the claim, prune the delivery log (`prune`).

    None, and nothing written, when the claim is no longer ours: the hook was deleted, or the claim lapsed and
    another attempt took the hook over (that one records its own outcome).
    """
    hook = await session.scalar(select(Webhook).where(Webhook.id == claimed.hook_id).with_for_update())
    if hook is None or hook.claim != claimed.token:
        return None
    hook.claim = None
    hook.claimed_until = None
    record(
        session,
        hook,
        claimed.change,
        status_code=status_code,
        error=error,
        duration_ms=duration_ms,
        ok=ok,
        now=now,
        retry_in=retry_in,
        disable_after=disable_after,
    )
    await prune(session, hook.id, keep, now - keep_for)
    return hook


async def prune(session: AsyncSession, hook_id: int, keep: int, before: datetime) -> None:
    """Keep the hook's newest `keep` attempts in its delivery log, and none logged before `before`.

    Run as each attempt is logged (under the hook's lock), so a hook's log holds at most `keep` rows (one row
    goes per row logged). The rows to go are found by a plain read of this hook's part of the (webhook_id, id)
    index and deleted by primary key: a DELETE with a wider predicate may scan, and lock, other hooks' rows
    written at the same time (a deadlock between two hooks' attempts). A log more than `PRUNE_BATCH` over its
    bounds (a lowered setting) shrinks by that much per attempt.
    """
    await session.flush()
    mine = WebhookDelivery.webhook_id == hook_id
    cutoff = await session.scalar(
        select(WebhookDelivery.id).where(mine).order_by(WebhookDelivery.id.desc()).offset(keep).limit(1)
    )
    stale = WebhookDelivery.created_at < before
    doomed = list(
        await session.scalars(
            select(WebhookDelivery.id)
            .where(mine, stale if cutoff is None else or_(stale, WebhookDelivery.id <= cutoff))
            .order_by(WebhookDelivery.id)
            .limit(PRUNE_BATCH)
        )
    )
    if doomed:
        # One statement per row, by primary key equality: even `id IN (...)` may be run as a scan of a small table.
        rows = table(WebhookDelivery)
        await session.execute(delete(rows).where(rows.c.id == bindparam("pk")), [{"pk": pk} for pk in doomed])


async def next_event(session: AsyncSession, hook: Webhook, scan: int = 500) -> Change | None:
    """The first change after the cursor this hook subscribed to; moves the cursor over the ones it did not.

    Seqs are contiguous per account, so a hole after the cursor means the log expired events this hook never
    got: it is disabled and says so, with its cursor past the hole, so re-enabling resumes with what is kept.
    """
    while True:
        changes = await changelog.read(session, hook.account_id, hook.cursor, limit=scan)
        if not changes:
            return None
        if changes[0].seq > hook.cursor + 1:
            lost = f"{hook.cursor + 1}..{changes[0].seq - 1}"
            disable(hook, f"change-log entries {lost} expired before they were delivered", utcnow())
            hook.cursor = changes[0].seq - 1
            return None
        for change in changes:
            if wants(hook.events, change):
                return change
            hook.cursor = change.seq
        await session.flush()


def disable(hook: Webhook, reason: str, now: datetime) -> None:
    hook.state = DISABLED
    hook.disabled_reason = reason
    hook.next_attempt_at = None
    hook.failing_since = hook.failing_since or now


def record(
    session: AsyncSession,
    hook: Webhook,
    change: Change,
    *,
    status_code: int | None,
    error: str | None,
    duration_ms: int,
    ok: bool,
    now: datetime,
    retry_in: timedelta,
    disable_after: timedelta,
) -> None:
    """Log one attempt and move the hook on: the cursor on success, the backoff (or disabling) on failure."""
    session.add(
        WebhookDelivery(
            webhook_id=hook.id,
            first_seq=change.seq,
            last_seq=change.seq,
            attempt=hook.failures + 1,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
            created_at=now,
        )
    )
    if ok:
        hook.cursor = change.seq
        hook.failures = 0
        hook.failing_since = None
        hook.next_attempt_at = None
        return
    hook.failures += 1
    hook.failing_since = hook.failing_since or now
    if now - hook.failing_since >= disable_after:
        failing = int((now - hook.failing_since).total_seconds())
        disable(hook, f"deliveries failed for {failing}s ({hook.failures} attempts; last: {error or status_code})", now)
    else:
        hook.next_attempt_at = now + retry_in


def now() -> datetime:
    return utcnow()


@dataclass(frozen=True, slots=True)
class Health:
    """How a hook is doing, for the operator's views (schema.status): never its secret, nor its URL's query or
    credentials (a receiver may take a token there)."""

    id: int
    account_id: int
    endpoint: str  # scheme://host[:port]/path
    state: str
    failures: int  # consecutive failed attempts of the event at its cursor
    failing_since: datetime | None
    disabled_reason: str | None
    behind: int  # change-log entries after its cursor (those it does not subscribe to included)
    last_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None

    @property
    def failing(self) -> bool:
        return self.state != ACTIVE or self.failing_since is not None


def endpoint_of(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


async def health(session: AsyncSession, account_ids: Sequence[int] | None = None) -> list[Health]:
    """Every hook (of these accounts) with its newest delivery attempt, by account and id: three queries."""
    query = (
        select(Webhook, func.coalesce(ChangeSeq.last_seq, 0))
        .outerjoin(ChangeSeq, ChangeSeq.account_id == Webhook.account_id)
        .order_by(Webhook.account_id, Webhook.id)
    )
    if account_ids is not None:
        query = query.where(Webhook.account_id.in_(list(account_ids)))
    hooks = [(row[0], row[1]) for row in await session.execute(query)]
    if not hooks:
        return []
    newest = (
        select(WebhookDelivery.webhook_id, func.max(WebhookDelivery.id).label("id"))
        .where(WebhookDelivery.webhook_id.in_([h.id for h, _ in hooks]))
        .group_by(WebhookDelivery.webhook_id)
        .subquery()
    )
    last = {
        d.webhook_id: d
        for d in await session.scalars(select(WebhookDelivery).join(newest, WebhookDelivery.id == newest.c.id))
    }
    found = []
    for hook, head in hooks:
        attempt = last.get(hook.id)
        found.append(
            Health(
                id=hook.id,
                account_id=hook.account_id,
                endpoint=endpoint_of(hook.url),
                state=hook.state,
                failures=hook.failures,
                failing_since=hook.failing_since,
                disabled_reason=hook.disabled_reason,
                behind=max(0, int(head) - hook.cursor),
                last_attempt_at=attempt.created_at if attempt is not None else None,
                last_status=attempt.status_code if attempt is not None else None,
                last_error=attempt.error if attempt is not None else None,
            )
        )
    return found


__all__ = [
    "ACTIVE",
    "ALL",
    "DISABLED",
    "BadEvents",
    "Claim",
    "Health",
    "TooManyHooks",
    "active",
    "busy_until",
    "claim",
    "create",
    "disable",
    "enable",
    "endpoint_of",
    "get",
    "health",
    "hold",
    "next_event",
    "normalise_events",
    "prune",
    "record",
    "remove",
    "settle",
    "wants",
]
