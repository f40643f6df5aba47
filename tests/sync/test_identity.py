"""A message keeps its id while it exists, whatever the server starts (or stops) offering as ids of its own."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema.changelog import ObjectType, Op
from schema.crypto import CredentialBox
from schema.models import Account, ChangeLog, Message
from schema.unit import Store
from tests.imapproxy import ImapProxy
from tests.sync.support import add_account, assert_identical, connect, fold_log, mirror_objects, sync_once


async def _ids(store: Store, account_id: int) -> dict[str, int]:
    async with store.sessions() as s:
        rows = await s.execute(select(Message.identity, Message.id).where(Message.account_id == account_id))
        return {identity: mid for identity, mid in rows}


async def _last_seq(store: Store, account_id: int) -> int:
    async with store.sessions() as s:
        found = await s.scalar(select(func.max(ChangeLog.seq)).where(ChangeLog.account_id == account_id))
    return found or 0


async def _deleted_since(store: Store, account_id: int, seq: int) -> list[int]:
    async with store.sessions() as s:
        return list(
            await s.scalars(
                select(ChangeLog.object_id).where(
                    ChangeLog.account_id == account_id,
                    ChangeLog.seq > seq,
                    ChangeLog.object_type == ObjectType.MESSAGE.value,
                    ChangeLog.op == Op.DELETE.value,
                )
            )
        )


async def _mode(store: Store, account_id: int) -> str | None:
    async with store.sessions() as s:
        found: str | None = await s.scalar(select(Account.identity_mode).where(Account.id == account_id))
    return found


async def _move_some_and_add(dovecot: DovecotServer, user: str, password: str) -> None:
    """What makes the sync match messages by identity: moves between folders, and new mail beside them."""
    other = await connect(dovecot, user, password)
    await other.select("INBOX")
    await other.uid_move((await other.uid_search("ALL"))[:5], "Archive")
    for raw in generate(2, seed=62):
        await other.append("INBOX", raw)
    await other.logout()


@pytest.mark.parametrize("first", ["xguid", "hash"])
async def test_a_server_that_starts_offering_objectid_keeps_every_id(
    first: str, store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(20, seed=61)))
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        proxy.hide_identity = first == "hash"
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        await sync_once(store, credential_box, account_id)
        before = await _ids(store, account_id)
        seq = await _last_seq(store, account_id)

        # The server is upgraded: X-GUID answered again, and OBJECTID (RFC 8474) advertised with its EMAILID.
        proxy.hide_identity = False
        proxy.offer_objectid = True
        await _move_some_and_add(dovecot, user, password)
        await sync_once(store, credential_box, account_id)

        after = await _ids(store, account_id)
        assert {identity: after.get(identity) for identity in before} == before
        assert len(after) == len(before) + 2
        assert await _deleted_since(store, account_id, seq) == []
        assert await _mode(store, account_id) == first
        await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)


async def test_a_server_that_stops_giving_x_guid_rekeys_messages_by_content(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    user, password = mail_user
    dovecot.append(user, password, "INBOX", list(generate(20, seed=63)))
    async with ImapProxy(dovecot.host, dovecot.port) as proxy:
        account_id = await add_account(store, credential_box, dovecot, user, password, via=proxy)
        await sync_once(store, credential_box, account_id)
        before = set((await _ids(store, account_id)).values())
        seq = await _last_seq(store, account_id)

        proxy.hide_identity = True  # the mailbox moved to a server without ids of its own
        await _move_some_and_add(dovecot, user, password)
        await sync_once(store, credential_box, account_id)

        after = await _ids(store, account_id)
        assert before <= set(after.values())
        assert len(after) == len(before) + 2
        assert all(identity.startswith("sha:") for identity in after)
        assert await _deleted_since(store, account_id, seq) == []
        assert await _mode(store, account_id) == "hash"
        await assert_identical(store, credential_box, account_id)
    assert await fold_log(store, account_id) == await mirror_objects(store, account_id)
