"""What every mail mutation shares: read-only tokens refused, ids resolved as reads resolve them, idempotency keys,
and one unit of work per mutation.

```
ReadOnlyTokens (schema extension)   a read-only token's mutation: FORBIDDEN before any resolver runs
write(info, name, key, plan)
  key given and stored?             the stored result (same mutation), BAD_USER_INPUT (another mutation)
  plan()                            validate, resolve ids (NOT_FOUND for any id the token does not grant)
  store.unit(account)               the key's row (first), the change, its actions, the change log: one commit
                                    on the account's shard (run again when InnoDB chose it as a deadlock's loser)
  context.written()                 the payload reads what was just committed
```

A result is a small JSON object of ids (the actions queued, the objects touched): the payload reads the objects
through it, and a retry with the same key gets the same ids, read again (the actions' current states).

Over several shards a key is kept on the shard of the account its mutation wrote, so a retry looks for it on
each shard; the same key sent for accounts of two shards at the same time is not seen as taken (one key, one
account, is what clients send).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

from sqlalchemy import Executable, func, select
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from gateway.errors import BadUserInput, Forbidden, not_found
from gateway.graphql.context import Info
from gateway.heap import collector_paused
from gateway.ids import from_global, pk_of
from schema import idempotency
from schema.actions import MAX_IDS, Refused
from schema.db import ids_in
from schema.models import Folder, Message, MutationKey, Thread, utcnow
from schema.retry import retry_deadlocks
from schema.shards import shard_of
from schema.unit import UnitOfWork

MAX_KEY = 128
READ_ONLY = "this token is read-only: it may not run mutations"

Result = dict[str, Any]
Work = Callable[[UnitOfWork], Awaitable[Result]]


class ReadOnlyTokens(SchemaExtension):
    """Every mutation (mail, folders, webhooks) is FORBIDDEN to a read-only token, before any argument is looked
    at: one check for the whole Mutation type, so a new mutation cannot forget it."""

    def on_execute(self) -> Iterator[None]:
        ec = self.execution_context
        viewer = getattr(ec.context, "viewer", None)
        if viewer is not None and viewer.read_only and ec.graphql_document is not None:
            try:
                mutation = ec.operation_type is OperationType.MUTATION
            except RuntimeError:  # no such operation: validation reports it
                mutation = False
            if mutation:
                raise Forbidden(READ_ONLY)
        yield


def check_key(key: str) -> None:
    if not 0 < len(key) <= MAX_KEY or not key.isascii() or not key.isprintable():
        raise BadUserInput(f"an idempotencyKey is 1 to {MAX_KEY} printable ASCII characters")


async def _stored(info: Info, token_id: int, key: str, mutation: str) -> Result | None:
    """The reply kept under this key. A key is kept on the shard of the account it wrote (in the same transaction
    as the write), so with several shards each is asked, shard 0 first."""
    row = None
    for store in info.context.services.stores.values():
        async with store.sessions() as session:
            row = await session.get(MutationKey, (token_id, key))
        if row is not None:
            break
    if row is None or idempotency.expired(row):
        return None
    if row.mutation != mutation:
        raise BadUserInput(f"this idempotencyKey was used for {row.mutation}: use a new key for another mutation")
    return row.result


async def write(info: Info, mutation: str, key: str | None, plan: Callable[[], Awaitable[tuple[int, Work]]]) -> Result:
    """Run one mutation: `plan` validates and resolves (raising before anything is written) and names the account
    and the work; the work runs in a unit of work of that account, with the key's row when a key is given."""
    viewer = info.context.writer
    if key is not None:
        check_key(key)
        stored = await _stored(info, viewer.token_id, key, mutation)
        if stored is not None:
            return stored
    account_id, work = await plan()

    async def unit() -> Result:
        async with info.context.services.store_of(account_id).unit(account_id) as uow:
            row = None
            if key is not None:
                # The key's row first: a concurrent request with the same key waits on it before it has changed
                # anything, then finds the key taken. (Taken last, the two requests' changes deadlock first.)
                await idempotency.forget(uow.session, viewer.token_id, key)
                row = MutationKey(token_id=viewer.token_id, key=key, mutation=mutation, result={}, created_at=utcnow())
                uow.session.add(row)
                await uow.session.flush()
            result = await work(uow)
            if row is not None:
                row.result = result
                await uow.session.flush()
        return result

    try:
        # The unit locks places and folders that the sync process and other mutations lock too, in their own
        # order: InnoDB picks a loser, which is rolled back whole and runs again.
        with collector_paused():  # gateway.heap says why
            result = await retry_deadlocks(unit)
    except Refused as exc:
        raise BadUserInput(str(exc)) from None
    except IntegrityError:
        # A concurrent request with the same key committed first: it did the work, we did nothing.
        stored = await _stored(info, viewer.token_id, key, mutation) if key is not None else None
        if stored is None:
            raise BadUserInput("a concurrent change conflicts with this one: read again and retry") from None
        return stored
    info.context.written()
    return result


# -- resolving ids: exactly as reads do, NOT_FOUND for anything the token does not grant ----------------------


async def on_shards(info: Info, pks: Sequence[int], stmt: Callable[[list[int]], Executable]) -> list[Row[Any]]:
    """The rows of `stmt(ids)` for these ids, each group read on the shard its ids name (one statement on a
    single server)."""
    db = info.context.db
    if not db.sharded:
        return list(await db.rows(stmt(list(pks))))
    groups: dict[int, list[int]] = {}
    for pk in pks:
        groups.setdefault(shard_of(pk), []).append(pk)
    found: list[Row[Any]] = []
    for shard, part in sorted(groups.items()):
        found += await db.rows(stmt(part), shard=shard)
    return found


def _unique(values: Sequence[int]) -> list[int]:
    return list(dict.fromkeys(values))


async def messages_of(info: Info, ids: Sequence[str]) -> tuple[int, list[int]]:
    """(account, message ids) of global Message and Thread ids (a thread: all its messages, oldest first).

    One id the token does not grant (or that does not exist) makes the whole mutation NOT_FOUND; the ids must
    all be of one account (a mutation is one transaction of one account)."""
    if not ids:
        raise BadUserInput("ids must name at least one message or thread")
    if len(ids) > MAX_IDS:
        raise BadUserInput(f"at most {MAX_IDS} ids per mutation")
    accounts = sorted(info.context.account_ids)
    message_pks: list[int] = []
    thread_pks: list[int] = []
    for gid in ids:
        kind, pk = from_global(gid)
        if kind == "Message":
            message_pks.append(pk)
        elif kind == "Thread":
            thread_pks.append(pk)
        else:
            raise BadUserInput("ids must be ids of messages or threads")
    db = info.context.db
    owners: dict[int, int] = {}
    if message_pks:
        rows = await on_shards(
            info,
            message_pks,
            lambda pks: select(Message.id, Message.account_id).where(
                ids_in(Message.id, pks), Message.account_id.in_(accounts)
            ),
        )
        owners.update({r.id: r.account_id for r in rows})
        if any(pk not in owners for pk in message_pks):
            raise not_found("Message")
    found = list(message_pks)
    if thread_pks:
        rows = await on_shards(
            info,
            thread_pks,
            lambda pks: select(Thread.id, Thread.account_id).where(
                ids_in(Thread.id, pks), Thread.account_id.in_(accounts)
            ),
        )
        thread_owner = {r.id: r.account_id for r in rows}
        if any(pk not in thread_owner for pk in thread_pks):
            raise not_found("Thread")
        members = await db.rows(
            select(Message.id, Message.account_id)
            .where(ids_in(Message.thread_id, thread_pks), Message.orphaned_at.is_(None))
            .order_by(func.coalesce(Message.date, Message.received_at), Message.id)
            .limit(MAX_IDS + 1),
            shard=shard_of(thread_pks[0]),  # the threads were found on one account's shard (else refused below)
        )
        owners.update({r.id: r.account_id for r in members})
        owners.update({-t: a for t, a in thread_owner.items()})  # a thread without messages still names its account
        found += [r.id for r in members]
    found = _unique(found)
    if len(found) > MAX_IDS:
        raise BadUserInput(f"at most {MAX_IDS} messages per mutation (threads count their messages)")
    involved = set(owners.values())
    if len(involved) != 1:
        raise BadUserInput("the ids must all be of one account")
    return involved.pop(), found


async def folder_of(info: Info, gid: str, account_id: int | None = None) -> Row[Any]:
    """A folder the token grants (not one being deleted), as a row; NOT_FOUND otherwise. With `account_id`, it
    must be that account's (BAD_USER_INPUT for a folder of another account of the same token)."""
    pk = pk_of(gid, "Folder")
    row = (
        await info.context.db.rows(
            select(Folder.__table__).where(
                Folder.id == pk,
                Folder.account_id.in_(sorted(info.context.account_ids)),
                Folder.sync_state != "deleting",
            ),
            shard=shard_of(pk),
        )
    )[:1]
    if not row:
        raise not_found("Folder")
    if account_id is not None and row[0].account_id != account_id:
        raise BadUserInput("the folder belongs to another account than the messages")
    return row[0]


async def folder_with_role(info: Info, account_id: int, role: str) -> int:
    """The account's folder of a special-use role (inbox, archive, trash, ...); NOT_FOUND when it has none."""
    found = await info.context.db.scalar(
        select(Folder.id)
        .where(Folder.account_id == account_id, Folder.role == role.lower(), Folder.sync_state != "deleting")
        .order_by(Folder.id)
        .limit(1),
        shard=shard_of(account_id),
    )
    if found is None:
        raise not_found("Folder")
    return int(found)
