"""A folder another client renames on the server keeps its id: the same GraphQL id through a real gateway, its
messages the same ids, and the change log says "updated", never "deleted" then "created"."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from gateway.config import GatewayConfig
from gateway.ids import to_global
from gateway.testing import Client, start_gateway
from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import tokens
from schema.crypto import CredentialBox
from schema.models import ChangeLog, Message
from schema.settings import Settings
from schema.unit import Store
from tests.sync.support import add_account, assert_identical, connect, sync_once

FOLDERS = "query($a: ID!) { folders(accountId: $a, first: 100) { nodes { id name messageCount } } }"
IN_FOLDER = """query($a: ID!, $f: ID!) {
    messages(accountId: $a, filter: {folderId: $f}, first: 50) { nodes { id } } }"""


async def folders_by_name(client: Client, account: str) -> dict[str, dict[str, Any]]:
    """The account's folders by name: id, messageCount and the ids of their messages."""
    found = {}
    for node in (await client.data(FOLDERS, {"a": account}))["folders"]["nodes"]:
        held = await client.data(IN_FOLDER, {"a": account, "f": node["id"]})
        found[node["name"]] = {**node, "messages": sorted(m["id"] for m in held["messages"]["nodes"])}
    return found


async def test_a_folder_renamed_by_another_client_keeps_its_id_and_its_messages(
    store: Store, credential_box: CredentialBox, settings: Settings, dovecot: DovecotServer, mail_user: tuple[str, str]
) -> None:
    """ "Clients" (with a child "Clients/Acme", which the server renames along) and the empty "Someday"."""
    user, password = mail_user
    setup = await connect(dovecot, user, password)
    try:
        for name in ("Clients", "Clients/Acme", "Someday"):
            await setup.create(name)
    finally:
        await setup.logout()
    mail = list(generate(5, seed=23))
    dovecot.append(user, password, "Clients", mail[:3])
    dovecot.append(user, password, "Clients/Acme", mail[3:])
    account_id = await add_account(store, credential_box, dovecot, user, password)
    await sync_once(store, credential_box, account_id)
    async with store.sessions() as s, s.begin():
        token = await tokens.create_token(s, [account_id])
    async with store.sessions() as s:
        before_messages = set(await s.scalars(select(Message.id).where(Message.account_id == account_id)))
        last_seq = await s.scalar(
            select(ChangeLog.seq).where(ChangeLog.account_id == account_id).order_by(ChangeLog.seq.desc()).limit(1)
        )

    account = to_global("Account", account_id)
    gateway = start_gateway(settings, GatewayConfig(webhooks=False))
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            client = Client(http, token)
            before = await folders_by_name(client, account)

            other = await connect(dovecot, user, password)
            try:
                await other.rename("Clients", "Customers")
                await other.rename("Someday", "Later")
            finally:
                await other.logout()
            await sync_once(store, credential_box, account_id)

            after = await folders_by_name(client, account)
    finally:
        gateway.stop()

    renamed = {"Clients": "Customers", "Clients/Acme": "Customers/Acme", "Someday": "Later"}
    for old, new in renamed.items():
        assert old not in after
        assert after[new]["id"] == before[old]["id"], (old, new)
        assert after[new]["messageCount"] == before[old]["messageCount"]
        assert after[new]["messages"] == before[old]["messages"]
    assert {n: f["id"] for n, f in after.items() if n not in renamed.values()} == {
        n: f["id"] for n, f in before.items() if n not in renamed
    }
    assert [len(before[name]["messages"]) for name in renamed] == [3, 2, 0]

    async with store.sessions() as s:
        after_messages = set(await s.scalars(select(Message.id).where(Message.account_id == account_id)))
        logged = (
            await s.execute(
                select(ChangeLog.object_type, ChangeLog.op).where(
                    ChangeLog.account_id == account_id, ChangeLog.seq > (last_seq or 0)
                )
            )
        ).all()
    assert after_messages == before_messages
    folder_ops = sorted(op for kind, op in logged if kind == "folder")
    assert folder_ops == ["update"] * 3, logged
    assert not [(kind, op) for kind, op in logged if kind == "message" and op != "update"], logged
    await assert_identical(store, credential_box, account_id)
