"""Sending through the gateway, end to end: an upload over HTTP, sendMessage, the account's executor submitting to a
real Postfix that delivers into the real Dovecot, and the recipients' mailboxes read with plain imaplib.

A reply with a Bcc and an uploaded attachment reaches To and Bcc once each, with no Bcc header and the attachment
byte for byte; the sent message is in the original's thread before it is sent; undo send takes a message back
before it goes; a sendAt in the future waits; refusals are typed and write nothing; an idempotency key sends once.
"""

from __future__ import annotations

import asyncio
import email
import imaplib
import json
import secrets
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, select

from gateway.config import GatewayConfig
from gateway.ids import to_global
from gateway.testing import Client, ServerThread, start_gateway
from inboxql.devmail import DovecotServer
from inboxql.devsmtp import PostfixServer
from schema import accounts, tokens
from schema.crypto import CredentialBox
from schema.models import Outbox, Upload
from schema.settings import Settings
from schema.unit import Store
from synccore.account import AccountSync, Tuning
from tests.conftest import new_user
from tests.sync.support import sync_once

UNDO_SECONDS = 2.0
MAX_UPLOAD = 256 * 1024
ORIGINAL_SUBJECT = "Lunch on Friday?"

SEND = """mutation($input: SendMessageInput!) { sendMessage(input: $input) {
    id state
    outbox { id state sendAt sentAt recipients error smtpResponse messageIdHeader repliedMessage { id } }
    message { id subject bcc { address } folders { role } thread { id } attachments { filename size } } } }"""
CANCEL = """mutation($input: CancelSendInput!) { cancelSend(input: $input) {
    id state outbox { id state message { id } } } }"""
ENTRY = """query($id: ID!) { node(id: $id) { ... on OutboxEntry {
    id state sentAt error smtpResponse message { id folders { role } } repliedMessage { id answered } } } }"""
OUTBOX = """query($a: ID!, $states: [OutboxState!]) { outbox(accountId: $a, states: $states, first: 50) {
    totalCount nodes { id state } } }"""
MESSAGES = """query($a: ID!) { messages(accountId: $a, first: 100) { nodes {
    id subject messageIdHeader answered thread { id } folders { role } } } }"""


def codes(answer: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in answer.get("errors") or ()]


def soon() -> str:
    """A sendAt that sends at once (a time in the past is now)."""
    return (datetime.now(UTC) - timedelta(seconds=1)).isoformat()


@pytest.fixture(scope="module")
def send_gateway(gw_settings: Settings) -> Iterator[ServerThread]:
    server = start_gateway(gw_settings, GatewayConfig(undo_send_seconds=UNDO_SECONDS, max_upload_bytes=MAX_UPLOAD))
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def send_http(send_gateway: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=send_gateway.url, timeout=60) as client:
        yield client


# -- mailboxes on the Dovecot, sending through the Postfix --------------------------------------------------


@dataclass
class Sender:
    store: Store
    box: CredentialBox
    dovecot: DovecotServer
    user: str
    password: str
    id: int
    gid: str
    client: Client
    read_only: Client
    token: str

    @property
    def address(self) -> str:
        return self.dovecot.address(self.user)

    async def upload(
        self, data: bytes, filename: str, content_type: str = "application/pdf", account: str | None = None
    ) -> httpx.Response:
        url = f"/uploads?accountId={account or self.gid}&filename={quote(filename)}"
        return await self.client.http.post(
            url, content=data, headers={"authorization": f"Bearer {self.token}", "content-type": content_type}
        )

    async def send(self, **fields: Any) -> dict[str, Any]:
        # JSON with \u escapes (httpx would write UTF-8, which cannot carry a lone surrogate to be refused)
        body = json.dumps({"query": SEND, "variables": {"input": {"accountId": self.gid, **fields}}})
        headers = {**self.client.headers(), "content-type": "application/json"}
        response = await self.client.http.post("/graphql", content=body, headers=headers)
        assert response.status_code < 500, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def sent(self, **fields: Any) -> dict[str, Any]:
        answer = await self.send(**fields)
        assert "errors" not in answer, answer["errors"]
        payload: dict[str, Any] = answer["data"]["sendMessage"]
        return payload

    async def entry(self, gid: str) -> dict[str, Any]:
        found: dict[str, Any] = (await self.client.data(ENTRY, {"id": gid}))["node"]
        return found

    async def messages(self) -> list[dict[str, Any]]:
        return list((await self.client.data(MESSAGES, {"a": self.gid}))["messages"]["nodes"])

    async def drain(self) -> float | None:
        """What `inboxql sync` does when the bell rings: the account's executor performs actions and sends."""
        executor = AccountSync(self.store, self.box, self.id, Tuning())._executor()
        wait = None
        try:
            for _ in range(3):  # a send queues \\Answered: the next pass performs it
                wait = await executor.drain()
        finally:
            await executor.close()
        return wait

    async def outbox_rows(self) -> int:
        async with self.store.sessions() as s:
            return int(await s.scalar(select(func.count()).where(Outbox.account_id == self.id)) or 0)


async def make_sender(
    store: Store,
    box: CredentialBox,
    dovecot: DovecotServer,
    http: httpx.AsyncClient,
    smtp_port: int | None,
    inbox: Sequence[bytes] = (),
) -> Sender:
    user, password = new_user(dovecot)
    if inbox:
        dovecot.append(user, password, "INBOX", list(inbox))
    endpoint = accounts.ImapEndpoint(dovecot.host, dovecot.port, "none", user, str(dovecot.ca_file))
    smtp = None if smtp_port is None else accounts.SmtpSettings(dovecot.host, smtp_port, "starttls")
    account = await accounts.create(store, box, dovecot.address(user), endpoint, password, smtp)
    await sync_once(store, box, account)
    async with store.sessions() as session, session.begin():
        writer = await tokens.create_token(session, [account])
        reader = await tokens.create_token(session, [account], read_only=True)
    return Sender(
        store,
        box,
        dovecot,
        user,
        password,
        account,
        to_global("Account", account),
        Client(http, writer),
        Client(http, reader),
        writer,
    )


@pytest.fixture
async def people(
    gw_store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    postfix: PostfixServer,
    send_http: httpx.AsyncClient,
) -> tuple[Sender, Sender, Sender]:
    """A, who got a message from B and replies; B (who has a message of their own); C (Bcc)."""
    own = (
        "From: Zed <zed@inboxql.test>\r\nTo: B <b@inboxql.test>\r\nSubject: B's own\r\n"
        f"Message-ID: <own-{secrets.token_hex(4)}@inboxql.test>\r\nDate: Fri, 04 Dec 2026 10:00:00 +0000\r\n\r\nhi\r\n"
    ).encode()
    b = await make_sender(gw_store, credential_box, dovecot, send_http, postfix.port, [own])
    c = await make_sender(gw_store, credential_box, dovecot, send_http, postfix.port)
    original = (
        f"From: B <{b.address}>\r\nTo: A <someone@inboxql.test>\r\nSubject: {ORIGINAL_SUBJECT}\r\n"
        f"Message-ID: <original-{secrets.token_hex(4)}@inboxql.test>\r\n"
        "Date: Sat, 05 Dec 2026 10:00:00 +0000\r\n\r\nShall we?\r\n"
    ).encode()
    a = await make_sender(gw_store, credential_box, dovecot, send_http, postfix.port, [original])
    return a, b, c


# -- the recipients' side, through plain IMAP ---------------------------------------------------------------


def _inbox(dovecot: DovecotServer, user: str, password: str, folder: str = "INBOX") -> list[tuple[set[str], Any]]:
    client = imaplib.IMAP4(dovecot.host, dovecot.port)
    client.login(user, password)
    try:
        client.select(folder, readonly=True)
        _, data = client.uid("SEARCH", "ALL")
        found = []
        for uid in data[0].split():
            _, parts = client.uid("FETCH", uid, "(FLAGS BODY.PEEK[])")
            meta, raw = parts[0]
            flags = {f.decode() for f in imaplib.ParseFlags(meta)}
            found.append((flags, email.message_from_bytes(raw, policy=default_policy)))
        return found
    finally:
        client.logout()


async def delivered(person: Sender, message_id: str, expect: bool = True) -> list[EmailMessage]:
    """The copies of a message in someone's INBOX, waiting a while for Postfix when one is expected."""
    got: list[EmailMessage] = []
    for _ in range(60 if expect else 10):
        got = [m for _, m in _inbox(person.dovecot, person.user, person.password) if m["Message-ID"] == message_id]
        if got and expect:
            await asyncio.sleep(0.3)  # a second copy would be right behind the first
            return [m for _, m in _inbox(person.dovecot, person.user, person.password) if m["Message-ID"] == message_id]
        await asyncio.sleep(0.2)
    return got


# -- sending ------------------------------------------------------------------------------------------------


async def test_a_reply_with_bcc_and_an_upload_is_delivered_once_threaded_and_answers_the_original(
    people: tuple[Sender, Sender, Sender],
) -> None:
    a, b, c = people
    [original] = await a.messages()
    data = bytes(range(256)) * 300 + secrets.token_bytes(1000)
    filename = "Übersicht März 2027 (été).pdf"
    uploaded = await a.upload(data, filename)
    assert uploaded.status_code == 201, uploaded.text
    upload = uploaded.json()
    assert upload["size"] == len(data)
    assert upload["filename"] == filename
    assert upload["contentType"] == "application/pdf"

    payload = await a.sent(
        to=[{"address": b.address, "name": "Bé Partner"}],
        bcc=[{"address": c.address}],
        text="Friday works. — A",
        replyTo=original["id"],
        attachments=[upload["id"]],
        sendAt=soon(),
    )
    # At once, before anything was sent: queued, in Sent, in the original's thread, its Bcc kept in the mirror.
    assert payload["state"] == "QUEUED"
    assert payload["id"] == payload["outbox"]["id"]
    assert payload["outbox"]["recipients"] == [b.address, c.address]
    assert payload["outbox"]["repliedMessage"] == {"id": original["id"]}
    message = payload["message"]
    assert message["subject"] == f"Re: {ORIGINAL_SUBJECT}"
    assert message["thread"]["id"] == original["thread"]["id"]
    assert message["folders"] == [{"role": "sent"}]
    assert message["bcc"] == [{"address": c.address}]
    assert message["attachments"] == [{"filename": filename, "size": len(data)}]

    await a.drain()
    entry = await a.entry(payload["id"])
    assert entry["state"] == "SENT", entry["error"]
    assert entry["smtpResponse"].startswith("250")
    assert entry["sentAt"] is not None
    assert entry["repliedMessage"] == {"id": original["id"], "answered": True}
    assert entry["message"]["id"] == message["id"]  # the filed Sent copy kept the mirror's id

    message_id = f"<{payload['outbox']['messageIdHeader']}>"
    for person in (b, c):
        copies = await delivered(person, message_id)
        assert len(copies) == 1, f"{person.user} got {len(copies)} copies"
        got = copies[0]
        assert got["Bcc"] is None
        if person is b:  # (C's own copy names C: the LMTP delivery's Received and Delivered-To say for whom)
            assert c.address not in got.as_string()
        assert got["From"].addresses[0].addr_spec == a.address
        assert got["In-Reply-To"] == f"<{original['messageIdHeader'].strip('<>')}>"
        assert got["Subject"] == f"Re: {ORIGINAL_SUBJECT}"
        [part] = list(got.iter_attachments())
        assert part.get_filename() == filename
        assert part.get_content_type() == "application/pdf"
        assert part.get_payload(decode=True) == data
        assert got.get_body(("plain",)).get_content().strip() == "Friday works. — A"  # type: ignore[union-attr]

    # The original is \Answered on the server; A's own Sent holds the copy once, with its Bcc.
    [(flags, _)] = _inbox(a.dovecot, a.user, a.password)
    assert "\\Answered" in flags
    filed = [m for _, m in _inbox(a.dovecot, a.user, a.password, "Sent") if m["Message-ID"] == message_id]
    assert len(filed) == 1
    assert filed[0]["Bcc"] == c.address

    listed = await a.client.data(OUTBOX, {"a": a.gid, "states": ["SENT"]})
    assert listed["outbox"] == {"totalCount": 1, "nodes": [{"id": payload["id"], "state": "SENT"}]}
    again = await a.client.run(CANCEL, {"input": {"id": payload["id"]}})
    assert codes(again) == ["BAD_USER_INPUT"]
    assert "already sent" in again["errors"][0]["message"]


async def test_undo_send_takes_the_message_back_before_it_goes(people: tuple[Sender, Sender, Sender]) -> None:
    a, b, _ = people
    before = datetime.now(UTC)
    payload = await a.sent(to=[{"address": b.address}], subject="Oops, wrong person", text="never mind")
    send_at = datetime.fromisoformat(payload["outbox"]["sendAt"])
    assert before + timedelta(seconds=UNDO_SECONDS - 0.5) <= send_at <= datetime.now(UTC) + timedelta(seconds=3)
    assert payload["message"]["folders"] == [{"role": "sent"}]
    assert await a.drain() is not None  # the executor would wake at the window's end

    cancelled = await a.client.data(CANCEL, {"input": {"id": payload["id"]}})
    assert cancelled["cancelSend"] == {
        "id": payload["id"],
        "state": "CANCELLED",
        "outbox": {"id": payload["id"], "state": "CANCELLED", "message": None},
    }
    # Gone from the mirror's Sent at once; the window passes and nothing is sent.
    assert payload["message"]["id"] not in {m["id"] for m in await a.messages()}
    await asyncio.sleep(UNDO_SECONDS)
    assert await a.drain() is None  # nothing left to wait for
    assert (await a.entry(payload["id"]))["state"] == "CANCELLED"
    assert await delivered(b, f"<{payload['outbox']['messageIdHeader']}>", expect=False) == []
    assert not [m for _, m in _inbox(a.dovecot, a.user, a.password, "Sent") if m["Subject"] == "Oops, wrong person"]
    # Cancelling again changes nothing and is no error.
    assert (await a.client.data(CANCEL, {"input": {"id": payload["id"]}}))["cancelSend"]["state"] == "CANCELLED"


async def test_a_send_at_in_the_future_stays_queued(people: tuple[Sender, Sender, Sender]) -> None:
    a, b, _ = people
    later = datetime.now(UTC) + timedelta(hours=1)
    payload = await a.sent(
        to=[{"address": b.address}], subject="Tomorrow's note", text="later", sendAt=later.isoformat()
    )
    assert abs(datetime.fromisoformat(payload["outbox"]["sendAt"]) - later) < timedelta(seconds=1)
    wait = await a.drain()
    assert wait is not None
    assert 3500 < wait <= 3600  # the executor sleeps until then (or its safety timer)
    assert (await a.entry(payload["id"]))["state"] == "QUEUED"
    listed = await a.client.data(OUTBOX, {"a": a.gid, "states": ["QUEUED"]})
    assert [n["id"] for n in listed["outbox"]["nodes"]] == [payload["id"]]
    await a.client.data(CANCEL, {"input": {"id": payload["id"]}})


async def test_an_idempotency_key_sends_once(people: tuple[Sender, Sender, Sender]) -> None:
    a, b, _ = people
    fields = {"to": [{"address": b.address}], "subject": "Exactly once", "text": "one", "sendAt": soon()}
    first, second = await asyncio.gather(
        a.sent(**fields, idempotencyKey="send-once-1"), a.sent(**fields, idempotencyKey="send-once-1")
    )
    assert first["id"] == second["id"]
    assert await a.outbox_rows() == 1
    await a.drain()
    assert (await a.entry(first["id"]))["state"] == "SENT"
    retried = await a.sent(**fields, idempotencyKey="send-once-1")
    assert retried["id"] == first["id"]
    assert retried["state"] == "SENT"
    await a.drain()
    assert len(await delivered(b, f"<{first['outbox']['messageIdHeader']}>")) == 1
    assert await a.outbox_rows() == 1


async def test_a_forward_attaches_the_message_whole(people: tuple[Sender, Sender, Sender]) -> None:
    a, b, _ = people
    [original] = await a.messages()
    payload = await a.sent(to=[{"address": b.address}], text="FYI", forward=original["id"], sendAt=soon())
    assert payload["message"]["subject"] == f"Fwd: {ORIGINAL_SUBJECT}"
    await a.drain()
    [got] = await delivered(b, f"<{payload['outbox']['messageIdHeader']}>")
    [part] = list(got.iter_attachments())
    assert part.get_content_type() == "message/rfc822"
    inner = part.get_content()
    assert inner["Subject"] == ORIGINAL_SUBJECT
    assert inner["Message-ID"] == f"<{original['messageIdHeader'].strip('<>')}>"
    assert got["In-Reply-To"] is None


# -- refusals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"to": [{"address": "not-an-address"}]}, "to[0].address"),
        ({"to": [{"address": "two@@example.test"}]}, "to[0].address"),
        ({"cc": [{"address": "x@example.test", "name": "Evil\r\nBcc: victim@example.test"}]}, "cc[0].name"),
        ({"subject": "Hello\r\nBcc: victim@example.test"}, "subject"),
        ({"subject": "Hello\nX-Injected: 1"}, "subject"),
        ({"bcc": [{"address": "a@example.test\r\nRCPT TO:<victim@example.test>"}]}, "bcc[0].address"),
        ({"to": []}, "to"),
        ({"subject": "x" * 2001}, "subject"),
        ({"text": "lone \ud800 surrogate"}, "text"),
        ({"to": [{"address": "b@example.test", "name": "\udfff"}]}, "to[0].name"),
    ],
)
async def test_bad_input_is_refused_naming_the_field_and_writes_nothing(
    people: tuple[Sender, Sender, Sender], fields: dict[str, Any], named: str
) -> None:
    a, b, _ = people
    answer = await a.send(**{"to": [{"address": b.address}], "text": "x", **fields})
    assert codes(answer) == ["BAD_USER_INPUT"], answer
    error = answer["errors"][0]
    assert error["message"].startswith(f"{named}:"), error
    assert error["extensions"]["field"] == named
    assert await a.outbox_rows() == 0
    assert len(await a.messages()) == 1


async def test_foreign_ids_are_not_found_and_write_nothing(people: tuple[Sender, Sender, Sender]) -> None:
    a, b, _ = people
    [bs_message] = await b.messages()
    theirs = await b.upload(b"bob's file", "bob.txt", "text/plain")
    assert theirs.status_code == 201
    mine = (await a.upload(b"mine", "mine.txt", "text/plain")).json()["id"]
    to = [{"address": b.address}]
    calls: list[dict[str, Any]] = [
        {"accountId": b.gid, "to": to},
        {"to": to, "attachments": [mine, theirs.json()["id"]]},
        {"to": to, "attachments": [to_global("Upload", 10**12)]},
        {"to": to, "replyTo": to_global("Message", 10**12)},
        {"to": to, "forward": to_global("Message", 10**12)},
        {"to": to, "replyTo": bs_message["id"]},
        {"to": to, "forward": bs_message["id"]},
    ]
    for fields in calls:
        answer = await a.client.run(SEND, {"input": {"accountId": a.gid, **fields}})
        assert codes(answer) == ["NOT_FOUND"], (fields, answer)
    cancel = await a.client.run(CANCEL, {"input": {"id": to_global("OutboxEntry", 10**12)}})
    assert codes(cancel) == ["NOT_FOUND"]
    assert await a.outbox_rows() == 0


async def test_an_account_without_smtp_settings_is_told_so(
    gw_store: Store, credential_box: CredentialBox, dovecot: DovecotServer, send_http: httpx.AsyncClient
) -> None:
    lone = await make_sender(gw_store, credential_box, dovecot, send_http, None)
    answer = await lone.send(to=[{"address": "x@example.test"}], text="x")
    assert codes(answer) == ["BAD_USER_INPUT"]
    assert "SMTP" in answer["errors"][0]["message"]
    assert await lone.outbox_rows() == 0


async def test_read_only_and_missing_tokens_may_not_send_or_upload(people: tuple[Sender, Sender, Sender]) -> None:
    a, b, _ = people
    variables = {"input": {"accountId": a.gid, "to": [{"address": b.address}], "text": "x"}}
    assert codes(await a.read_only.run(SEND, variables)) == ["FORBIDDEN"]
    assert codes(await Client(a.client.http, None).run(SEND, variables)) == ["UNAUTHENTICATED"]
    cancel = {"input": {"id": to_global("OutboxEntry", 1)}}
    assert codes(await a.read_only.run(CANCEL, cancel)) == ["FORBIDDEN"]
    url = f"/uploads?accountId={a.gid}&filename=x.txt"
    http = a.client.http
    refused = await http.post(url, content=b"x", headers={"authorization": f"Bearer {a.read_only.token}"})
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    anonymous = await http.post(url, content=b"x")
    assert anonymous.status_code == 401
    assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    bad = await http.post(url, content=b"x", headers={"authorization": "Bearer iqt_nonsense"})
    assert bad.status_code == 401
    assert await a.outbox_rows() == 0


async def test_uploads_are_checked_and_limited(people: tuple[Sender, Sender, Sender]) -> None:
    a, b, _ = people
    async with a.store.sessions() as s:
        before = int(await s.scalar(select(func.count()).select_from(Upload)) or 0)

    too_big = await a.upload(b"x" * (MAX_UPLOAD + 1), "big.bin", "application/octet-stream")
    assert too_big.status_code == 413
    assert too_big.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(MAX_UPLOAD // 4096 + 2):
            yield b"y" * 4096

    headers = {"authorization": f"Bearer {a.token}", "content-type": "application/octet-stream"}
    streamed = await a.client.http.post(f"/uploads?accountId={a.gid}&filename=s.bin", content=chunks(), headers=headers)
    assert streamed.status_code == 413

    assert (await a.upload(b"x", "evil\r\nname.txt")).status_code == 400
    assert (await a.upload(b"x", "../../etc/passwd")).status_code == 400
    assert (await a.upload(b"x", "x.txt", "not a type")).status_code == 400
    assert (await a.upload(b"x", "x.txt", "multipart/form-data; boundary=x")).status_code == 415
    foreign = await a.upload(b"x", "x.txt", account=b.gid)
    assert foreign.status_code == 404
    assert foreign.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    junk = await a.upload(b"x", "x.txt", account="nonsense")
    assert junk.status_code == 400

    exact = await a.upload(b"z" * MAX_UPLOAD, "exact.bin", "application/octet-stream")
    assert exact.status_code == 201
    again = await a.upload(b"z" * MAX_UPLOAD, "same-bytes.bin", "application/octet-stream")
    assert again.status_code == 201
    assert again.json()["id"] != exact.json()["id"]
    async with a.store.sessions() as s:
        after = int(await s.scalar(select(func.count()).select_from(Upload)) or 0)
        shas = set(await s.scalars(select(Upload.sha256).where(Upload.account_id == a.id)))
    assert after == before + 2
    assert len(shas) == 1  # stored once
    both = [exact.json()["id"], again.json()["id"]]
    answer = await a.send(to=[{"address": b.address}], attachments=both)
    assert codes(answer) == ["BAD_USER_INPUT"]
    assert answer["errors"][0]["extensions"]["field"] == "attachments"
