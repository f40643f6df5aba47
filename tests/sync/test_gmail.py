"""Gmail accounts (X-GM-EXT-1), against the Gmail-dialect server of tests/gmailserver.py and the real MariaDB:
each message mirrored once from All Mail, Trash and Spam, with its labels, Gmail's threads, its label folders as
derived places; what another client changes (labels, archiving, trash, deletion) is mirrored, and `verify`
compares in Gmail's model."""

from __future__ import annotations

import asyncio
import contextlib
import imaplib
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, select, update

from gateway.ids import to_global
from gateway.testing import Client, start_gateway
from schema import accounts, actions, tokens
from schema.changelog import ObjectType, Op
from schema.crypto import CredentialBox
from schema.gmail import VIEW_UIDVALIDITY
from schema.models import Account, Action, ChangeLog, Folder, Label, Message, MessageLabel, MessagePlace
from schema.settings import Settings
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.verify import verify
from tests.gmailserver import GmailServer
from tests.gmailstore import ALL, INBOX, SPAM, TRASH, GmailStore, Mail
from tests.sync.gmail_mailbox import labels_of, seed
from tests.sync.support import sync_once

USER, PASSWORD = "me@gmail.test", "secret"


@dataclass
class Gmail:
    server: GmailServer
    store: Store
    box: CredentialBox
    account_id: int

    @property
    def mail(self) -> GmailStore:
        return self.server.store

    async def sync(self) -> None:
        await sync_once(self.store, self.box, self.account_id)

    async def initial_sync(self) -> None:
        """The first sync: each message's body fetched once, from All Mail (not once per label folder)."""
        await self.sync()
        assert self.mail.stats.bodies == len(self.mail.mails)

    async def other_client(self, work: Callable[[imaplib.IMAP4], Any]) -> Any:
        """Another client changes the mailbox over the wire (stdlib imaplib, in a thread)."""

        def run() -> Any:
            client = imaplib.IMAP4("127.0.0.1", self.server.port)
            client.login(USER, PASSWORD)
            try:
                return work(client)
            finally:
                client.logout()

        return await asyncio.to_thread(run)

    async def message_of(self, mail: Mail) -> Message:
        async with self.store.sessions() as s:
            found = await s.scalar(
                select(Message).where(Message.account_id == self.account_id, Message.identity == f"gm:{mail.msgid}")
            )
        assert found is not None, mail.msgid
        return found

    async def folders_of(self, message_id: int) -> set[str]:
        async with self.store.sessions() as s:
            rows = await s.scalars(
                select(Folder.name)
                .join(MessagePlace, MessagePlace.folder_id == Folder.id)
                .where(MessagePlace.message_id == message_id)
            )
            return set(rows)

    async def labels_of(self, message_id: int) -> set[str]:
        async with self.store.sessions() as s:
            rows = await s.scalars(
                select(Label.name)
                .join(MessageLabel, MessageLabel.label_id == Label.id)
                .where(MessageLabel.message_id == message_id)
            )
            return set(rows)

    async def log_since(self, seq: int) -> list[tuple[str, int, str]]:
        async with self.store.sessions() as s:
            rows = await s.execute(
                select(ChangeLog.object_type, ChangeLog.object_id, ChangeLog.op)
                .where(ChangeLog.account_id == self.account_id, ChangeLog.seq > seq)
                .order_by(ChangeLog.seq)
            )
            return [(t, i, o) for t, i, o in rows]

    async def last_seq(self) -> int:
        async with self.store.sessions() as s:
            rows = await s.scalars(
                select(ChangeLog.seq).where(ChangeLog.account_id == self.account_id).order_by(ChangeLog.seq.desc())
            )
            return next(iter(rows), 0)


async def _gmail(store: Store, credential_box: CredentialBox, count: int) -> AsyncIterator[Gmail]:
    mail = GmailStore()
    seed(mail, count)
    server = GmailServer(mail, users={USER: PASSWORD})
    await server.start()
    try:
        endpoint = accounts.ImapEndpoint("127.0.0.1", server.port, "none", USER)
        account_id = await accounts.create(store, credential_box, USER, endpoint, PASSWORD)
        yield Gmail(server, store, credential_box, account_id)
    finally:
        await server.stop()


@pytest.fixture
async def gmail(store: Store, credential_box: CredentialBox) -> AsyncIterator[Gmail]:
    async for g in _gmail(store, credential_box, 12):
        yield g


@pytest.fixture
async def gmail_2000(store: Store, credential_box: CredentialBox) -> AsyncIterator[Gmail]:
    async for g in _gmail(store, credential_box, 2000):
        yield g


async def test_a_mailbox_of_2000_is_mirrored_once_with_labels_and_threads(gmail_2000: Gmail) -> None:
    g = gmail_2000
    started = time.monotonic()
    await g.sync()
    took = time.monotonic() - started
    assert g.mail.stats.bodies == 2000, "each message's body is fetched once"
    async with g.store.sessions() as s:
        rows = list(
            await s.execute(
                select(Message.id, Message.identity, Message.thread_id).where(Message.account_id == g.account_id)
            )
        )
        assert len(rows) == 2000
        by_identity = {identity: (mid, tid) for mid, identity, tid in rows}
        places: Counter[tuple[str, int]] = Counter(
            (name, validity)
            for name, validity in await s.execute(
                select(Folder.name, MessagePlace.uidvalidity)
                .join(MessagePlace, MessagePlace.folder_id == Folder.id)
                .where(Folder.account_id == g.account_id)
            )
        )
        label_rows = {
            name: (kind, role)
            for name, kind, role in await s.execute(
                select(Label.name, Label.kind, Label.role).where(Label.account_id == g.account_id)
            )
        }
        links: dict[int, set[str]] = defaultdict(set)
        for mid, name in await s.execute(
            select(MessageLabel.message_id, Label.name)
            .join(Label, Label.id == MessageLabel.label_id)
            .where(Label.account_id == g.account_id)
        ):
            links[mid].add(name)
    # Stored once: in All Mail under its UIDVALIDITY; the label folders hold derived places only.
    real = {name: n for (name, validity), n in places.items() if validity != VIEW_UIDVALIDITY}
    assert real == {ALL: 2000}
    assert places[(INBOX, VIEW_UIDVALIDITY)] == len(g.mail.boxes[INBOX].uids)
    assert places[("Work", VIEW_UIDVALIDITY)] == len(g.mail.boxes["Work"].uids)
    assert places[("[Gmail]/Starred", VIEW_UIDVALIDITY)] == len(g.mail.boxes["[Gmail]/Starred"].uids)
    # Labels of kind gmail, the system ones with their roles; each message's labels as Gmail has them.
    assert label_rows["\\Inbox"] == ("gmail", "inbox")
    assert label_rows["\\Sent"] == ("gmail", "sent")
    assert label_rows["\\Important"] == ("gmail", "important")
    assert label_rows["\\Starred"] == ("gmail", "flagged")
    assert label_rows["Work"] == ("gmail", None)
    for mail in g.mail.mails.values():
        mid, _ = by_identity[f"gm:{mail.msgid}"]
        assert links[mid] == set(mail.gm_labels()), mail.msgid
    # Gmail's threads: one per X-GM-THRID.
    threads: dict[int, set[int]] = defaultdict(set)
    for mail in g.mail.mails.values():
        threads[mail.thrid].add(by_identity[f"gm:{mail.msgid}"][1])
    assert all(len(tids) == 1 for tids in threads.values())
    assert len({next(iter(t)) for t in threads.values()}) == len(threads) == 500
    assert await verify(g.store, g.box, g.account_id) == []
    print(f"2000 Gmail messages mirrored in {took:.1f} s")


async def test_starred_and_inbox_follow_flags_and_labels(gmail: Gmail) -> None:
    await gmail.sync()
    first = min(gmail.mail.mails.values(), key=lambda m: m.msgid)  # message 0: \Inbox, \Important, \Sent, \Starred
    row = await gmail.message_of(first)
    assert row.starred
    assert await gmail.folders_of(row.id) == {
        ALL,
        INBOX,
        "[Gmail]/Important",
        "[Gmail]/Sent Mail",
        "[Gmail]/Starred",
        "Work",
        "Travel",
    }
    assert labels_of(0) | {"\\Starred"} == await gmail.labels_of(row.id)


async def test_a_label_change_is_a_message_update(gmail: Gmail) -> None:
    await gmail.sync()
    target = min(gmail.mail.mails.values(), key=lambda m: m.msgid)
    row = await gmail.message_of(target)
    seq = await gmail.last_seq()
    bodies = gmail.mail.stats.bodies
    asked = gmail.mail.stats.changedsince

    def relabel(c: imaplib.IMAP4) -> None:
        c.select('"[Gmail]/All Mail"')
        c.uid("STORE", str(gmail.mail.boxes[ALL].uids[target.msgid]), "+X-GM-LABELS", "(Receipts)")

    await gmail.other_client(relabel)
    await gmail.sync()
    assert "Receipts" in await gmail.labels_of(row.id)
    assert "Receipts" in await gmail.folders_of(row.id)
    log = await gmail.log_since(seq)
    messages = [(i, op) for t, i, op in log if t == ObjectType.MESSAGE.value]
    assert messages == [(row.id, Op.UPDATE.value)], log
    assert gmail.mail.stats.bodies == bodies, "a label change downloads no body"
    assert gmail.mail.stats.changedsince > asked, "found by CONDSTORE's CHANGEDSINCE (labels change the MODSEQ)"
    assert await verify(gmail.store, gmail.box, gmail.account_id) == []


async def test_archiving_removes_the_message_from_inbox_only(gmail: Gmail) -> None:
    await gmail.initial_sync()
    target = min(gmail.mail.mails.values(), key=lambda m: m.msgid)
    row = await gmail.message_of(target)
    seq = await gmail.last_seq()

    def archive(c: imaplib.IMAP4) -> None:
        c.select("INBOX")
        c.uid("MOVE", str(gmail.mail.boxes[INBOX].uids[target.msgid]), '"[Gmail]/All Mail"')

    await gmail.other_client(archive)
    assert "\\Inbox" not in target.labels
    await gmail.sync()
    folders = await gmail.folders_of(row.id)
    assert INBOX not in folders
    assert ALL in folders
    assert await gmail.labels_of(row.id) == set(target.gm_labels())
    ops = {op for t, i, op in await gmail.log_since(seq) if t == ObjectType.MESSAGE.value and i == row.id}
    assert ops == {Op.UPDATE.value}
    assert await verify(gmail.store, gmail.box, gmail.account_id) == []


async def test_trash_keeps_the_message_and_expunging_there_deletes_it(gmail: Gmail) -> None:
    await gmail.initial_sync()
    target = min(gmail.mail.mails.values(), key=lambda m: m.msgid)
    row = await gmail.message_of(target)
    seq = await gmail.last_seq()

    def trash(c: imaplib.IMAP4) -> None:
        c.select("INBOX")
        c.uid("MOVE", str(gmail.mail.boxes[INBOX].uids[target.msgid]), '"[Gmail]/Trash"')

    await gmail.other_client(trash)
    await gmail.sync()
    assert (await gmail.message_of(target)).id == row.id
    assert await gmail.folders_of(row.id) == {TRASH}
    assert await gmail.labels_of(row.id) == set(target.gm_labels())  # Gmail keeps a trashed message's labels
    ops = {op for t, i, op in await gmail.log_since(seq) if t == ObjectType.MESSAGE.value and i == row.id}
    assert ops == {Op.UPDATE.value}
    assert await verify(gmail.store, gmail.box, gmail.account_id) == []

    def delete(c: imaplib.IMAP4) -> None:
        c.select('"[Gmail]/Trash"')
        c.uid("STORE", "1:*", "+FLAGS", "(\\Deleted)")
        c.expunge()

    await gmail.other_client(delete)
    await gmail.sync()
    async with gmail.store.sessions() as s:
        assert await s.get(Message, row.id) is None
    assert await verify(gmail.store, gmail.box, gmail.account_id) == []


async def test_new_label_folder_and_new_mail_are_mirrored(gmail: Gmail) -> None:
    await gmail.initial_sync()

    def append(c: imaplib.IMAP4) -> None:
        assert c.create("Projects")[0] == "OK"
        raw = b"From: x@test\r\nSubject: new\r\nMessage-ID: <new@test>\r\n\r\nhi\r\n"
        assert c.append("Projects", None, None, raw)[0] == "OK"

    await gmail.other_client(append)
    await gmail.sync()
    newest = max(gmail.mail.mails.values(), key=lambda m: m.msgid)
    row = await gmail.message_of(newest)
    assert await gmail.folders_of(row.id) == {ALL, "Projects"}
    assert await gmail.labels_of(row.id) == {"Projects"}
    assert await verify(gmail.store, gmail.box, gmail.account_id) == []


# -- write-back ---------------------------------------------------------------------------------------------


async def _folder_id(g: Gmail, name: str) -> int:
    async with g.store.sessions() as s:
        found = await s.scalar(select(Folder.id).where(Folder.account_id == g.account_id, Folder.name == name))
    assert found is not None
    return found


async def _action_states(g: Gmail, ids: list[int]) -> list[tuple[str, str]]:
    async with g.store.sessions() as s:
        rows = await s.execute(select(Action.kind, Action.state).where(Action.id.in_(ids)).order_by(Action.id))
        return [(k, st) for k, st in rows]


async def test_a_label_added_through_the_api_is_stored_as_an_x_gm_label(gmail: Gmail) -> None:
    await gmail.sync()
    target = min(gmail.mail.mails.values(), key=lambda m: m.msgid)
    row = await gmail.message_of(target)
    async with gmail.store.unit(gmail.account_id) as uow:
        queued = await actions.set_flags(uow, [row.id], add=["Receipts", "\\Seen"], remove=["Work"])
    # At once in the mirror: the label, and the message in the label's folder.
    assert "Receipts" in await gmail.labels_of(row.id)
    assert "Work" not in await gmail.folders_of(row.id)
    await gmail.sync()
    assert await _action_states(gmail, queued) == [("gmail_labels", "done"), ("flags", "done")]
    assert "Receipts" in target.labels
    assert "Work" not in target.labels
    assert "\\Seen" in target.flags
    assert await gmail.folders_of(row.id) == {
        ALL,
        INBOX,
        "[Gmail]/Important",
        "[Gmail]/Sent Mail",
        "[Gmail]/Starred",
        "Travel",
        "Receipts",
    }
    assert await verify(gmail.store, gmail.box, gmail.account_id) == []


async def test_moves_follow_gmail_trash_restore_archive(gmail: Gmail) -> None:
    await gmail.sync()
    target = min(gmail.mail.mails.values(), key=lambda m: m.msgid)
    row = await gmail.message_of(target)
    trash, inbox, all_mail = [await _folder_id(gmail, n) for n in (TRASH, INBOX, ALL)]
    async with gmail.store.unit(gmail.account_id) as uow:
        await actions.move(uow, [row.id], trash)
    assert await gmail.folders_of(row.id) == {TRASH}
    await gmail.sync()
    assert target.place == TRASH
    assert (await gmail.message_of(target)).id == row.id
    assert await gmail.folders_of(row.id) == {TRASH}
    assert await verify(gmail.store, gmail.box, gmail.account_id) == []

    async with gmail.store.unit(gmail.account_id) as uow:
        await actions.move(uow, [row.id], inbox)  # out of the trash, into the inbox
    await gmail.sync()
    assert target.place == ALL
    assert target.labels == labels_of(0), "its labels came back with it"
    assert await gmail.folders_of(row.id) == {
        ALL,
        INBOX,
        "[Gmail]/Important",
        "[Gmail]/Sent Mail",
        "[Gmail]/Starred",
        "Work",
        "Travel",
    }
    assert await verify(gmail.store, gmail.box, gmail.account_id) == []

    async with gmail.store.unit(gmail.account_id) as uow:
        await actions.move(uow, [row.id], all_mail)  # archive
    assert INBOX not in await gmail.folders_of(row.id)
    await gmail.sync()
    assert "\\Inbox" not in target.labels
    assert target.place == ALL
    assert INBOX not in await gmail.folders_of(row.id)
    assert (await gmail.message_of(target)).id == row.id
    assert await verify(gmail.store, gmail.box, gmail.account_id) == []


async def test_moving_from_the_inbox_to_a_label_relabels(gmail: Gmail) -> None:
    await gmail.sync()
    target = min(gmail.mail.mails.values(), key=lambda m: m.msgid)
    row = await gmail.message_of(target)
    assert "Receipts" not in target.labels
    async with gmail.store.unit(gmail.account_id) as uow:
        await actions.move(uow, [row.id], await _folder_id(gmail, "Receipts"))
    await gmail.sync()
    assert "Receipts" in target.labels
    assert "\\Inbox" not in target.labels
    assert "Receipts" in await gmail.folders_of(row.id)
    assert INBOX not in await gmail.folders_of(row.id)
    assert await verify(gmail.store, gmail.box, gmail.account_id) == []


async def test_deleting_for_good_goes_through_the_trash(gmail: Gmail) -> None:
    await gmail.sync()
    target = min(gmail.mail.mails.values(), key=lambda m: m.msgid)
    row = await gmail.message_of(target)
    async with gmail.store.unit(gmail.account_id) as uow:
        await actions.expunge(uow, [row.id])
    await gmail.sync()
    assert target.msgid not in gmail.mail.mails
    async with gmail.store.sessions() as s:
        assert await s.get(Message, row.id) is None
    assert await verify(gmail.store, gmail.box, gmail.account_id) == []


async def test_a_label_change_reaches_the_mirror_through_idle_on_all_mail(gmail: Gmail) -> None:
    """Polling every 60 s: only the IDLE connection, which watches All Mail on Gmail, can bring it in time."""
    sync = AccountSync(gmail.store, gmail.box, gmail.account_id, Tuning(poll_interval=60))
    task = asyncio.create_task(sync.run_forever())
    try:
        target = min(gmail.mail.mails.values(), key=lambda m: m.msgid)
        for _ in range(200):
            async with gmail.store.sessions() as s:
                if await s.scalar(select(Account.sync_state).where(Account.id == gmail.account_id)) == "ready":
                    break
            await asyncio.sleep(0.05)
        row = await gmail.message_of(target)
        await asyncio.sleep(0.5)  # the IDLE connection is up

        def relabel(c: imaplib.IMAP4) -> None:
            c.select('"[Gmail]/All Mail"')
            c.uid("STORE", str(gmail.mail.boxes[ALL].uids[target.msgid]), "+X-GM-LABELS", "(Receipts)")

        started = time.monotonic()
        await gmail.other_client(relabel)
        while "Receipts" not in await gmail.labels_of(row.id):
            assert time.monotonic() - started < 10, "the label change was not mirrored through IDLE"
            await asyncio.sleep(0.05)
        assert "Receipts" in await gmail.folders_of(row.id)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_label_folders_are_caught_up_with_all_mail(gmail: Gmail) -> None:
    await gmail.sync()
    async with gmail.store.sessions() as s:
        states = dict(
            (await s.execute(select(Folder.name, Folder.sync_state).where(Folder.account_id == gmail.account_id))).all()
        )
    assert set(states.values()) == {"follow"}, states


async def test_the_api_shows_gmail_folders_labels_and_threads(gmail: Gmail, settings: Settings) -> None:
    """Through the gateway over HTTP, as a client reads it: INBOX lists the messages that carry \\Inbox, a message's
    folders are its labels' folders, its labels are of kind gmail with their roles, its thread is Gmail's."""
    await gmail.sync()
    async with gmail.store.sessions() as s, s.begin():
        token = await tokens.create_token(s, [gmail.account_id])
    server = start_gateway(settings)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            client = Client(http, token)
            account = to_global("Account", gmail.account_id)
            found = await client.data(
                "query($a: ID!) { folders(accountId: $a, first: 50) {"
                " edges { node { id name role messageCount syncState } } } }",
                {"a": account},
            )
            by_name = {e["node"]["name"]: e["node"] for e in found["folders"]["edges"]}
            in_inbox = {m.msgid for m in gmail.mail.mails.values() if "\\Inbox" in m.labels}
            assert by_name[INBOX]["messageCount"] == len(in_inbox)
            assert by_name[INBOX]["syncState"] == "follow"
            query = """query($a: ID!, $f: ID!) { messages(accountId: $a, filter: {folderId: $f}, first: 100) {
                edges { node { id subject starred folders { name } labels { name kind role } thread { id } } } } }"""
            listed = (await client.data(query, {"a": account, "f": by_name[INBOX]["id"]}))["messages"]["edges"]
            assert len(listed) == len(in_inbox)
            first = min(gmail.mail.mails.values(), key=lambda m: m.msgid)
            wanted = to_global("Message", (await gmail.message_of(first)).id)
            node = next(e["node"] for e in listed if e["node"]["id"] == wanted)
            assert {f["name"] for f in node["folders"]} == {
                ALL,
                INBOX,
                "[Gmail]/Important",
                "[Gmail]/Sent Mail",
                "[Gmail]/Starred",
                "Work",
                "Travel",
            }
            assert node["starred"] is True
            labels = {lb["name"]: (lb["kind"], lb["role"]) for lb in node["labels"]}
            assert labels == {
                "\\Inbox": ("gmail", "inbox"),
                "\\Important": ("gmail", "important"),
                "\\Sent": ("gmail", "sent"),
                "\\Starred": ("gmail", "flagged"),
                "Work": ("gmail", None),
                "Travel": ("gmail", None),
            }
    finally:
        server.stop()


async def test_a_label_renamed_elsewhere_moves_its_messages_folder(gmail: Gmail) -> None:
    await gmail.sync()
    work = {m.msgid for m in gmail.mail.mails.values() if "Work" in m.labels}
    assert (await gmail.other_client(lambda c: c.rename("Work", "Job")))[0] == "OK"
    await gmail.sync()
    async with gmail.store.sessions() as s:
        in_job = set(
            await s.scalars(
                select(Message.identity)
                .join(MessagePlace, MessagePlace.message_id == Message.id)
                .join(Folder, Folder.id == MessagePlace.folder_id)
                .where(Folder.account_id == gmail.account_id, Folder.name == "Job")
            )
        )
        names = set(await s.scalars(select(Folder.name).where(Folder.account_id == gmail.account_id)))
    assert in_job == {f"gm:{m}" for m in work}
    assert "Work" not in names
    assert await verify(gmail.store, gmail.box, gmail.account_id) == []


async def test_verify_finds_a_wrong_label_and_a_missing_view(gmail: Gmail) -> None:
    await gmail.sync()
    first = min(gmail.mail.mails.values(), key=lambda m: m.msgid)
    row = await gmail.message_of(first)
    work = await _folder_id(gmail, "Work")
    async with gmail.store.sessions() as s, s.begin():
        await s.execute(delete(MessagePlace).where(MessagePlace.message_id == row.id, MessagePlace.folder_id == work))
        all_mail = await _folder_id(gmail, ALL)
        await s.execute(
            update(MessagePlace)
            .where(MessagePlace.message_id == row.id, MessagePlace.folder_id == all_mail)
            .values(labels="Travel")
        )
    diffs = await verify(gmail.store, gmail.box, gmail.account_id)
    uid = gmail.mail.boxes[ALL].uids[first.msgid]
    assert f"folder 'Work': message gm:{first.msgid} on the server, not in the mirror" in diffs
    assert any(d.startswith(f"folder '{ALL}': UID {uid} flags and labels") for d in diffs), diffs


async def test_spam_is_apart_from_all_mail(gmail: Gmail) -> None:
    await gmail.initial_sync()
    target = min(gmail.mail.mails.values(), key=lambda m: m.msgid)
    row = await gmail.message_of(target)

    def report_spam(c: imaplib.IMAP4) -> None:
        c.select('"[Gmail]/All Mail"')
        c.uid("MOVE", str(gmail.mail.boxes[ALL].uids[target.msgid]), '"[Gmail]/Spam"')

    await gmail.other_client(report_spam)
    await gmail.sync()
    assert (await gmail.message_of(target)).id == row.id
    assert await gmail.folders_of(row.id) == {SPAM}
    assert await verify(gmail.store, gmail.box, gmail.account_id) == []
