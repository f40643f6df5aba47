"""Attachment and raw downloads: signed links or bearer tokens, streamed bytes, foreign ids like missing."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from gateway.ids import to_global
from gateway.signing import Signer
from gateway.testing import PDF, Client, World
from schema import tokens
from schema.settings import Settings
from schema.unit import Store


async def attachments_of(client: Client, account_pk: int) -> dict[str, dict[str, Any]]:
    data = await client.data(
        """query($a: ID!) { messages(accountId: $a, filter: {hasAttachment: true}) { nodes {
            id rawUrl attachments { id filename contentType size downloadUrl } } } }""",
        {"a": to_global("Account", account_pk)},
    )
    return {a["filename"]: {**a, "message": m} for m in data["messages"]["nodes"] for a in m["attachments"]}


async def test_a_signed_link_streams_the_decoded_attachment(
    http: httpx.AsyncClient, alice: Client, world: World
) -> None:
    found = await attachments_of(alice, world.alice.id)
    pdf = found["report.pdf"]
    r = await http.get(pdf["downloadUrl"])  # no Authorization header: the link is signed
    assert r.status_code == 200
    assert r.content == PDF
    assert r.headers["content-type"] == "application/pdf"
    assert 'filename="report.pdf"' in r.headers["content-disposition"]
    assert r.headers["x-content-type-options"] == "nosniff"
    umlauts = found["Übersicht.txt"]
    r = await http.get(umlauts["downloadUrl"])
    assert r.content == "Käse und Brezn\n".encode()
    assert f"filename*=UTF-8''{quote('Übersicht.txt')}" in r.headers["content-disposition"]


async def test_a_bearer_token_works_without_a_signature(http: httpx.AsyncClient, alice: Client, world: World) -> None:
    pdf = (await attachments_of(alice, world.alice.id))["report.pdf"]
    r = await http.get(f"/attachments/{pdf['id']}", headers=alice.headers())
    assert r.status_code == 200
    assert r.content == PDF
    r = await http.get(f"/attachments/{pdf['id']}")
    assert r.status_code == 401
    assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_the_raw_message_is_byte_exact(http: httpx.AsyncClient, alice: Client, world: World) -> None:
    pdf = (await attachments_of(alice, world.alice.id))["report.pdf"]
    r = await http.get(pdf["message"]["rawUrl"])
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("message/rfc822")
    assert r.content in world.alice.raws


async def test_tampered_or_expired_links_are_refused(
    http: httpx.AsyncClient, alice: Client, world: World, gw_settings: Settings
) -> None:
    pdf = (await attachments_of(alice, world.alice.id))["report.pdf"]
    url = httpx.URL(pdf["downloadUrl"])
    other = (await attachments_of(alice, world.alice.id))["Übersicht.txt"]["id"]
    moved = url.copy_with(path=f"/attachments/{other}")
    assert (await http.get(str(moved))).status_code == 401
    signature = url.params["s"]
    forged = url.copy_set_param("s", ("0" if signature[0] != "0" else "1") + signature[1:])
    assert (await http.get(str(forged))).status_code == 401
    expired = Signer(gw_settings.secret_key, 60).sign(url.path, int(url.params["t"]), now=0)
    assert (await http.get(expired)).status_code == 401


async def test_foreign_ids_read_like_missing_ones(
    http: httpx.AsyncClient, bob: Client, alice: Client, world: World
) -> None:
    secret = (await attachments_of(bob, world.bob.id))["secret.txt"]
    missing_attachment = to_global("Attachment", 10**12)
    for path, missing in (
        (f"/attachments/{secret['id']}", f"/attachments/{missing_attachment}"),
        (f"/messages/{secret['message']['id']}/raw", f"/messages/{to_global('Message', 10**12)}/raw"),
    ):
        foreign = await http.get(path, headers=alice.headers())
        absent = await http.get(missing, headers=alice.headers())
        assert foreign.status_code == absent.status_code == 404
        assert foreign.json() == absent.json()
        assert (await http.get(path, headers=bob.headers())).status_code == 200


async def test_a_revoked_token_kills_its_links(http: httpx.AsyncClient, world: World, gw_store: Store) -> None:
    async with gw_store.sessions() as session, session.begin():
        token = await tokens.create_token(session, [world.alice.id])
    client = Client(http, token)
    url = (await attachments_of(client, world.alice.id))["report.pdf"]["downloadUrl"]
    assert (await http.get(url)).status_code == 200
    async with gw_store.sessions() as session, session.begin():
        await tokens.revoke(session, token)
    assert (await http.get(url)).status_code == 401
