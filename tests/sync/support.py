"""Helpers of the sync tests: accounts on the test Dovecot, a second IMAP connection, the log folded."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import func, select

from inboxql.devmail import DovecotServer
from schema import accounts, states
from schema.changelog import ObjectType, Op
from schema.crypto import CredentialBox
from schema.models import Account, Action, ChangeLog, Folder, Label, Message, Outbox, Thread
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.imap import ImapClient
from synccore.verify import verify
from tests.imapproxy import ImapProxy


async def add_account(
    store: Store, box: CredentialBox, dovecot: DovecotServer, user: str, password: str, via: ImapProxy | None = None
) -> int:
    """An account on the test Dovecot, reached directly or through `via` (tests.imapproxy)."""
    host, port = (via.host, via.port) if via is not None else (dovecot.host, dovecot.port)
    endpoint = accounts.ImapEndpoint(host, port, "none", user)
    return await accounts.create(store, box, f"{user}@example.test", endpoint, password)


async def assert_identities(store: Store, account_id: int, via: ImapProxy | None) -> None:
    """Every message's identity is of the kind the route gives: Dovecot's X-GUID, or the content hash where a proxy
    hides it (so a test run through the proxy did exercise identity by content)."""
    expected = "sha:" if via is not None and via.hide_identity else "guid:"
    async with store.sessions() as s:
        found = list(await s.scalars(select(Message.identity).where(Message.account_id == account_id)))
    assert found, "no messages"
    assert all(i.startswith(expected) for i in found), found[:5]


async def connect(dovecot: DovecotServer, user: str, password: str) -> ImapClient:
    client = ImapClient(timeout=30)
    await client.connect(dovecot.host, dovecot.port, security="none")
    await client.login(user, password)
    return client


async def sync_once(store: Store, box: CredentialBox, account_id: int) -> None:
    await AccountSync(store, box, account_id, Tuning(poll_interval=0.2)).run_once()


async def wait_for_messages(store: Store, account_id: int, count: int, timeout: float = 30) -> None:
    """Until the account's mirror holds `count` messages (TimeoutError after `timeout` seconds)."""
    async with asyncio.timeout(timeout):
        while True:
            async with store.sessions() as s:
                found = await s.scalar(
                    select(func.count()).select_from(Message).where(Message.account_id == account_id)
                )
            if found == count:
                return
            await asyncio.sleep(0.01)


async def assert_identical(store: Store, box: CredentialBox, account_id: int) -> None:
    diffs = await verify(store, box, account_id)
    assert diffs == [], "\n".join(diffs[:40])


_TABLES: dict[ObjectType, Any] = {
    ObjectType.ACCOUNT: Account,
    ObjectType.FOLDER: Folder,
    ObjectType.LABEL: Label,
    ObjectType.THREAD: Thread,
    ObjectType.MESSAGE: Message,
    ObjectType.OUTBOX: Outbox,
    ObjectType.ACTION: Action,
}


async def fold_log(store: Store, account_id: int) -> dict[tuple[str, int], dict[str, Any]]:
    """Replay the change log from its start: the objects it says exist, with their last logged state."""
    objects: dict[tuple[str, int], dict[str, Any]] = {}
    async with store.sessions() as s:
        rows = await s.execute(
            select(ChangeLog.seq, ChangeLog.object_type, ChangeLog.object_id, ChangeLog.op, ChangeLog.data)
            .where(ChangeLog.account_id == account_id)
            .order_by(ChangeLog.seq)
        )
        expected_seq = 1
        deleted: set[tuple[str, int]] = set()
        for seq, kind, oid, op, data in rows:
            assert seq == expected_seq, f"gap in the log at {expected_seq}"
            expected_seq += 1
            key = (kind, oid)
            if op == Op.DELETE:
                assert key not in deleted, f"second delete of {key} (seq {seq})"
                assert key in objects, f"delete of {key} that the log never created"
                del objects[key]
                deleted.add(key)
            elif op == Op.CREATE:
                assert key not in objects, f"second create of {key}"
                objects[key] = data
            else:
                assert key in objects, f"update of {key} that the log never created"
                objects[key] = data
    return objects


async def mirror_objects(store: Store, account_id: int) -> dict[tuple[str, int], dict[str, Any]]:
    """Every object of the account the log tracks (the mirror's, and its actions and outbox entries), in its
    logged form."""
    assert set(_TABLES) == set(ObjectType), "a kind of object the log tracks that this fold leaves out"
    out: dict[tuple[str, int], dict[str, Any]] = {}
    async with store.sessions() as s:
        for kind, table in _TABLES.items():
            column = table.id if kind is ObjectType.ACCOUNT else table.account_id
            ids = list(await s.scalars(select(table.id).where(column == account_id)))
            for oid, state in (await states.states(s, kind, ids)).items():
                out[(kind.value, oid)] = state
    return out
