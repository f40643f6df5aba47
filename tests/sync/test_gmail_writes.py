"""Sending and drafts on Gmail accounts, against the Gmail-dialect server (tests/gmailserver.py) and a submission
server that files what it sends the way Gmail's does (tests/gmailsubmission.py).

Gmail keeps a message once, in All Mail, and its folders are labels: a sent message is filed by Gmail's own SMTP
(an APPEND of ours would be a second copy), and a draft APPENDed to [Gmail]/Drafts is a message in All Mail with
the \\Draft label. Either way the mirror ends with the message once, its real place in All Mail and its label
folders as views (schema.gmail), and `verify` identical.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from sqlalchemy import select

from mime.compose import Draft, Mailbox
from schema import accounts, actions, drafts, outbox
from schema.crypto import CredentialBox
from schema.gmail import VIEW_UIDVALIDITY
from schema.models import Action, Folder, Message, MessagePlace
from schema.outbox import OutboxState
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from tests.gmailserver import GmailServer
from tests.gmailstore import ALL, GmailStore, Mail
from tests.gmailsubmission import SENT, GmailSubmission
from tests.smtp.server import PASSWORD as SMTP_PASSWORD
from tests.smtp.server import USERNAME as SMTP_USERNAME
from tests.smtp.server import make_certificates, smtp_server
from tests.sync.gmail_mailbox import seed
from tests.sync.support import assert_identical, sync_once

USER, PASSWORD = "me@gmail.test", "secret"
DRAFTS = "[Gmail]/Drafts"


@dataclass
class GmailAccount:
    server: GmailServer
    submission: GmailSubmission
    store: Store
    box: CredentialBox
    account_id: int

    @property
    def mail(self) -> GmailStore:
        return self.server.store

    def on_server(self, message_id: str) -> list[Mail]:
        """Gmail's messages that carry this Message-ID (each is stored once, whatever its labels)."""
        return [m for m in self.mail.mails.values() if m.message_id == f"<{message_id}>"]

    async def sync(self) -> None:
        await sync_once(self.store, self.box, self.account_id)

    async def drain(self) -> None:
        executor = AccountSync(self.store, self.box, self.account_id, Tuning())._executor()
        try:
            await executor.drain()
        finally:
            await executor.close()

    async def folder(self, name: str) -> int:
        async with self.store.sessions() as s:
            found = await s.scalar(select(Folder.id).where(Folder.account_id == self.account_id, Folder.name == name))
        assert found is not None, name
        return int(found)

    async def places(self, message_id: int) -> set[tuple[str, bool]]:
        """(folder name, derived) of each place of the message."""
        async with self.store.sessions() as s:
            rows = await s.execute(
                select(Folder.name, MessagePlace.uidvalidity)
                .join(Folder, Folder.id == MessagePlace.folder_id)
                .where(MessagePlace.message_id == message_id)
            )
            return {(name, uidvalidity == VIEW_UIDVALIDITY) for name, uidvalidity in rows}

    async def messages_with(self, message_id_header: str) -> list[int]:
        async with self.store.sessions() as s:
            return list(
                await s.scalars(
                    select(Message.id).where(
                        Message.account_id == self.account_id, Message.message_id_header == message_id_header
                    )
                )
            )


@pytest.fixture
async def gmail(store: Store, credential_box: CredentialBox, tmp_path: Path) -> AsyncIterator[GmailAccount]:
    mail = GmailStore()
    seed(mail, 6)
    server = GmailServer(mail, users={USER: PASSWORD})
    await server.start()
    certificates = make_certificates(tmp_path / "smtp")
    submission = GmailSubmission(gmail=server, loop=asyncio.get_running_loop())
    try:
        with smtp_server(submission, starttls=certificates.server_context()) as port:
            endpoint = accounts.ImapEndpoint("127.0.0.1", server.port, "none", USER, str(certificates.ca_file))
            smtp = accounts.SmtpSettings("127.0.0.1", port, "starttls", SMTP_USERNAME)
            account_id = await accounts.create(
                store, credential_box, USER, endpoint, PASSWORD, smtp, smtp_password=SMTP_PASSWORD
            )
            account = GmailAccount(server, submission, store, credential_box, account_id)
            await account.sync()
            yield account
    finally:
        await server.stop()


def _draft(**fields: object) -> Draft:
    base = Draft(
        sender=Mailbox(USER, "Me"),
        to=(Mailbox("friend@example.test", "Friend"),),
        bcc=(Mailbox("hidden@example.test"),),
        subject="Plans",
        text="first version",
    )
    return Draft(**{**{f: getattr(base, f) for f in Draft.__slots__}, **fields})


async def test_a_sent_message_is_the_copy_gmail_filed_not_a_second_one(gmail: GmailAccount) -> None:
    async with gmail.store.unit(gmail.account_id) as uow:
        entry = await outbox.queue_draft(uow, _draft())
    header = entry.message_id_header
    mirrored = entry.mirror_message_id
    assert mirrored is not None
    await gmail.drain()
    async with gmail.store.sessions() as s:
        sent = await s.get(type(entry), entry.id)
        assert sent is not None
        assert sent.state == OutboxState.SENT.value, sent.error
    [delivered] = gmail.submission.received
    assert "hidden@example.test" in delivered.rcpt_tos
    # Gmail filed what it sent, once; nothing of ours was APPENDed beside it.
    [copy] = gmail.on_server(header)
    assert copy.labels == {"\\Sent"}
    # The mirror's message (the one shown since the send was queued) is that copy: its real place in All Mail,
    # Sent Mail a view of the \Sent label, no placeholder left.
    assert await gmail.places(mirrored) == {(ALL, False), (SENT, True)}
    async with gmail.store.sessions() as s:
        message = await s.get(Message, mirrored)
        assert message is not None
        assert message.identity == f"gm:{copy.msgid}"

    await gmail.sync()
    assert await gmail.messages_with(header) == [mirrored]
    assert await gmail.places(mirrored) == {(ALL, False), (SENT, True)}
    await assert_identical(gmail.store, gmail.box, gmail.account_id)


async def test_a_sent_message_gmail_filed_late_is_mirrored_once(gmail: GmailAccount) -> None:
    """Gmail filed the message after the outbox looked for it: the All Mail sync brings it, once."""
    gmail.submission.hold = True
    async with gmail.store.unit(gmail.account_id) as uow:
        entry = await outbox.queue_draft(uow, _draft(subject="Late"))
    header = entry.message_id_header
    await gmail.drain()
    assert gmail.on_server(header) == []
    # Not filed when the outbox looked: the mirror shows no copy of its own (it would stay a second one).
    assert await gmail.messages_with(header) == []
    await gmail.submission.release()
    [copy] = gmail.on_server(header)
    await gmail.sync()
    [kept] = await gmail.messages_with(header)
    assert await gmail.places(kept) == {(ALL, False), (SENT, True)}
    async with gmail.store.sessions() as s:
        message = await s.get(Message, kept)
        assert message is not None
        assert message.identity == f"gm:{copy.msgid}"
    await assert_identical(gmail.store, gmail.box, gmail.account_id)


async def test_a_draft_is_one_message_in_all_mail_labelled_as_a_draft(gmail: GmailAccount) -> None:
    drafts_folder = await gmail.folder(DRAFTS)
    async with gmail.store.unit(gmail.account_id) as uow:
        saved = await drafts.create(uow, drafts_folder, _draft())
    async with gmail.store.sessions() as s:
        row = await s.get(Message, saved.message_id)
    assert row is not None
    assert row.message_id_header is not None
    header = row.message_id_header
    await gmail.drain()
    async with gmail.store.sessions() as s:
        action = await s.get(Action, saved.action_id)
        assert action is not None
        assert action.state == "done", action.error
    [copy] = gmail.on_server(header)
    assert "\\Draft" in copy.labels
    assert await gmail.places(saved.message_id) == {(ALL, False), (DRAFTS, True)}

    # Edited twice: Gmail ends with the newest version only (the older ones deleted for good, not merely
    # unlabelled), and the mirror with the same message, in the same places.
    for n, text in enumerate(("second version", "third version")):
        async with gmail.store.sessions() as s:
            current = await drafts.stored(s, gmail.account_id, saved.message_id)
        assert current is not None
        async with gmail.store.unit(gmail.account_id) as uow:
            await drafts.update_draft(uow, saved.message_id, replace(current, text=text, subject=f"Plans v{n + 2}"))
        await gmail.drain()
    [copy] = gmail.on_server(header)
    assert b"third version" in copy.raw
    assert "\\Draft" in copy.labels
    assert await gmail.places(saved.message_id) == {(ALL, False), (DRAFTS, True)}

    await gmail.sync()
    assert await gmail.messages_with(header) == [saved.message_id]
    assert await gmail.places(saved.message_id) == {(ALL, False), (DRAFTS, True)}
    await assert_identical(gmail.store, gmail.box, gmail.account_id)


async def test_a_label_that_is_no_imap_keyword_is_a_gmail_label(gmail: GmailAccount) -> None:
    """Gmail's labels are names (spaces, parentheses, any script), not IMAP keywords; elsewhere such a label is
    refused before anything is queued (schema.actions.check_keyword)."""
    target = min(gmail.mail.mails.values(), key=lambda m: m.msgid)
    async with gmail.store.sessions() as s:
        row = await s.scalar(
            select(Message.id).where(Message.account_id == gmail.account_id, Message.identity == f"gm:{target.msgid}")
        )
    assert row is not None
    names = ["Project X (2026)", "naïve"]
    async with gmail.store.unit(gmail.account_id) as uow:
        await actions.set_flags(uow, [row], add=names, remove=[])
    await gmail.drain()
    await gmail.sync()
    # On the wire (and so in the server's store) a label is a mailbox name: modified UTF-7 (RFC 3501 §5.1.3).
    assert {"Project X (2026)", "na&AO8-ve"} <= target.labels
    assert {name for name, _ in await gmail.places(row)} >= set(names)
    await assert_identical(gmail.store, gmail.box, gmail.account_id)


def test_a_label_that_is_no_imap_keyword_is_refused_elsewhere() -> None:
    with pytest.raises(actions.Refused, match="RFC 3501 atoms"):
        actions.check_keyword("Project X (2026)")
    with pytest.raises(actions.Refused, match="RFC 3501 atoms"):
        actions.check_keyword("naïve")
    actions.check_keyword("$Forwarded")
    actions.check_keyword("\\Answered")
