"""Support for tests and benchmarks of the gateway (never imported by the app itself).

Mail to seed through the schema write API, the interim DDL of the gateway's tables, a real uvicorn server in a
thread, and a small GraphQL client over real HTTP.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any

import httpx
import uvicorn
from sqlalchemy import select
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.server import uvicorn_config
from inboxql.devmail import free_port
from mime import parse_message
from mime.compose import Draft, Mailbox
from schema import accounts, actions, folders, messages, outbox, tokens, uploads
from schema.crypto import CredentialBox
from schema.models import Message
from schema.settings import Settings
from schema.unit import Store

BASE_TIME = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


@dataclass
class Mail:
    subject: str
    sender: str
    to: Sequence[str]
    body: str
    cc: Sequence[str] = ()
    when: datetime = BASE_TIME
    attachments: Sequence[tuple[str, str, bytes]] = ()  # (filename, content type, bytes)
    message_id: str | None = None
    in_reply_to: str | None = None
    flags: tuple[str, ...] = ()
    html: str | None = None

    def raw(self) -> bytes:
        msg = EmailMessage()
        msg["Subject"] = self.subject
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        if self.cc:
            msg["Cc"] = ", ".join(self.cc)
        msg["Date"] = format_datetime(self.when)
        msg["Message-ID"] = self.message_id or make_msgid(domain="example.test")
        if self.in_reply_to:
            msg["In-Reply-To"] = self.in_reply_to
            msg["References"] = self.in_reply_to
        msg.set_content(self.body)
        if self.html:
            msg.add_alternative(self.html, subtype="html")
        for filename, content_type, data in self.attachments:
            maintype, subtype = content_type.split("/")
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
        return bytes(msg)


def fetched(uid: int, raw: bytes, flags: Iterable[str] = (), when: datetime | None = None) -> messages.Fetched:
    return messages.Fetched(
        uid=uid,
        flags=tuple(flags),
        modseq=None,
        identity="hash:" + hashlib.sha256(raw).hexdigest()[:40],
        internaldate=when,
        raw=raw,
        parsed=parse_message(raw),
    )


@dataclass
class SeededAccount:
    id: int
    address: str
    folders: dict[str, int] = field(default_factory=dict)
    raws: list[bytes] = field(default_factory=list)
    # Uploads (POST /uploads) of the account: not Nodes, so the tenancy walks take them from here.
    uploads: list[int] = field(default_factory=list)


async def add_folder(store: Store, account_id: int, name: str, role: str | None) -> int:
    async with store.unit(account_id) as uow:
        folder = await folders.create(uow, folders.Discovered(name=name, delimiter="/", attributes=(), role=role))
        return folder.id


async def deliver(
    store: Store, account_id: int, folder_id: int, items: Sequence[tuple[bytes, Sequence[str]]], first_uid: int = 1
) -> None:
    async with store.unit(account_id) as uow:
        await messages.add(
            uow,
            folder_id,
            1,
            [fetched(first_uid + i, raw, flags) for i, (raw, flags) in enumerate(items)],
        )


class ServerThread:
    """A real uvicorn server on a loopback port, in a thread with its own event loop."""

    def __init__(self, app: Starlette, port: int, config: uvicorn.Config | None = None) -> None:
        self.app = app
        self.port = port
        config = config or uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="gateway-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class Client:
    """A GraphQL client over real HTTP."""

    def __init__(self, http: httpx.AsyncClient, token: str | None) -> None:
        self.http = http
        self.token = token

    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    async def post(self, query: str, variables: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        return await self.http.post("/graphql", json=body, headers={**self.headers(), **headers})

    async def run(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Execute and return the whole JSON answer (data, errors, extensions)."""
        response = await self.post(query, variables)
        assert response.status_code < 500, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """Execute a query that must succeed, and return its data."""
        answer = await self.run(query, variables)
        assert "errors" not in answer, answer["errors"]
        data: dict[str, Any] = answer["data"]
        return data


def hours(n: int) -> timedelta:
    return timedelta(hours=n)


ALICE = "alice@example.test"
BOB = "bob@other.test"
NEWSLETTERS = 60
PDF = b"%PDF-1.4\n% a tiny pdf\n" + bytes(range(256))

MALFORMED = (
    b"From: Broken Sender <broken@example.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: half a multipart\r\n"
    b"Date: Sun, 01 Mar 2026 08:00:00 +0000\r\n"
    b"Message-ID: <broken-1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="never-seen"\r\n'
    b"\r\n"
    b"there is no boundary line in this body\r\n"
)


@dataclass
class World:
    alice: SeededAccount
    bob: SeededAccount
    token_alice: str
    token_bob: str
    token_both: str


async def seed_alice(store: Store, box: CredentialBox) -> SeededAccount:
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", "alice")
    acc = SeededAccount(await accounts.create(store, box, ALICE, endpoint, "pw"), ALICE)
    for name, role in (("INBOX", "inbox"), ("Sent", "sent"), ("Archive", "archive")):
        acc.folders[name] = await add_folder(store, acc.id, name, role)
    q1 = Mail(
        "Quarterly report",
        "Bob Partner <bob@partner.test>",
        [f"Alice <{ALICE}>"],
        "Please find the quarterly figures attached.",
        cc=["carol@example.test"],
        when=BASE_TIME,
        attachments=[("report.pdf", "application/pdf", PDF)],
        message_id="<q1@partner.test>",
    ).raw()
    q2 = Mail(
        "Re: Quarterly report",
        "Carol <carol@example.test>",
        [ALICE, "bob@partner.test"],
        "Looks good to me.",
        when=BASE_TIME + hours(1),
        message_id="<q2@example.test>",
        in_reply_to="<q1@partner.test>",
        html="<p>Looks <b>good</b> to me.</p>",
    ).raw()
    q3 = Mail(
        "Re: Quarterly report",
        f"Alice <{ALICE}>",
        ["carol@example.test"],
        "Thanks both.",
        when=BASE_TIME + hours(2),
        message_id="<q3@example.test>",
        in_reply_to="<q2@example.test>",
    ).raw()
    umlauts = Mail(
        "Grüße aus München",
        "Jürgen Müller <jm@example.de>",
        [ALICE],
        "Schöne Grüße vom Viktualienmarkt.",
        when=BASE_TIME + hours(3),
        attachments=[("Übersicht.txt", "text/plain", "Käse und Brezn\n".encode())],
    ).raw()
    letters = [
        Mail(
            f"Newsletter {i}",
            "The List <news@list.test>",
            [ALICE],
            f"Weekly digest number {i} about gardening.",
            when=BASE_TIME - hours(i),
        ).raw()
        for i in range(1, NEWSLETTERS + 1)
    ]
    inbox: list[tuple[bytes, list[str]]] = [
        (q1, ["\\Seen", "work"]),
        (q2, ["work"]),
        (umlauts, ["\\Flagged"]),
        (MALFORMED, []),
    ]
    inbox += [(raw, ["\\Seen"] if i % 2 == 0 else []) for i, raw in enumerate(letters)]
    await deliver(store, acc.id, acc.folders["INBOX"], inbox)
    await deliver(store, acc.id, acc.folders["Sent"], [(q3, ["\\Seen"])])
    await deliver(store, acc.id, acc.folders["Archive"], [(q1, ["\\Seen", "work"])])
    acc.raws = [raw for raw, _ in inbox] + [q3]
    return acc


async def seed_bob(store: Store, box: CredentialBox) -> SeededAccount:
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", "bob")
    acc = SeededAccount(await accounts.create(store, box, BOB, endpoint, "pw"), BOB)
    for name, role in (("INBOX", "inbox"), ("Secret", None)):
        acc.folders[name] = await add_folder(store, acc.id, name, role)
    z1 = Mail(
        "Zanzibar plans",
        "Eve <eve@other.test>",
        [BOB],
        "The zanzibar meeting is moved. Quarterly report follows.",
        when=BASE_TIME + hours(5),
        attachments=[("secret.txt", "text/plain", b"bob's secret\n")],
        message_id="<z1@other.test>",
    ).raw()
    z2 = Mail(
        "Re: Zanzibar plans",
        f"Bob <{BOB}>",
        ["eve@other.test"],
        "Noted, zanzibar it is.",
        when=BASE_TIME + hours(6),
        message_id="<z2@other.test>",
        in_reply_to="<z1@other.test>",
    ).raw()
    await deliver(store, acc.id, acc.folders["INBOX"], [(z1, ["private"]), (z2, ["\\Flagged", "private"])])
    await deliver(store, acc.id, acc.folders["Secret"], [(z1, ["private"])])
    # Bob marked his own reply read through a mutation: an action of his, for the tenancy walks.
    async with store.unit(acc.id) as uow:
        own = await uow.session.scalar(
            select(Message.id).where(Message.account_id == acc.id, Message.message_id_header == "z2@other.test")
        )
        assert own is not None
        await actions.set_flags(uow, [own], ["\\Seen"], [])
    # A message Bob queued for next year (nothing sends in these tests), and a file he uploaded.
    async with store.unit(acc.id) as uow:
        draft = Draft(Mailbox(BOB), to=(Mailbox("eve@other.test", "Eve"),), subject="Zanzibar flights", text="zanzibar")
        await outbox.queue_draft(uow, draft, send_at=BASE_TIME + timedelta(days=365))
    async with store.sessions() as session, session.begin():
        upload = await uploads.put(session, acc.id, None, "secret.txt", "text/plain", b"bob's secret upload\n")
        acc.uploads.append(upload.id)
    acc.raws = [z1, z2]
    return acc


async def seed_world(store: Store, box: CredentialBox) -> World:
    """Alice's and Bob's mail, and a token for each and one for both.

    Alice's and Bob's tokens have the admin scope, so tenancy checks walk the webhook fields too (the scope
    never widens the accounts a token reaches).
    """
    alice = await seed_alice(store, box)
    bob = await seed_bob(store, box)
    async with store.sessions() as session, session.begin():
        token_alice = await tokens.create_token(session, [alice.id], admin=True)
        token_bob = await tokens.create_token(session, [bob.id], admin=True)
        token_both = await tokens.create_token(session, [alice.id, bob.id])
    return World(alice, bob, token_alice, token_bob, token_both)


def start_gateway(settings: Settings, config: GatewayConfig | None = None, *, access_log: bool = False) -> ServerThread:
    """The gateway served as `inboxql gateway` serves it (gateway.server.uvicorn_config), on a free port."""
    config = config or GatewayConfig()
    app, port = create_app(settings, config), free_port()
    log_level = "info" if access_log else "warning"
    server = ServerThread(
        app, port, uvicorn_config(app, config, "127.0.0.1", port, log_level=log_level, access_log=access_log)
    )
    server.start()
    return server
