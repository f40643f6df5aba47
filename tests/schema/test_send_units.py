"""The units of a send are small (BENCHMARKS.md, write-back (c)): `sendMessage`'s unit writes the entry and the
mirror's Sent copy without looking up what it made up itself, and inserts the copy's row as one statement; the
executor's claim logs the entry from the row in hand. What both log is what a fresh read of the mirror finds."""

from __future__ import annotations

from mime.compose import Draft, Mailbox
from schema import folders, outbox
from schema.changelog import ObjectType, Op
from schema.crypto import CredentialBox
from schema.models import Outbox
from schema.outbox import OutboxState
from schema.unit import Store
from tests.schema.support import new_account
from tests.schema.test_changelog import log_after, newest
from tests.schema.test_flag_runs import statements
from tests.schema.test_settle import assert_logged_as_stored

DRAFT = Draft(sender=Mailbox("me@example.org"), to=(Mailbox("you@example.org"),), subject="Lunch", text="Friday?")


async def _account_with_sent(store: Store, credential_box: CredentialBox) -> int:
    account_id = await new_account(store, credential_box)
    async with store.unit(account_id) as uow:
        await folders.create(uow, folders.Discovered("Sent", "/", ("\\Sent",), "sent"))
    return account_id


async def test_a_send_takes_seventeen_statements_and_logs_what_it_wrote(
    store: Store, credential_box: CredentialBox
) -> None:
    """The Sent folder; the entry; the copy's thread (its references, the thread and its references written), its
    row (one INSERT, not a bulk command and a read of the id back) and its place; the entry's copy; the settle
    (message, thread, Sent's counts) and the counter. No identity or UID is looked up (the unit made them up), nor
    the entry read back: 22 statements and two bulk commands before."""
    account_id = await _account_with_sent(store, credential_box)
    cursor = await newest(store, account_id)
    with statements(store) as sent:
        async with store.unit(account_id) as uow:
            entry = await outbox.queue_draft(uow, DRAFT)
    assert len(sent) == 17, "\n".join(sent)
    assert [q for q in sent if "messages.identity IN" in q or "FROM outbox" in q] == []
    assert len([q for q in sent if q.startswith("INSERT INTO messages")]) == 1
    logged = await log_after(store, account_id, cursor)
    assert (ObjectType.OUTBOX, entry.id, Op.CREATE) in [(c.object_type, c.object_id, c.op) for c in logged]
    await assert_logged_as_stored(store, logged)


async def test_a_claim_logs_the_entry_without_reading_it_back(store: Store, credential_box: CredentialBox) -> None:
    account_id = await _account_with_sent(store, credential_box)
    async with store.unit(account_id) as uow:
        await outbox.queue_draft(uow, DRAFT)
    async with store.sessions() as s:
        [entry] = await outbox.due(s, account_id)
    cursor = await newest(store, account_id)
    with statements(store) as sent:
        async with store.unit(account_id) as uow:
            assert await outbox.claim(uow, entry)
    # The claim and the counter (3 before: the entry was read back for the log).
    assert len(sent) == 2, "\n".join(sent)
    logged = await log_after(store, account_id, cursor)
    assert [(c.object_type, c.object_id, c.op) for c in logged] == [(ObjectType.OUTBOX, entry.id, Op.UPDATE)]
    assert logged[0].data is not None
    assert (logged[0].data["state"], logged[0].data["attempts"]) == (OutboxState.SENDING.value, 1)
    await assert_logged_as_stored(store, logged)
    async with store.sessions() as s:
        stored = await s.get(Outbox, entry.id)
    assert stored is not None
    assert stored.state == OutboxState.SENDING.value


async def test_an_entry_changed_after_it_was_queued_in_the_same_unit_is_logged_as_stored(
    store: Store, credential_box: CredentialBox
) -> None:
    """The state in hand from the queueing is dropped by a later change of the unit (here: undo send)."""
    account_id = await _account_with_sent(store, credential_box)
    cursor = await newest(store, account_id)
    async with store.unit(account_id) as uow:
        entry = await outbox.queue_draft(uow, DRAFT)
        assert await outbox.cancel(uow, entry)
    logged = await log_after(store, account_id, cursor)
    [state] = [c.data for c in logged if c.object_type is ObjectType.OUTBOX]
    assert state is not None
    assert state["state"] == OutboxState.CANCELLED.value
    await assert_logged_as_stored(store, logged)
