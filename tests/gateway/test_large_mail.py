"""A message larger than MariaDB's max_allowed_packet (16 MiB by default), synced from a real Dovecot and read
back through the gateway: mirrored byte for byte, its attachment served, and the messages around it (older ones
in its folder, the folders after it) mirrored too."""

from __future__ import annotations

import base64
import hashlib
import random
import zlib

import httpx
from sqlalchemy import func, select, text

from gateway.ids import to_global
from gateway.testing import Client
from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import accounts, tokens
from schema.crypto import CredentialBox
from schema.models import Folder, MessagePlace
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from synccore.verify import verify
from tests.conftest import new_user
from tests.sync.support import connect

MIB = 1 << 20


def large_message(attachment: bytes) -> bytes:
    """A multipart/mixed message: a short text and a base64 attachment (76-character lines, CRLF)."""
    encoded = base64.encodebytes(attachment).replace(b"\n", b"\r\n")
    head = (
        b"From: Big Sender <big@example.com>\r\n"
        b"To: someone@example.org\r\n"
        b"Subject: the scans you asked for\r\n"
        b"Date: Fri, 04 Dec 2026 10:00:00 +0000\r\n"
        b"Message-ID: <large-20mib@example.com>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b-large"\r\n\r\n'
        b"--b-large\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        b"Here they are.\r\n\r\n"
        b"--b-large\r\n"
        b'Content-Type: application/octet-stream; name="scans.bin"\r\n'
        b'Content-Disposition: attachment; filename="scans.bin"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head + encoded + b"--b-large--\r\n"


async def test_a_20_mib_message_is_mirrored_and_does_not_stop_its_folder(
    http: httpx.AsyncClient, gw_store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    async with gw_store.sessions() as s:
        packet = (await s.execute(text("SELECT @@max_allowed_packet"))).scalar_one()
    # Random bytes do not compress: packed (zlib), the message is still larger than one packet may carry.
    attachment = random.Random(20).randbytes(16 * MIB)
    raw = large_message(attachment)
    assert len(raw) > 20 * MIB
    assert len(zlib.compress(raw, 1)) > packet, "the server takes packets this large: the test proves nothing"

    user, password = new_user(dovecot)
    mail = list(generate(40, seed=20))
    # Older mail first (lower UIDs), then the large message, then newer mail: the sync goes newest first.
    dovecot.append(user, password, "INBOX", mail[:30])
    dovecot.append(user, password, "INBOX", [raw])
    dovecot.append(user, password, "INBOX", mail[30:35])
    dovecot.append(user, password, "Archive", mail[35:])  # a folder synced after the inbox
    endpoint = accounts.ImapEndpoint(dovecot.host, dovecot.port, "none", user)
    account = await accounts.create(gw_store, credential_box, f"{user}@example.test", endpoint, password)

    await AccountSync(gw_store, credential_box, account).run_once()

    assert await verify(gw_store, credential_box, account) == []
    async with gw_store.sessions() as s:
        counts = dict(
            (
                await s.execute(
                    select(Folder.name, func.count(MessagePlace.id))
                    .join(MessagePlace, MessagePlace.folder_id == Folder.id)
                    .where(Folder.account_id == account)
                    .group_by(Folder.name)
                )
            ).all()
        )
    assert counts == {"INBOX": 36, "Archive": 5}

    async with gw_store.sessions() as session, session.begin():
        client = Client(http, await tokens.create_token(session, [account]))
    found = await client.data(
        """query($a: ID!) { messages(accountId: $a, filter: {hasAttachment: true}, first: 50) { nodes {
            subject size malformed rawUrl attachments { filename size downloadUrl } } } }""",
        {"a": to_global("Account", account)},
    )
    [large] = [m for m in found["messages"]["nodes"] if m["subject"] == "the scans you asked for"]
    assert not large["malformed"]
    served = await connect(dovecot, user, password)
    try:
        await served.select("INBOX", readonly=True)
        [item] = (await served.uid_fetch("31", "(UID BODY.PEEK[])")).items
    finally:
        await served.logout()
    assert item.body is not None
    assert large["size"] == len(item.body)

    r = await http.get(large["rawUrl"])
    assert r.status_code == 200
    assert hashlib.sha256(r.content).digest() == hashlib.sha256(item.body).digest()
    assert r.content == item.body

    [scans] = large["attachments"]
    assert scans["filename"] == "scans.bin"
    r = await http.get(scans["downloadUrl"])
    assert r.status_code == 200
    assert r.content == attachment


async def test_a_message_over_the_size_limit_is_listed_by_its_folder_with_the_reason(
    http: httpx.AsyncClient, gw_store: Store, credential_box: CredentialBox, dovecot: DovecotServer
) -> None:
    user, password = new_user(dovecot)
    mail = list(generate(6, seed=21))
    big = large_message(random.Random(21).randbytes(2 * MIB))
    dovecot.append(user, password, "INBOX", [*mail[:4], big, mail[4]])
    dovecot.append(user, password, "Archive", mail[5:])
    endpoint = accounts.ImapEndpoint(dovecot.host, dovecot.port, "none", user)
    account = await accounts.create(gw_store, credential_box, f"{user}@example.test", endpoint, password)

    await AccountSync(gw_store, credential_box, account, Tuning(max_message_bytes=MIB)).run_once()

    async with gw_store.sessions() as session, session.begin():
        client = Client(http, await tokens.create_token(session, [account]))
    found = await client.data(
        """query($a: ID!) { folders(accountId: $a, first: 20) { nodes {
            name messageCount skippedMessages { uid size kind reason skippedAt } } } }""",
        {"a": to_global("Account", account)},
    )
    folders = {f["name"]: f for f in found["folders"]["nodes"]}
    assert folders["Archive"]["messageCount"] == 1
    assert folders["Archive"]["skippedMessages"] == []
    assert folders["INBOX"]["messageCount"] == 5
    [skip] = folders["INBOX"]["skippedMessages"]
    assert (skip["uid"], skip["size"], skip["kind"]) == (5, len(big), "too_large")
    assert skip["reason"] == f"{len(big)} bytes: over the limit of {MIB} bytes"
