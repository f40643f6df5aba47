"""The settle of a unit of work: the logged states it computes while refreshing (instead of reading them back) and
the folder counts it moves by the places a unit added (instead of counting the folder) equal what the mirror holds
once committed."""

from __future__ import annotations

import asyncio
import secrets
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from sqlalchemy import case, func, select, text

from schema import messages, states
from schema.changelog import Change, Op
from schema.crypto import CredentialBox
from schema.models import Folder, MessagePlace
from schema.unit import Store
from tests.schema.support import new_account, new_folder
from tests.schema.test_changelog import AFTER_DRAW, draw_hooks, fetched, log_after, mail, newest  # noqa: F401 (draw_hooks: a fixture)

UIDVALIDITY = 1700


async def assert_logged_as_stored(store: Store, changes: list[Change]) -> None:
    """Each logged state is the object's state as a fresh read after the commit finds it."""
    assert changes
    async with store.sessions() as s:
        for c in changes:
            if c.op is Op.DELETE:
                continue
            fresh = await states.states(s, c.object_type, [c.object_id])
            assert c.data == fresh[c.object_id], (c.object_type, c.object_id)


async def counts(store: Store, folder_id: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(the folder row's total and unread, the same counted over its places)."""
    async with store.sessions() as s:
        folder = await s.get(Folder, folder_id)
        assert folder is not None
        total, unread = (
            await s.execute(
                select(
                    func.count(), func.coalesce(func.sum(case((MessagePlace.flags.like("%\\\\Seen%"), 0), else_=1)), 0)
                )
                .select_from(MessagePlace)
                .where(MessagePlace.folder_id == folder_id)
            )
        ).one()
        return (folder.total_count, folder.unread_count), (int(total), int(unread))


async def waiting_on_a_lock(store: Store) -> None:
    """Return once a transaction of this database waits for a row lock (another held the row). InnoDB says LOCK
    WAIT for most waits; one for a foreign key's parent row (MariaDB 10.11) shows as a statement that has run for
    seconds, which on this otherwise idle database is that wait."""
    query = text(
        "SELECT COUNT(*) FROM information_schema.processlist p LEFT JOIN information_schema.innodb_trx t"
        " ON p.id = t.trx_mysql_thread_id WHERE p.db = DATABASE() AND p.id <> CONNECTION_ID()"
        " AND (t.trx_state = 'LOCK WAIT' OR (p.command = 'Query' AND p.time >= 2))"
    )
    for _ in range(600):
        async with store.sessions() as s:
            if await s.scalar(query):
                return
        await asyncio.sleep(0.05)
    raise AssertionError("no transaction came to wait for the held one's lock")


def reply(parent: str, subject: str, when: datetime) -> bytes:
    return (
        f"Message-ID: <r.{secrets.token_hex(4)}@example.org>\r\nIn-Reply-To: <{parent}>\r\nReferences: <{parent}>\r\n"
        f"Date: {format_datetime(when)}\r\nFrom: Bob <bob@example.org>\r\nTo: ann@example.org\r\n"
        f"Subject: Re: {subject}\r\n\r\nReply.\r\n"
    ).encode()


async def test_the_logged_states_of_new_and_changed_objects_are_those_stored(
    store: Store, credential_box: CredentialBox
) -> None:
    account_id = await new_account(store, credential_box)
    inbox = await new_folder(store, account_id, "INBOX")
    archive = await new_folder(store, account_id, "Archive")
    when = datetime(2026, 11, 20, 9, 0, 0, 123456, tzinfo=UTC)
    first_id = f"a.{secrets.token_hex(4)}@example.org"
    first = mail(first_id, "Plans", when=when)
    other = mail(f"b.{secrets.token_hex(4)}@example.org", "Other", when=when - timedelta(days=3))
    answer = reply(first_id, "Plans", when + timedelta(hours=2))

    # New messages, one with a keyword (a label) and a star, one a reply in the first one's thread.
    cursor = await newest(store, account_id)
    async with store.unit(account_id) as uow:
        await messages.add(
            uow,
            inbox,
            UIDVALIDITY,
            [fetched(1, first, ("\\Flagged", "$Work")), fetched(2, other, ("\\Seen",)), fetched(3, answer)],
        )
    added = await log_after(store, account_id, cursor)
    await assert_logged_as_stored(store, added)
    assert {c.op for c in added} == {Op.CREATE, Op.UPDATE}
    assert len([c for c in added if c.op is Op.CREATE]) == 6  # the label, two threads, three messages

    # A copy of a known message in a second folder (seen there), and a new one in that folder.
    cursor = added[-1].seq
    later = mail(f"c.{secrets.token_hex(4)}@example.org", "Later", when=when + timedelta(days=1))
    async with store.unit(account_id) as uow:
        await messages.add(uow, archive, UIDVALIDITY, [fetched(8, first, ("\\Seen",)), fetched(9, later)])
    await assert_logged_as_stored(store, await log_after(store, account_id, cursor))

    # Flags change and a place goes: states computed by the refreshes again.
    cursor = await newest(store, account_id)
    async with store.unit(account_id) as uow:
        await messages.set_flags(uow, inbox, UIDVALIDITY, [messages.PlaceFlags(3, ("\\Seen", "$Todo"), None)])
        await messages.remove_places(uow, inbox, [2])
    await assert_logged_as_stored(store, await log_after(store, account_id, cursor))
    for folder_id in (inbox, archive):
        stored, counted = await counts(store, folder_id)
        assert stored == counted


async def test_a_uid_placed_again_counts_the_folder_as_it_is(store: Store, credential_box: CredentialBox) -> None:
    # A UID the mirror holds already, given again (with another message): the place is replaced, not added.
    account_id = await new_account(store, credential_box)
    inbox = await new_folder(store, account_id)
    when = datetime(2026, 11, 1, tzinfo=UTC)
    async with store.unit(account_id) as uow:
        await messages.add(
            uow, inbox, UIDVALIDITY, [fetched(1, mail(f"x.{secrets.token_hex(4)}@e.org", "X", when=when))]
        )
    async with store.unit(account_id) as uow:
        await messages.add(
            uow,
            inbox,
            UIDVALIDITY,
            [
                fetched(1, mail(f"y.{secrets.token_hex(4)}@e.org", "Y", when=when), ("\\Seen",)),
                fetched(2, mail(f"z.{secrets.token_hex(4)}@e.org", "Z", when=when)),
            ],
        )
    stored, counted = await counts(store, inbox)
    assert stored == counted == (2, 1)


@pytest.mark.usefixtures("draw_hooks")
async def test_two_units_adding_to_one_folder_at_once_both_count(store: Store, credential_box: CredentialBox) -> None:
    # The first unit is held after its last statement, before COMMIT, while the second adds to the same folder:
    # the second must move the counts the first committed, not the ones it could have read before.
    account_id = await new_account(store, credential_box)
    inbox = await new_folder(store, account_id)
    when = datetime(2026, 11, 1, tzinfo=UTC)
    drawn = asyncio.Event()
    release = asyncio.Event()

    async def held(_: int | None) -> None:
        drawn.set()
        await release.wait()

    async def add(uid: int, hold: bool) -> None:
        if hold:
            AFTER_DRAW.set(held)
        raw = mail(f"m{uid}.{secrets.token_hex(4)}@example.org", f"M{uid}", when=when)
        async with store.unit(account_id) as uow:
            await messages.add(uow, inbox, UIDVALIDITY, [fetched(uid, raw)])

    holding = asyncio.create_task(add(1, True))
    await drawn.wait()
    second = asyncio.create_task(add(2, False))
    await waiting_on_a_lock(store)  # the second reached the folder's row, which the first holds
    release.set()
    await asyncio.gather(holding, second)
    stored, counted = await counts(store, inbox)
    assert stored == counted == (2, 2)


async def test_a_place_that_appeared_after_the_holders_were_read_is_not_counted_twice(
    store: Store, credential_box: CredentialBox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As when another unit placed the UID between this unit's read of the holders and its INSERT: the read found
    # nothing, the INSERT updated a row. The upsert's row count tells, and the folder is counted in full.
    account_id = await new_account(store, credential_box)
    inbox = await new_folder(store, account_id)
    when = datetime(2026, 11, 1, tzinfo=UTC)
    async with store.unit(account_id) as uow:
        await messages.add(
            uow, inbox, UIDVALIDITY, [fetched(1, mail(f"p.{secrets.token_hex(4)}@e.org", "P", when=when))]
        )

    async def nothing_held(*_: object) -> dict[int, int]:
        return {}

    monkeypatch.setattr(messages, "_holders", nothing_held)
    async with store.unit(account_id) as uow:
        await messages.add(
            uow,
            inbox,
            UIDVALIDITY,
            [
                fetched(1, mail(f"q.{secrets.token_hex(4)}@e.org", "Q", when=when), ("\\Seen",)),
                fetched(2, mail(f"r.{secrets.token_hex(4)}@e.org", "R", when=when)),
            ],
        )
    stored, counted = await counts(store, inbox)
    assert stored == counted == (2, 1)
