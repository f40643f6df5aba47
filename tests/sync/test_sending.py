"""Sending: the outbox through a real Postfix into the real Dovecot, and SMTP faults from a real aiosmtpd.

A reply from A reaches B (and Bcc C) without a Bcc header; B's mirror threads it with the original; A's Sent
copy exists once, the mirror's message keeps its id; the original gets \\Answered on the server.
"""

from __future__ import annotations

import asyncio
import email
import imaplib
from collections.abc import Iterator
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, update

from inboxql.devmail import DovecotServer
from inboxql.devsmtp import PostfixServer
from mime.compose import Draft, Mailbox, reply_headers, reply_subject
from schema import accounts, outbox
from schema.crypto import CredentialBox, Purpose
from schema.models import Account, Folder, Message, MessagePlace, Outbox
from schema.outbox import OutboxState
from schema.unit import Store
from synccore import outbox as sender
from synccore import smtp
from synccore.account import AccountSync, Tuning
from tests.conftest import new_user
from tests.smtp.server import PASSWORD, USERNAME, Certificates, Handler, make_certificates, smtp_server
from tests.sync.support import assert_identical, sync_once


async def _account(
    store: Store, box: CredentialBox, dovecot: DovecotServer, user: str, password: str, port: int
) -> int:
    endpoint = accounts.ImapEndpoint(dovecot.host, dovecot.port, "none", user, str(dovecot.ca_file))
    smtp = accounts.SmtpSettings(dovecot.host, port, "starttls")
    return await accounts.create(store, box, dovecot.address(user), endpoint, password, smtp)


def _imap(dovecot: DovecotServer, user: str, password: str) -> imaplib.IMAP4:
    client = imaplib.IMAP4(dovecot.host, dovecot.port)
    client.login(user, password)
    return client


def _messages(client: imaplib.IMAP4, folder: str) -> list[tuple[set[str], email.message.EmailMessage]]:
    client.select(folder, readonly=True)
    _, data = client.uid("SEARCH", "ALL")
    out = []
    for uid in data[0].split():
        _, parts = client.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
        meta, raw = parts[0]
        flags = set(imaplib.ParseFlags(meta))
        parsed = email.message_from_bytes(raw, policy=default_policy)
        out.append(({f.decode() for f in flags}, parsed))
    return out


async def _drain(store: Store, box: CredentialBox, account_id: int) -> None:
    executor = AccountSync(store, box, account_id, Tuning())._executor()
    try:
        for _ in range(3):  # a send queues \\Answered: the loop inside drain runs it too
            await executor.drain()
    finally:
        await executor.close()


async def _entry(store: Store, entry_id: int) -> Outbox:
    async with store.sessions() as s:
        found = await s.get(Outbox, entry_id)
    assert found is not None
    return found


async def test_a_reply_reaches_its_recipients_once_threaded_answered_and_filed(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, postfix: PostfixServer
) -> None:
    a, b, c = new_user(dovecot), new_user(dovecot), new_user(dovecot)
    original = (
        f"From: B <{dovecot.address(b[0])}>\r\nTo: A <{dovecot.address(a[0])}>\r\nSubject: Lunch on Friday?\r\n"
        f"Message-ID: <original-{b[0]}@inboxql.test>\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\n\r\nShall we?\r\n"
    ).encode()
    dovecot.append(a[0], a[1], "INBOX", [original])
    dovecot.append(b[0], b[1], "Sent", [(original, ("\\Seen",))])
    account_a = await _account(store, credential_box, dovecot, *a, postfix.port)
    account_b = await _account(store, credential_box, dovecot, *b, postfix.port)
    await sync_once(store, credential_box, account_a)
    await sync_once(store, credential_box, account_b)
    async with store.sessions() as s:
        parent = await s.scalar(select(Message).where(Message.account_id == account_a))
    assert parent is not None
    in_reply_to, references = reply_headers(parent.message_id_header, parent.references.split())
    draft = Draft(
        sender=Mailbox(dovecot.address(a[0]), "Ä Sender"),
        to=(Mailbox(dovecot.address(b[0]), "B"),),
        bcc=(Mailbox(dovecot.address(c[0])),),
        subject=reply_subject(parent.subject),
        text="Friday works. — A",
        in_reply_to=in_reply_to,
        references=references,
    )
    async with store.unit(account_a) as uow:
        entry = await outbox.queue_draft(uow, draft, reply_to_message_id=parent.id)
    # At once: the reply is in A's mirror, in Sent, in the original's thread.
    async with store.sessions() as s:
        mirrored = await s.get(Message, entry.mirror_message_id)
        assert mirrored is not None
        assert mirrored.thread_id == parent.thread_id
        sent_folder = await s.scalar(select(Folder.id).where(Folder.account_id == account_a, Folder.role == "sent"))
        assert set(await s.scalars(select(MessagePlace.folder_id).where(MessagePlace.message_id == mirrored.id))) == {
            sent_folder
        }

    await _drain(store, credential_box, account_a)
    sent = await _entry(store, entry.id)
    assert sent.state == OutboxState.SENT.value, sent.error
    assert sent.smtp_response is not None
    assert sent.smtp_response.startswith("250")

    message_id = f"<{sent.message_id_header}>"
    for user, secret in (b, c):
        client = _imap(dovecot, user, secret)
        try:
            for _ in range(50):
                got = [m for _, m in _messages(client, "INBOX") if m["Message-ID"] == message_id]
                if got:
                    break
                await asyncio.sleep(0.1)
        finally:
            client.logout()
        assert len(got) == 1, f"{user} got {len(got)} copies"
        assert got[0]["Bcc"] is None
        assert got[0]["In-Reply-To"] == f"<{parent.message_id_header}>"
    client = _imap(dovecot, *a)
    try:
        filed = [m for _, m in _messages(client, "Sent") if m["Message-ID"] == message_id]
        answered = [
            flags for flags, m in _messages(client, "INBOX") if m["Message-ID"] == f"<{parent.message_id_header}>"
        ]
    finally:
        client.logout()
    assert len(filed) == 1
    assert filed[0]["Bcc"] == dovecot.address(c[0])  # the sender's own copy keeps its Bcc
    assert answered == [answered[0]]
    assert "\\Answered" in answered[0]

    # B's mirror threads the reply with B's copy of the original; A's mirror kept the reply's id.
    await sync_once(store, credential_box, account_b)
    async with store.sessions() as s:
        threads = set(
            await s.scalars(
                select(Message.thread_id).where(
                    Message.account_id == account_b,
                    Message.message_id_header.in_([sent.message_id_header, parent.message_id_header]),
                )
            )
        )
    assert len(threads) == 1
    await sync_once(store, credential_box, account_a)
    async with store.sessions() as s:
        kept = await s.get(Message, entry.mirror_message_id)
        assert kept is not None
        assert kept.answered is False
        places = list(await s.scalars(select(MessagePlace.uid).where(MessagePlace.message_id == kept.id)))
        assert len(places) == 1
        assert places[0] > 0
        assert (await s.get(Message, parent.id)).answered is True  # type: ignore[union-attr]
    await assert_identical(store, credential_box, account_a)


@pytest.fixture
def faulty_smtp(tmp_path: Path) -> Iterator[tuple[Handler, int, Certificates]]:
    """aiosmtpd playing a fault per recipient (tests.smtp.server), with STARTTLS and AUTH as a real one has."""
    handler = Handler(slow_seconds=0.5)
    certificates = make_certificates(tmp_path)
    with smtp_server(handler, starttls=certificates.server_context()) as port:
        yield handler, port, certificates


async def _faulty_account(
    store: Store, box: CredentialBox, dovecot: DovecotServer, smtp: tuple[Handler, int, Certificates]
) -> tuple[int, str]:
    _, port, certificates = smtp
    user, password = new_user(dovecot)
    account_id = await _account(store, box, dovecot, user, password, port)
    async with store.sessions() as s, s.begin():
        await s.execute(
            update(Account)
            .where(Account.id == account_id)
            .values(
                smtp_username=USERNAME,
                smtp_password=box.seal(PASSWORD, Purpose.ACCOUNT),
                tls_ca_file=str(certificates.ca_file),
            )
        )
    await sync_once(store, box, account_id)
    return account_id, dovecot.address(user)


@pytest.mark.parametrize(
    ("recipient", "state"),
    [("nobody", OutboxState.FAILED), ("reject", OutboxState.FAILED), ("vanish", OutboxState.UNCERTAIN)],
)
async def test_a_refused_send_fails_and_leaves_sent_and_a_cut_one_is_uncertain(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    faulty_smtp: tuple[Handler, int, Certificates],
    recipient: str,
    state: OutboxState,
) -> None:
    account_id, address = await _faulty_account(store, credential_box, dovecot, faulty_smtp)
    draft = Draft(sender=Mailbox(address), to=(Mailbox(f"{recipient}@example.test"),), subject="x")
    async with store.unit(account_id) as uow:
        entry = await outbox.queue_draft(uow, draft)
    await _drain(store, credential_box, account_id)
    ended = await _entry(store, entry.id)
    assert ended.state == state.value, ended.error
    assert ended.error is not None
    assert {"nobody": "550", "reject": "554", "vanish": "after the message was sent"}[recipient] in ended.error
    async with store.sessions() as s:
        mirrored = await s.get(Message, entry.mirror_message_id)
    # Not sent: gone from the mirror's Sent. Maybe sent: kept, as the recipient may well have it.
    assert (mirrored is None) == (state is OutboxState.FAILED)
    assert len(faulty_smtp[0].received) <= 1  # never resent
    await sync_once(store, credential_box, account_id)


async def test_a_temporary_refusal_is_retried_later(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    faulty_smtp: tuple[Handler, int, Certificates],
) -> None:
    account_id, address = await _faulty_account(store, credential_box, dovecot, faulty_smtp)
    draft = Draft(sender=Mailbox(address), to=(Mailbox("busy@example.test"),), subject="x")
    async with store.unit(account_id) as uow:
        entry = await outbox.queue_draft(uow, draft)
    await _drain(store, credential_box, account_id)
    waiting = await _entry(store, entry.id)
    assert waiting.state == OutboxState.QUEUED.value
    assert waiting.not_before is not None
    assert waiting.attempts == 1
    assert "450" in (waiting.error or "")


async def test_recipients_refused_for_now_get_the_message_later_and_the_others_once(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    faulty_smtp: tuple[Handler, int, Certificates],
) -> None:
    handler = faulty_smtp[0]
    handler.busy_refusals = 1
    account_id, address = await _faulty_account(store, credential_box, dovecot, faulty_smtp)
    to = (Mailbox("someone@example.test"), Mailbox("busy@example.test"), Mailbox("nobody@example.test"))
    draft = Draft(sender=Mailbox(address), to=to, subject="Minutes")
    async with store.unit(account_id) as uow:
        entry = await outbox.queue_draft(uow, draft)
    await _drain(store, credential_box, account_id)
    first = await _entry(store, entry.id)
    assert first.state == OutboxState.SENT.value
    assert "450" in (first.smtp_response or "")
    assert "550" in (first.smtp_response or "")
    async with store.sessions() as s:
        rows = list(await s.scalars(select(Outbox).where(Outbox.account_id == account_id, Outbox.id != entry.id)))
    [later] = rows  # only busy@ is tried again: nobody@ was refused for good
    assert later.recipients == ["busy@example.test"]
    assert later.state == OutboxState.QUEUED.value
    assert later.not_before is not None
    assert [r.rcpt_tos for r in handler.received] == [["someone@example.test"]]

    async with store.sessions() as s, s.begin():  # the backoff has passed
        await s.execute(update(Outbox).where(Outbox.id == later.id).values(not_before=None))
    await _drain(store, credential_box, account_id)
    assert (await _entry(store, later.id)).state == OutboxState.SENT.value
    assert [r.rcpt_tos for r in handler.received] == [["someone@example.test"], ["busy@example.test"]]
    assert handler.received[0].content == handler.received[1].content  # the same message, one Message-ID
    await sync_once(store, credential_box, account_id)
    async with store.sessions() as s:
        sent = await s.scalar(select(Folder).where(Folder.account_id == account_id, Folder.role == "sent"))
        assert sent is not None
        filed = await s.scalar(select(func.count()).select_from(MessagePlace).where(MessagePlace.folder_id == sent.id))
    assert filed == 1  # one Sent copy, filed by the first entry


async def _hold_the_entry_until_logged_in(
    store: Store, credential_box: CredentialBox, account_id: int, entry_id: int, handler: Handler, then: str | None
) -> asyncio.Task[None]:
    """Lock the entry's row so that the sender's claim waits; wait for the sender's login to succeed meanwhile;
    check that no MAIL FROM came; set the entry's state to `then` (if given) and release the row."""
    async with store.sessions() as holder, holder.begin():
        await holder.execute(select(Outbox.id).where(Outbox.id == entry_id).with_for_update())
        draining = asyncio.create_task(_drain(store, credential_box, account_id))
        async with asyncio.timeout(20):
            while handler.logins == 0:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        assert not draining.done()
        assert handler.senders == []  # logged in, and nothing of the message before the claim
        if then is not None:
            await holder.execute(update(Outbox).where(Outbox.id == entry_id).values(state=then))
    return draining


async def test_the_login_goes_on_while_the_entry_is_claimed_and_the_message_waits_for_the_claim(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    faulty_smtp: tuple[Handler, int, Certificates],
) -> None:
    handler = faulty_smtp[0]
    account_id, address = await _faulty_account(store, credential_box, dovecot, faulty_smtp)
    draft = Draft(sender=Mailbox(address), to=(Mailbox("someone@example.test"),), subject="x")
    async with store.unit(account_id) as uow:
        entry = await outbox.queue_draft(uow, draft)
    draining = await _hold_the_entry_until_logged_in(store, credential_box, account_id, entry.id, handler, None)
    await asyncio.wait_for(draining, 20)
    assert (await _entry(store, entry.id)).state == OutboxState.SENT.value
    assert handler.logins == 1
    assert [r.rcpt_tos for r in handler.received] == [["someone@example.test"]]


async def test_a_session_opened_for_an_entry_cancelled_meanwhile_sends_nothing(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    faulty_smtp: tuple[Handler, int, Certificates],
) -> None:
    handler = faulty_smtp[0]
    account_id, address = await _faulty_account(store, credential_box, dovecot, faulty_smtp)
    draft = Draft(sender=Mailbox(address), to=(Mailbox("someone@example.test"),), subject="x")
    async with store.unit(account_id) as uow:
        entry = await outbox.queue_draft(uow, draft)
    cancelled = OutboxState.CANCELLED.value
    draining = await _hold_the_entry_until_logged_in(store, credential_box, account_id, entry.id, handler, cancelled)
    await asyncio.wait_for(draining, 20)
    assert (await _entry(store, entry.id)).state == cancelled
    assert handler.senders == []
    assert handler.received == []


async def test_a_send_interrupted_by_a_dead_process_becomes_uncertain(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, postfix: PostfixServer
) -> None:
    user, password = new_user(dovecot)
    account_id = await _account(store, credential_box, dovecot, user, password, postfix.port)
    await sync_once(store, credential_box, account_id)
    draft = Draft(sender=Mailbox(dovecot.address(user)), to=(Mailbox(dovecot.address(user)),), subject="x")
    async with store.unit(account_id) as uow:
        entry = await outbox.queue_draft(uow, draft)
    async with store.unit(account_id) as uow:
        assert await outbox.claim(uow, entry)  # what a process does just before it talks to the server
    await _drain(store, credential_box, account_id)  # a new process
    assert (await _entry(store, entry.id)).state == OutboxState.UNCERTAIN.value


async def test_from_the_bell_to_the_smtp_connection_takes_three_reads(
    store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    postfix: PostfixServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A send (BENCHMARKS.md, write-back (c)): the executor woken by its bell reads the action queue (which says
    there is nothing to wait for in the same read), then the due entry and the account's SMTP settings in one
    session, and connects. Before: a second read of the action queue, and the account read in a session of its
    own while the claim was under way."""
    a, b = new_user(dovecot), new_user(dovecot)
    account_a = await _account(store, credential_box, dovecot, *a, postfix.port)
    await sync_once(store, credential_box, account_a)
    executor = AccountSync(store, credential_box, account_a, Tuning())._executor()
    try:
        assert await executor.drain() is None  # a starting sender's look for sends a stop interrupted: done
        draft = Draft(sender=Mailbox(dovecot.address(a[0])), to=(Mailbox(dovecot.address(b[0])),), text="Hi")
        async with store.unit(account_a) as uow:
            entry = await outbox.queue_draft(uow, draft)
        sent: list[str] = []
        at_connect: list[list[str]] = []
        original = smtp.open_session

        async def open_session(*args: Any, **kwargs: Any) -> Any:
            at_connect.append(list(sent))
            return await original(*args, **kwargs)

        def statement(conn: Any, cursor: Any, text: str, *args: Any) -> None:
            sent.append(text)

        monkeypatch.setattr(sender, "open_session", open_session)
        engine = store.engine.sync_engine
        event.listen(engine, "before_cursor_execute", statement)
        try:
            await executor.drain()
        finally:
            event.remove(engine, "before_cursor_execute", statement)
    finally:
        await executor.close()
    # The claim's unit runs meanwhile (its UPDATE may or may not have gone yet): the reads are what count.
    reads = [q.split("FROM ")[1].split()[0] for q in at_connect[0] if q.startswith("SELECT")]
    assert reads == ["actions", "outbox", "accounts"], "\n".join(at_connect[0])
    assert (await _entry(store, entry.id)).state == OutboxState.SENT.value
    client = _imap(dovecot, *b)
    try:
        assert len(_messages(client, "INBOX")) == 1
    finally:
        client.logout()
