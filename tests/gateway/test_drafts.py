"""Draft mutations end to end: the gateway over real HTTP, the sync core against the real Dovecot (checked with a
plain imaplib connection), and sendDraft delivered by the real Postfix into another user's INBOX."""

from __future__ import annotations

import asyncio
import email
import imaplib
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import httpx
import pytest

from gateway.ids import to_global
from gateway.testing import Client
from inboxql.devmail import DovecotServer
from inboxql.devsmtp import PostfixServer
from inboxql.mailgen import generate
from schema import accounts, tokens
from schema.crypto import CredentialBox
from schema.unit import Store
from tests.conftest import new_user
from tests.gateway.test_mutations import codes, make_mailbox
from tests.sync.support import assert_identical, sync_once

DRAFT = "draft { id subject to { address name } bcc { address } draft unread textBody folders { name } thread { id } }"
PAYLOAD = f"action {{ id state kind }} {DRAFT}"
CREATE = f"mutation($input: CreateDraftInput!) {{ createDraft(input: $input) {{ {PAYLOAD} }} }}"
UPDATE = f"mutation($input: UpdateDraftInput!) {{ updateDraft(input: $input) {{ {PAYLOAD} }} }}"
DELETE = f"mutation($input: DeleteDraftInput!) {{ deleteDraft(input: $input) {{ {PAYLOAD} }} }}"
SEND = "mutation($input: SendDraftInput!) { sendDraft(input: $input) { outboxId state action { id kind state } } }"
MESSAGES = """query($a: ID!) { messages(accountId: $a, first: 100) { nodes {
    id subject messageIdHeader draft folders { name } thread { id } } } }"""


def server_folder(dovecot: DovecotServer, user: str, password: str, folder: str) -> list[tuple[set[str], EmailMessage]]:
    client = imaplib.IMAP4(dovecot.host, dovecot.port)
    client.login(user, password)
    try:
        client.select(folder, readonly=True)
        _, data = client.uid("SEARCH", "ALL")
        found = []
        for uid in data[0].split():
            _, parts = client.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
            meta, raw = parts[0]
            parsed = email.message_from_bytes(raw, policy=default_policy)
            assert isinstance(parsed, EmailMessage)
            found.append(({f.decode() for f in imaplib.ParseFlags(meta)}, parsed))
        return found
    finally:
        client.logout()


@dataclass
class Writer:
    store: Store
    box: CredentialBox
    dovecot: DovecotServer
    id: int
    gid: str
    user: str
    password: str
    client: Client

    async def sync(self) -> None:
        await sync_once(self.store, self.box, self.id)

    def drafts(self) -> list[tuple[set[str], EmailMessage]]:
        return server_folder(self.dovecot, self.user, self.password, "Drafts")

    async def messages(self) -> list[dict[str, Any]]:
        return list((await self.client.data(MESSAGES, {"a": self.gid}))["messages"]["nodes"])


async def make_writer(
    store: Store, box: CredentialBox, dovecot: DovecotServer, http: httpx.AsyncClient, smtp_port: int | None = None
) -> Writer:
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", list(generate(3, seed=11)))
    endpoint = accounts.ImapEndpoint(dovecot.host, dovecot.port, "none", user, str(dovecot.ca_file))
    smtp = accounts.SmtpSettings(dovecot.host, smtp_port, "starttls") if smtp_port is not None else None
    account = await accounts.create(store, box, dovecot.address(user), endpoint, password, smtp)
    await sync_once(store, box, account)
    async with store.sessions() as session, session.begin():
        token = await tokens.create_token(session, [account])
    return Writer(store, box, dovecot, account, to_global("Account", account), user, password, Client(http, token))


@pytest.fixture
async def writer(
    gw_store: Store, credential_box: CredentialBox, dovecot: DovecotServer, http: httpx.AsyncClient
) -> Writer:
    return await make_writer(gw_store, credential_box, dovecot, http)


async def test_create_then_update_twice_keeps_one_server_copy_and_the_same_id(writer: Writer) -> None:
    [parent, *_] = await writer.messages()
    created = (
        await writer.client.data(
            CREATE,
            {
                "input": {
                    "accountId": writer.gid,
                    "to": [{"address": "bea@example.test", "name": "Béa"}],
                    "bcc": [{"address": "hidden@example.test"}],
                    "text": "first",
                    "replyTo": parent["id"],
                    "idempotencyKey": "draft-1",
                }
            },
        )
    )["createDraft"]
    draft = created["draft"]
    assert created["action"]["kind"] == "draft_save"
    assert created["action"]["state"] == "PENDING"
    assert draft["draft"] is True
    assert draft["unread"] is False
    assert draft["folders"] == [{"name": "Drafts"}]
    assert draft["subject"].startswith("Re: ")
    assert draft["thread"]["id"] == parent["thread"]["id"]  # joined to the message it answers
    assert draft["bcc"] == [{"address": "hidden@example.test"}]
    # A retry with the key gets the same draft, not a second one.
    again = await writer.client.data(
        CREATE, {"input": {"accountId": writer.gid, "text": "first", "idempotencyKey": "draft-1"}}
    )
    assert again["createDraft"]["draft"]["id"] == draft["id"]

    await writer.sync()
    [(flags, copy)] = writer.drafts()
    assert {"\\Draft", "\\Seen"} <= flags
    assert copy["Bcc"] == "hidden@example.test"
    assert copy["In-Reply-To"] == f"<{parent['messageIdHeader'].strip('<>')}>"

    for n, text in enumerate(("second", "third")):
        updated = (
            await writer.client.data(UPDATE, {"input": {"id": draft["id"], "text": text, "subject": f"Plan {n}"}})
        )["updateDraft"]
        assert updated["draft"]["id"] == draft["id"]
        assert updated["draft"]["textBody"].strip() == text
        assert updated["draft"]["to"] == [{"address": "bea@example.test", "name": "Béa"}]  # kept
        await writer.sync()
    [(flags, copy)] = writer.drafts()
    assert "\\Draft" in flags
    assert copy["Subject"] == "Plan 1"
    assert copy.get_content().strip() == "third"
    assert copy["Bcc"] == "hidden@example.test"
    drafts = [m for m in await writer.messages() if m["draft"]]
    assert [m["id"] for m in drafts] == [draft["id"]]
    await assert_identical(writer.store, writer.box, writer.id)


async def test_delete_draft_expunges_it_and_refuses_other_messages(writer: Writer) -> None:
    created = (await writer.client.data(CREATE, {"input": {"accountId": writer.gid, "subject": "Scrap"}}))[
        "createDraft"
    ]
    await writer.sync()
    assert len(writer.drafts()) == 1
    [inbox_message, *_] = [m for m in await writer.messages() if not m["draft"]]
    refused = await writer.client.run(DELETE, {"input": {"id": inbox_message["id"]}})
    assert codes(refused) == ["BAD_USER_INPUT"]

    deleted = (await writer.client.data(DELETE, {"input": {"id": created["draft"]["id"]}}))["deleteDraft"]
    assert deleted["action"]["kind"] == "expunge"
    await writer.sync()
    assert writer.drafts() == []
    assert created["draft"]["id"] not in {m["id"] for m in await writer.messages()}
    await assert_identical(writer.store, writer.box, writer.id)


async def test_refusals(writer: Writer, shared_other: Writer) -> None:
    # Another account's draft reads like a missing one.
    theirs = (await shared_other.client.data(CREATE, {"input": {"accountId": shared_other.gid, "subject": "x"}}))[
        "createDraft"
    ]["draft"]["id"]
    for query, input_ in (
        (UPDATE, {"id": theirs, "text": "mine now"}),
        (DELETE, {"id": theirs}),
        (SEND, {"id": theirs}),
        (CREATE, {"accountId": shared_other.gid, "text": "x"}),
        (CREATE, {"accountId": writer.gid, "replyTo": theirs}),
    ):
        assert codes(await writer.client.run(query, {"input": input_})) == ["NOT_FOUND"], input_
    # Line breaks in a header field and bad addresses: BAD_USER_INPUT naming the field, nothing written.
    for input_, field in (
        ({"subject": "Hi\r\nBcc: eve@example.test"}, "subject"),
        ({"to": [{"address": "a@example.test", "name": "A\nBcc: eve@example.test"}]}, "to[0].name"),
        ({"cc": [{"address": "not an address"}]}, "cc[0].address"),
    ):
        answer = await writer.client.run(CREATE, {"input": {"accountId": writer.gid, **input_}})
        assert codes(answer) == ["BAD_USER_INPUT"], answer
        assert field in answer["errors"][0]["message"]
    assert not [m for m in await writer.messages() if m["draft"]]
    # No SMTP settings: sendDraft is refused.
    mine = await writer.client.data(CREATE, {"input": {"accountId": writer.gid, "to": [{"address": "b@x.test"}]}})
    answer = await writer.client.run(SEND, {"input": {"id": mine["createDraft"]["draft"]["id"]}})
    assert codes(answer) == ["BAD_USER_INPUT"]
    assert "SMTP" in answer["errors"][0]["message"]


@pytest.fixture
async def shared_other(
    gw_store: Store, credential_box: CredentialBox, dovecot: DovecotServer, http: httpx.AsyncClient
) -> Writer:
    return await make_writer(gw_store, credential_box, dovecot, http)


async def test_send_draft_delivers_through_postfix_and_leaves_drafts(
    gw_store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    http: httpx.AsyncClient,
    postfix: PostfixServer,
) -> None:
    sender = await make_writer(gw_store, credential_box, dovecot, http, postfix.port)
    recipient = await make_mailbox(gw_store, credential_box, dovecot, http, count=1)
    address = dovecot.address(recipient.imap.user)
    created = (
        await sender.client.data(
            CREATE, {"input": {"accountId": sender.gid, "to": [{"address": address, "name": "B"}], "text": "draft"}}
        )
    )["createDraft"]
    await sender.client.data(UPDATE, {"input": {"id": created["draft"]["id"], "subject": "Sent from a draft"}})
    sent = (await sender.client.data(SEND, {"input": {"id": created["draft"]["id"], "idempotencyKey": "send-1"}}))[
        "sendDraft"
    ]
    assert sent["state"] == "queued"
    assert sent["action"]["kind"] == "expunge"
    retried = await sender.client.data(SEND, {"input": {"id": created["draft"]["id"], "idempotencyKey": "send-1"}})
    assert retried["sendDraft"]["outboxId"] == sent["outboxId"]

    await sender.sync()
    after = await sender.client.data(SEND, {"input": {"id": created["draft"]["id"], "idempotencyKey": "send-1"}})
    assert after["sendDraft"]["state"] == "sent"
    got: list[EmailMessage] = []
    for _ in range(50):
        got = [
            m
            for _, m in server_folder(dovecot, recipient.imap.user, recipient.imap.password, "INBOX")
            if m["Subject"] == "Sent from a draft"
        ]
        if got:
            break
        await asyncio.sleep(0.1)
    assert len(got) == 1
    assert got[0].get_content().strip() == "draft"
    assert sender.drafts() == []
    assert [s["Subject"] for _, s in server_folder(dovecot, sender.user, sender.password, "Sent")] == [
        "Sent from a draft"
    ]
    await sender.sync()
    assert not [m for m in await sender.messages() if m["draft"]]
    await assert_identical(sender.store, sender.box, sender.id)


def _attachments(message: EmailMessage) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for part in message.iter_attachments():
        assert isinstance(part, EmailMessage)
        data = part.get_payload(decode=True)
        assert isinstance(data, bytes)
        found[part.get_filename() or ""] = data
    return found


async def test_attachments_of_a_draft_survive_edits_and_reach_the_recipient(
    gw_store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    http: httpx.AsyncClient,
    postfix: PostfixServer,
) -> None:
    sender = await make_writer(gw_store, credential_box, dovecot, http, postfix.port)
    recipient = await make_mailbox(gw_store, credential_box, dovecot, http, count=1)
    # A draft another mail client saved, with an attachment: edited here, it keeps it.
    theirs = EmailMessage()
    theirs["From"] = dovecot.address(sender.user)
    theirs["To"] = dovecot.address(recipient.imap.user)
    theirs["Subject"] = "Plans"
    theirs["Message-ID"] = "<plans-draft@example.test>"
    theirs.set_content("see the plan")
    plan = bytes(range(256)) * 40
    theirs.add_attachment(plan, maintype="application", subtype="octet-stream", filename="plan.bin")
    dovecot.append(sender.user, sender.password, "Drafts", [(theirs.as_bytes(), ("\\Draft", "\\Seen"))])
    await sender.sync()
    [draft] = [m for m in await sender.messages() if m["draft"]]
    attachments = "query($id: ID!) { node(id: $id) { ... on Message { subject attachments { id filename } } } }"
    [old] = (await sender.client.data(attachments, {"id": draft["id"]}))["node"]["attachments"]
    assert old["filename"] == "plan.bin"

    await sender.client.data(UPDATE, {"input": {"id": draft["id"], "subject": "Plans, v2"}})
    await sender.sync()
    [(_, saved)] = sender.drafts()
    assert saved["Subject"] == "Plans, v2"
    assert _attachments(saved) == {"plan.bin": plan}  # before, the edit was refused

    # One attachment out, an upload in; then sent: the recipient gets the new set, once.
    notes = "notes \N{EM DASH} v2\n".encode() * 100
    uploaded = await http.post(
        f"/uploads?accountId={sender.gid}&filename=notes.txt",
        content=notes,
        headers={**sender.client.headers(), "content-type": "text/plain"},
    )
    assert uploaded.status_code == 201, uploaded.text
    [now] = (await sender.client.data(attachments, {"id": draft["id"]}))["node"]["attachments"]
    foreign = await sender.client.run(UPDATE, {"input": {"id": draft["id"], "removeAttachments": [old["id"]]}})
    assert codes(foreign) == ["BAD_USER_INPUT"]  # an attachment id of the version before: read again
    edited = {"id": draft["id"], "removeAttachments": [now["id"]], "addAttachments": [uploaded.json()["id"]]}
    await sender.client.data(UPDATE, {"input": edited})
    await sender.sync()
    [(_, saved)] = sender.drafts()
    assert set(_attachments(saved)) == {"notes.txt"}
    await sender.client.data(SEND, {"input": {"id": draft["id"]}})
    await sender.sync()
    got: list[EmailMessage] = []
    for _ in range(50):
        got = [
            m
            for _, m in server_folder(dovecot, recipient.imap.user, recipient.imap.password, "INBOX")
            if m["Subject"] == "Plans, v2"
        ]
        if got:
            break
        await asyncio.sleep(0.1)
    [delivered] = got
    assert _attachments(delivered) == {"notes.txt": notes}
    assert sender.drafts() == []
    await assert_identical(sender.store, sender.box, sender.id)
