"""The `changes` query: an account's change log after an opaque cursor, in order, with the objects as they are
now; CURSOR_EXPIRED once `expire` dropped what a cursor needs; tenancy as everywhere (NOT_FOUND)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest

from gateway.ids import to_global
from gateway.testing import Client, Mail, add_folder, deliver
from schema import accounts, changelog, tokens
from schema.crypto import CredentialBox
from schema.models import utcnow
from schema.unit import Store

CHANGES = """
query($acc: ID!, $after: String, $first: Int, $types: [ChangeObjectType!]) {
  changes(accountId: $acc, after: $after, first: $first, types: $types) {
    cursor hasMore
    changes {
      cursor operation objectType objectId state
      object { __typename id ... on Message { subject } ... on Folder { name } }
    }
  }
}"""
CURSOR = "query($acc: ID!) { changesCursor(accountId: $acc) }"


@dataclass
class Fresh:
    """An account of its own per test: the shared seeded world stays as other tests expect it."""

    id: int
    gid: str
    inbox: int
    client: Client


def mail(subject: str) -> bytes:
    return Mail(subject, "Sender <s@example.test>", ["me@example.test"], f"body of {subject}").raw()


async def fresh_account(store: Store, box: CredentialBox, http: httpx.AsyncClient) -> Fresh:
    address = f"changes-{secrets.token_hex(4)}@example.test"
    account_id = await accounts.create(store, box, address, accounts.ImapEndpoint("127.0.0.1", 143, "none", "u"), "p")
    inbox = await add_folder(store, account_id, "INBOX", "inbox")
    async with store.sessions() as session, session.begin():
        token = await tokens.create_token(session, [account_id])
    return Fresh(account_id, to_global("Account", account_id), inbox, Client(http, token))


@pytest.fixture
async def fresh(gw_store: Store, credential_box: CredentialBox, http: httpx.AsyncClient) -> Fresh:
    return await fresh_account(gw_store, credential_box, http)


async def test_changes_come_in_order_with_their_objects_and_page_by_cursor(fresh: Fresh, gw_store: Store) -> None:
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("one"), []), (mail("two"), ["\\Seen"])])

    first = (await fresh.client.data(CHANGES, {"acc": fresh.gid, "first": 2}))["changes"]
    assert first["hasMore"] is True
    assert (first["changes"][0]["operation"], first["changes"][0]["objectType"]) == ("CREATE", "ACCOUNT")
    assert first["cursor"] == first["changes"][-1]["cursor"]

    rest = (await fresh.client.data(CHANGES, {"acc": fresh.gid, "after": first["cursor"], "first": 500}))["changes"]
    assert rest["hasMore"] is False
    every = first["changes"] + rest["changes"]
    assert len({c["cursor"] for c in every}) == len(every)
    created = [c for c in every if c["objectType"] == "MESSAGE"]
    assert [c["operation"] for c in created] == ["CREATE", "CREATE"]
    assert sorted(c["object"]["subject"] for c in created) == ["one", "two"]
    assert all(c["object"]["__typename"] == "Message" and c["object"]["id"] == c["objectId"] for c in created)
    assert all(c["state"]["subject"] == c["object"]["subject"] for c in created)
    # The cursor of the newest change is the account's current cursor; nothing after it.
    assert rest["cursor"] == (await fresh.client.data(CURSOR, {"acc": fresh.gid}))["changesCursor"]
    empty = (await fresh.client.data(CHANGES, {"acc": fresh.gid, "after": rest["cursor"]}))["changes"]
    assert empty == {"cursor": rest["cursor"], "hasMore": False, "changes": []}


async def test_a_type_filter_still_moves_the_cursor_past_what_it_leaves_out(fresh: Fresh, gw_store: Store) -> None:
    start = (await fresh.client.data(CURSOR, {"acc": fresh.gid}))["changesCursor"]
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("three"), [])])
    page = (await fresh.client.data(CHANGES, {"acc": fresh.gid, "after": start, "types": ["MESSAGE"]}))["changes"]
    assert [c["objectType"] for c in page["changes"]] == ["MESSAGE"]
    assert page["cursor"] == (await fresh.client.data(CURSOR, {"acc": fresh.gid}))["changesCursor"]


async def test_a_type_filtered_walk_in_pages_and_resumed_gets_each_entry_of_its_type_once(
    fresh: Fresh, gw_store: Store
) -> None:
    """Pages of two under a MESSAGE filter, over a log where folders and threads come between the messages: the
    cursor moves past what the filter leaves out (also when only such entries came), and resuming from it
    loses nothing and repeats nothing: what the walk saw is exactly the log's MESSAGE entries."""
    start = (await fresh.client.data(CURSOR, {"acc": fresh.gid}))["changesCursor"]
    for i in range(5):
        await deliver(gw_store, fresh.id, fresh.inbox, [(mail(f"walk {i}"), [])], first_uid=i + 1)
        await add_folder(gw_store, fresh.id, f"Between {i}", None)

    async def walk(after: str) -> tuple[list[dict[str, Any]], str, int]:
        seen: list[dict[str, Any]] = []
        pages = 0
        while True:
            page = (
                await fresh.client.data(CHANGES, {"acc": fresh.gid, "after": after, "first": 2, "types": ["MESSAGE"]})
            )["changes"]
            pages += 1
            seen += page["changes"]
            after = page["cursor"]
            if not page["hasMore"]:
                return seen, after, pages

    seen, cursor, pages = await walk(start)
    assert pages == 3
    assert [c["object"]["subject"] for c in seen] == [f"walk {i}" for i in range(5)]
    # The log ends with a folder's creation, which the filter leaves out: the cursor is past it all the same.
    assert cursor == (await fresh.client.data(CURSOR, {"acc": fresh.gid}))["changesCursor"]

    await add_folder(gw_store, fresh.id, "Only a folder", None)
    nothing, after_folder, _ = await walk(cursor)
    assert nothing == []
    assert after_folder != cursor
    assert after_folder == (await fresh.client.data(CURSOR, {"acc": fresh.gid}))["changesCursor"]

    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("walk 5"), []), (mail("walk 6"), [])], first_uid=6)
    resumed, _, _ = await walk(after_folder)
    seen += resumed

    everything = (await fresh.client.data(CHANGES, {"acc": fresh.gid, "after": start, "first": 500}))["changes"]
    assert not everything["hasMore"]
    messages_logged = [c for c in everything["changes"] if c["objectType"] == "MESSAGE"]
    assert len(everything["changes"]) > 2 * len(messages_logged)  # the filter really left entries out
    assert [c["cursor"] for c in seen] == [c["cursor"] for c in messages_logged]
    assert sorted(c["object"]["subject"] for c in resumed) == ["walk 5", "walk 6"]


async def test_a_deleted_object_reads_as_null(fresh: Fresh, gw_store: Store) -> None:
    start = (await fresh.client.data(CURSOR, {"acc": fresh.gid}))["changesCursor"]
    folder = await add_folder(gw_store, fresh.id, "Gone", None)
    async with gw_store.unit(fresh.id) as uow:
        uow.record(changelog.ObjectType.FOLDER, changelog.Op.DELETE, [folder])
    page = (await fresh.client.data(CHANGES, {"acc": fresh.gid, "after": start}))["changes"]
    assert [(c["operation"], c["objectType"]) for c in page["changes"]] == [
        ("CREATE", "FOLDER"),
        ("DELETE", "FOLDER"),
    ]
    # The folder row still exists (only the log says it went): a CREATE shows it, a DELETE never an object.
    assert page["changes"][1]["object"] is None
    assert page["changes"][1]["state"] is None


async def test_a_cursor_older_than_the_log_keeps_is_cursor_expired(fresh: Fresh, gw_store: Store) -> None:
    old = (await fresh.client.data(CURSOR, {"acc": fresh.gid}))["changesCursor"]
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("a"), [])])
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("b"), [])], first_uid=2)
    async with gw_store.sessions() as session, session.begin():
        deleted = await changelog.expire(session, fresh.id, utcnow() + timedelta(days=1))
    assert deleted > 0
    async with gw_store.sessions() as session:
        newest = await changelog.newest_seq(session, fresh.id)
        kept = await changelog.read(session, fresh.id, 0)
    assert [c.seq for c in kept] == [newest]  # the newest entry of the account always stays

    answer = await fresh.client.run(CHANGES, {"acc": fresh.gid, "after": old})
    assert answer["errors"][0]["extensions"]["code"] == "CURSOR_EXPIRED"
    assert answer["data"] is None
    # The client re-reads and starts again from the current cursor.
    now = (await fresh.client.data(CURSOR, {"acc": fresh.gid}))["changesCursor"]
    assert (await fresh.client.data(CHANGES, {"acc": fresh.gid, "after": now}))["changes"]["changes"] == []
    # One before the newest is still valid: the log holds the entry right after it.
    before_newest = (await fresh.client.data(CHANGES, {"acc": fresh.gid}))["changes"]
    assert [c["cursor"] for c in before_newest["changes"]] == [now]


async def test_expire_keeps_what_is_within_the_retention(fresh: Fresh, gw_store: Store) -> None:
    async with gw_store.sessions() as session, session.begin():
        assert await changelog.expire(session, fresh.id, utcnow() - timedelta(days=30)) == 0


async def test_another_accounts_changes_read_like_a_missing_account(
    fresh: Fresh, gw_store: Store, credential_box: CredentialBox, http: httpx.AsyncClient
) -> None:
    other = await fresh_account(gw_store, credential_box, http)
    for query in (CHANGES, CURSOR):
        answer = await fresh.client.run(query, {"acc": other.gid})
        assert answer["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    # Nor does a cursor of another account work for one's own.
    theirs = (await other.client.data(CURSOR, {"acc": other.gid}))["changesCursor"]
    answer = await fresh.client.run(CHANGES, {"acc": fresh.gid, "after": theirs})
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


@pytest.mark.parametrize("cursor", ["", "nope", "Y2hhbmdlczox", "Y2hhbmdlczoxOi0x"])
async def test_malformed_cursors_are_bad_user_input(fresh: Fresh, cursor: str) -> None:
    answer = await fresh.client.run(CHANGES, {"acc": fresh.gid, "after": cursor})
    assert answer["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
