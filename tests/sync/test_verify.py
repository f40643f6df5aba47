"""`verify` finds every kind of difference between the mirror and the server, and says exactly which.

Every sync test trusts `verify` to say "identical"; these show it does not say so when the mirror is wrong.
Each test syncs a fresh mailbox on the real Dovecot, checks it verifies identical, then breaks one thing,
on the server (another client's change the mirror has not seen) or in the mirror's rows, and asserts the
exact list of differences. The messages are unique to each test (blobs are shared by content across accounts).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest
from sqlalchemy import delete, select, update

from inboxql.devmail import DovecotServer
from schema.crypto import CredentialBox
from schema.models import Folder, Label, Message, MessageLabel, MessagePlace, MimeBlob
from schema.unit import Store
from synccore.imap import ImapClient
from synccore.verify import verify
from tests.sync.support import add_account, connect, sync_once


@dataclass
class Mirrored:
    """A synced account: INBOX holds UIDs 1-4 (1 \\Seen, 2 plain, 3 with the keyword `work`, 4 \\Flagged), and
    the folder Projects one message (UID 1)."""

    store: Store
    box: CredentialBox
    dovecot: DovecotServer
    user: str
    password: str
    account_id: int
    token: str

    async def client(self) -> ImapClient:
        return await connect(self.dovecot, self.user, self.password)

    async def differences(self) -> list[str]:
        return await verify(self.store, self.box, self.account_id)

    async def folder_id(self, name: str) -> int:
        async with self.store.sessions() as s:
            found = await s.scalar(select(Folder.id).where(Folder.account_id == self.account_id, Folder.name == name))
        assert found is not None
        return found

    async def place(self, folder: str, uid: int) -> MessagePlace:
        folder_id = await self.folder_id(folder)
        async with self.store.sessions() as s:
            found = await s.scalar(
                select(MessagePlace).where(MessagePlace.folder_id == folder_id, MessagePlace.uid == uid)
            )
        assert found is not None
        return found


def mail(token: str, n: int) -> bytes:
    return (
        f"Message-ID: <verify-{token}-{n}@example.test>\r\n"
        f"Date: Sun, 06 Dec 2026 09:0{n}:00 +0000\r\n"
        f"From: Ann <ann@example.test>\r\n"
        f"To: bob@example.test\r\n"
        f"Subject: verify {token} {n}\r\n"
        f"\r\n"
        f"Body {n} of {token}.\r\n"
    ).encode()


@pytest.fixture
async def mirrored(
    store: Store, credential_box: CredentialBox, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> Mirrored:
    user, password = mail_user
    token = secrets.token_hex(6)
    inbox: list[bytes | tuple[bytes, tuple[str, ...]]] = [
        (mail(token, 1), ("\\Seen",)),
        mail(token, 2),
        (mail(token, 3), ("work",)),
        (mail(token, 4), ("\\Flagged",)),
    ]
    dovecot.append(user, password, "INBOX", inbox)
    other = await connect(dovecot, user, password)
    try:
        await other.create("Projects")
    finally:
        await other.logout()
    dovecot.append(user, password, "Projects", [mail(token, 5)])
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)
    found = Mirrored(store, credential_box, dovecot, user, password, account_id, token)
    assert await found.differences() == []
    return found


async def test_flags_changed_on_the_server_are_reported(mirrored: Mirrored) -> None:
    other = await mirrored.client()
    try:
        await other.select("INBOX")
        await other.uid_store([2], "add", ["\\Flagged"])
        await other.uid_store([1], "remove", ["\\Seen"])
    finally:
        await other.logout()
    assert await mirrored.differences() == [
        "folder 'INBOX': UID 1 flags '' on the server, '\\\\Seen' in the mirror",
        "folder 'INBOX': UID 2 flags '\\\\Flagged' on the server, '' in the mirror",
    ]


async def test_flags_wrong_in_the_mirror_are_reported(mirrored: Mirrored) -> None:
    place = await mirrored.place("INBOX", 4)
    async with mirrored.store.sessions() as s, s.begin():
        await s.execute(update(MessagePlace).where(MessagePlace.id == place.id).values(flags="\\Answered"))
    assert await mirrored.differences() == [
        "folder 'INBOX': UID 4 flags '\\\\Flagged' on the server, '\\\\Answered' in the mirror"
    ]


async def test_a_keyword_set_on_the_server_is_reported(mirrored: Mirrored) -> None:
    other = await mirrored.client()
    try:
        await other.select("INBOX")
        await other.uid_store([2], "add", ["urgent"])
        await other.uid_store([3], "remove", ["work"])
    finally:
        await other.logout()
    assert await mirrored.differences() == [
        "folder 'INBOX': UID 2 flags 'urgent' on the server, '' in the mirror",
        "folder 'INBOX': UID 3 flags '' on the server, 'work' in the mirror",
    ]


async def test_a_label_that_disagrees_with_the_keywords_is_reported(mirrored: Mirrored) -> None:
    place = await mirrored.place("INBOX", 3)
    async with mirrored.store.sessions() as s, s.begin():
        work = await s.scalar(select(Label.id).where(Label.account_id == mirrored.account_id, Label.name == "work"))
        assert work is not None
        await s.execute(delete(MessageLabel).where(MessageLabel.message_id == place.message_id))
        plain = (await mirrored.place("INBOX", 2)).message_id
        s.add(MessageLabel(message_id=plain, label_id=work))
    assert await mirrored.differences() == [
        f"message {min(place.message_id, plain)}: labels "
        + ("[] but keywords ['work']" if place.message_id < plain else "['work'] but keywords []"),
        f"message {max(place.message_id, plain)}: labels "
        + ("['work'] but keywords []" if place.message_id < plain else "[] but keywords ['work']"),
    ]


async def test_a_message_missing_from_the_mirror_is_reported(mirrored: Mirrored) -> None:
    mirrored.dovecot.append(mirrored.user, mirrored.password, "INBOX", [mail(mirrored.token, 6)])
    assert await mirrored.differences() == ["folder 'INBOX': UID 5 on the server, not in the mirror"]


async def test_a_message_gone_from_the_server_is_reported(mirrored: Mirrored) -> None:
    other = await mirrored.client()
    try:
        await other.select("INBOX")
        await other.uid_store([3], "add", ["\\Deleted"])
        await other.uid_expunge([3])
    finally:
        await other.logout()
    assert await mirrored.differences() == ["folder 'INBOX': UID 3 in the mirror, not on the server"]


async def test_a_place_lost_from_the_mirror_is_reported_with_its_message_in_no_folder(mirrored: Mirrored) -> None:
    place = await mirrored.place("INBOX", 2)
    async with mirrored.store.sessions() as s, s.begin():
        await s.execute(delete(MessagePlace).where(MessagePlace.id == place.id))
    assert await mirrored.differences() == [
        "folder 'INBOX': UID 2 on the server, not in the mirror",
        f"message {place.message_id}: in no folder",
    ]


async def test_a_folder_missing_from_the_mirror_is_reported(mirrored: Mirrored) -> None:
    other = await mirrored.client()
    try:
        await other.create("Later")
    finally:
        await other.logout()
    assert await mirrored.differences() == ["folder 'Later': on the server, not in the mirror"]


async def test_a_folder_gone_from_the_server_is_reported(mirrored: Mirrored) -> None:
    other = await mirrored.client()
    try:
        await other.delete("Projects")
    finally:
        await other.logout()
    assert await mirrored.differences() == ["folder 'Projects': in the mirror, not on the server"]


async def test_a_uidvalidity_that_differs_is_reported(mirrored: Mirrored) -> None:
    folder_id = await mirrored.folder_id("Projects")
    async with mirrored.store.sessions() as s, s.begin():
        folder = await s.get(Folder, folder_id)
        assert folder is not None
        server = folder.uidvalidity
        await s.execute(update(Folder).where(Folder.id == folder_id).values(uidvalidity=7))
    assert await mirrored.differences() == [f"folder 'Projects': UIDVALIDITY {server} on the server, 7 in the mirror"]


async def test_a_raw_message_missing_from_the_store_is_reported(mirrored: Mirrored) -> None:
    place = await mirrored.place("Projects", 1)
    async with mirrored.store.sessions() as s, s.begin():
        sha = await s.scalar(select(Message.blob_sha256).where(Message.id == place.message_id))
        await s.execute(delete(MimeBlob).where(MimeBlob.sha256 == sha))
    assert await mirrored.differences() == ["folder 'Projects': UID 1 raw message missing or corrupt in the store"]


async def test_a_raw_message_that_differs_is_reported(mirrored: Mirrored) -> None:
    """The mirror holds another message's bytes for INBOX UID 2 (UID 1's)."""
    first, second = await mirrored.place("INBOX", 1), await mirrored.place("INBOX", 2)
    async with mirrored.store.sessions() as s, s.begin():
        sha = await s.scalar(select(Message.blob_sha256).where(Message.id == first.message_id))
        await s.execute(update(Message).where(Message.id == second.message_id).values(blob_sha256=sha))
    assert await mirrored.differences() == ["folder 'INBOX': UID 2 raw message differs from the mirror's"]
