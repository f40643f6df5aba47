"""Mutations end to end: the gateway over real HTTP changes the mirror at once and queues actions; the sync core
performs them on the real Dovecot; a separate plain IMAP connection (stdlib imaplib) checks the server; the
`changes` feed shows the optimistic change (and the undo of a refused one); `verify` finds the mirror identical.
"""

from __future__ import annotations

import asyncio
import gc
import imaplib
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from gateway.ids import from_global, to_global
from gateway.testing import Client, ServerThread, World
from inboxql.devmail import DovecotServer
from inboxql.mailgen import generate
from schema import actions, idempotency, tokens
from schema.crypto import CredentialBox
from schema.models import Action, MutationKey, utcnow
from schema.unit import Store
from tests.conftest import new_user
from tests.gateway.test_subscriptions import NODE_DIR, node_ready, ws_url
from tests.sync.support import add_account, assert_identical, sync_once

MESSAGES = """query($a: ID!) { messages(accountId: $a, first: 100) { nodes {
    id messageIdHeader unread starred labels { name } folders { name } thread { id messageCount } } } }"""
FOLDERS = """query($a: ID!) { folders(accountId: $a, first: 100) {
    nodes { id name role syncState messageCount unreadCount } } }"""
CURSOR = "query($a: ID!) { changesCursor(accountId: $a) }"
CHANGES = """query($a: ID!, $after: String) { changes(accountId: $a, after: $after, first: 500) {
    changes { operation objectType objectId state } } }"""
ACTIONS = """query($a: ID!, $state: ActionState) { actions(accountId: $a, state: $state) {
    totalCount nodes { id kind state error finishedAt affectedMessage { id } affectedMessages { id }
    affectedFolder { name } } } }"""
PAYLOAD = "actions { id state kind } messages { id unread starred labels { name } folders { name } }"
FOLDER_PAYLOAD = "action { id state kind } folder { id name syncState }"


def mutation(name: str, payload: str = PAYLOAD) -> str:
    input_type = name[0].upper() + name[1:] + "Input"
    return f"mutation($input: {input_type}!) {{ {name}(input: $input) {{ {payload} }} }}"


def codes(answer: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in answer.get("errors") or ()]


# -- the server, through its own plain IMAP connection ------------------------------------------------------


@dataclass
class Imap:
    dovecot: DovecotServer
    user: str
    password: str

    @contextmanager
    def connection(self) -> Iterator[imaplib.IMAP4]:
        conn = imaplib.IMAP4(self.dovecot.host, self.dovecot.port)
        conn.login(self.user, self.password)
        try:
            yield conn
        finally:
            conn.logout()

    def folder(self, name: str) -> dict[str, set[str]]:
        """Message-ID (without brackets) -> flags, of the messages a folder holds on the server."""
        with self.connection() as conn:
            status, _ = conn.select(f'"{name}"', readonly=True)
            assert status == "OK", name
            status, data = conn.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
        found: dict[str, set[str]] = {}
        for item in data:
            if not isinstance(item, tuple):
                continue
            head, body = item[0].decode(), item[1].decode()
            flags = re.search(r"FLAGS \(([^)]*)\)", head)
            msgid = re.search(r"<([^>]+)>", body)
            assert msgid is not None, body
            found[msgid.group(1)] = set(flags.group(1).split()) if flags else set()
        return found

    def folders(self) -> set[str]:
        with self.connection() as conn:
            status, data = conn.list()
        assert status == "OK"
        names = set()
        for line in data:
            assert isinstance(line, bytes)
            names.add(line.decode().rsplit(' "/" ', 1)[1].strip('"'))
        return names

    def run(self, *command: str) -> None:
        with self.connection() as conn:
            status, data = getattr(conn, command[0])(*command[1:])
            assert status == "OK", data


# -- a mailbox on the Dovecot, mirrored, with a token ------------------------------------------------------


@dataclass
class Mailbox:
    store: Store
    box: CredentialBox
    imap: Imap
    id: int
    gid: str
    client: Client
    read_only: Client

    async def sync(self) -> None:
        """The sync core's pass: queued actions first (synccore.actions), then every folder."""
        await sync_once(self.store, self.box, self.id)

    async def messages(self) -> list[dict[str, Any]]:
        return list((await self.client.data(MESSAGES, {"a": self.gid}))["messages"]["nodes"])

    async def folders(self) -> dict[str, dict[str, Any]]:
        return {f["name"]: f for f in (await self.client.data(FOLDERS, {"a": self.gid}))["folders"]["nodes"]}

    async def cursor(self) -> str:
        return str((await self.client.data(CURSOR, {"a": self.gid}))["changesCursor"])

    async def changes(self, after: str) -> list[dict[str, Any]]:
        return list((await self.client.data(CHANGES, {"a": self.gid, "after": after}))["changes"]["changes"])

    async def actions(self, state: str | None = None) -> dict[str, Any]:
        found: dict[str, Any] = (await self.client.data(ACTIONS, {"a": self.gid, "state": state}))["actions"]
        return found

    async def action_count(self) -> int:
        async with self.store.sessions() as s:
            return int(await s.scalar(select(func.count()).where(Action.account_id == self.id)) or 0)

    async def identical(self) -> None:
        await self.sync()
        await assert_identical(self.store, self.box, self.id)


async def make_mailbox(
    store: Store, box: CredentialBox, dovecot: DovecotServer, http: httpx.AsyncClient, count: int = 8, seed: int = 5
) -> Mailbox:
    user, password = new_user(dovecot)
    dovecot.append(user, password, "INBOX", list(generate(count, seed=seed)))
    account = await add_account(store, box, dovecot, user, password)
    await sync_once(store, box, account)
    async with store.sessions() as session, session.begin():
        writer = await tokens.create_token(session, [account])
        reader = await tokens.create_token(session, [account], read_only=True)
    imap = Imap(dovecot, user, password)
    return Mailbox(store, box, imap, account, to_global("Account", account), Client(http, writer), Client(http, reader))


@pytest.fixture
async def mailbox(
    gw_store: Store, credential_box: CredentialBox, dovecot: DovecotServer, http: httpx.AsyncClient
) -> Mailbox:
    return await make_mailbox(gw_store, credential_box, dovecot, http)


def by_header(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["messageIdHeader"].strip("<>"): m for m in messages}


def header_of(message: dict[str, Any]) -> str:
    return str(message["messageIdHeader"]).strip("<>")


def logged_messages(changes: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Message id -> its logged states, in order."""
    found: dict[str, list[dict[str, Any]]] = {}
    for c in changes:
        if c["objectType"] == "MESSAGE":
            found.setdefault(c["objectId"], []).append(c["state"])
    return found


# -- flags and labels --------------------------------------------------------------------------------------


async def test_update_messages_sets_flags_and_keywords_on_the_server(mailbox: Mailbox) -> None:
    messages = await mailbox.messages()
    thread = next(m["thread"] for m in messages if m["thread"]["messageCount"] >= 2)
    in_thread = [m for m in messages if m["thread"]["id"] == thread["id"]]
    single = next(m for m in messages if m["thread"]["id"] != thread["id"])
    start = await mailbox.cursor()

    answer = await mailbox.client.data(
        mutation("updateMessages"),
        {"input": {"ids": [single["id"], thread["id"]], "unread": False, "starred": True, "addLabels": ["$Project"]}},
    )
    payload = answer["updateMessages"]
    touched = {single["id"], *(m["id"] for m in in_thread)}
    assert {m["id"] for m in payload["messages"]} == touched  # the thread stood for all its messages
    assert all(not m["unread"] and m["starred"] and {"name": "$Project"} in m["labels"] for m in payload["messages"])
    assert len(payload["actions"]) == 1  # one action for every message it changed
    assert {(a["state"], a["kind"]) for a in payload["actions"]} == {("PENDING", "flags")}

    # Optimistic: the change feed shows it before the server has it.
    logged = logged_messages(await mailbox.changes(start))
    assert set(logged) == touched
    assert all(states[-1]["unread"] is False and states[-1]["starred"] is True for states in logged.values())
    inbox = mailbox.imap.folder("INBOX")
    assert not any("\\Flagged" in inbox[header_of(m)] for m in in_thread)

    await mailbox.sync()
    actions = await mailbox.actions()
    assert actions["totalCount"] == 1
    assert {a["state"] for a in actions["nodes"]} == {"DONE"}
    one = payload["actions"][0]["id"]
    polled = await mailbox.client.data("query($id: ID!) { node(id: $id) { ... on Action { id state } } }", {"id": one})
    assert polled == {"node": {"id": one, "state": "DONE"}}
    # The one action names every message it changed (a client following it in the feed sees what it was about).
    about = await mailbox.client.data(
        "query($id: ID!) { node(id: $id) { ... on Action { affectedMessage { id } affectedMessages { id } } } }",
        {"id": one},
    )
    assert about["node"]["affectedMessage"] is None
    assert {m["id"] for m in about["node"]["affectedMessages"]} == touched
    # A page of them, first by id; a page size outside 1 to 1,000 is refused.
    page = "query($id: ID!, $n: Int!) { node(id: $id) { ... on Action { affectedMessages(first: $n) { id } } } }"
    two = await mailbox.client.data(page, {"id": one, "n": 2})
    assert [m["id"] for m in two["node"]["affectedMessages"]] == sorted(touched, key=lambda g: from_global(g)[1])[:2]
    refused = await mailbox.client.run(page, {"id": one, "n": 0})
    assert [e["extensions"]["code"] for e in refused["errors"]] == ["BAD_USER_INPUT"]
    inbox = mailbox.imap.folder("INBOX")
    for m in [single, *in_thread]:
        assert {"\\Seen", "\\Flagged", "$Project"} <= inbox[header_of(m)]

    # And back: unread, unstarred, keyword removed.
    await mailbox.client.data(
        mutation("updateMessages"),
        {"input": {"ids": [single["id"]], "unread": True, "starred": False, "removeLabels": ["$Project"]}},
    )
    await mailbox.sync()
    assert not {"\\Seen", "\\Flagged", "$Project"} & mailbox.imap.folder("INBOX")[header_of(single)]
    await mailbox.identical()


async def test_a_mutations_unit_runs_with_the_collector_paused(
    mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gateway.heap.collector_paused: the automatic collections are off while the unit runs (the gateway serves
    from a thread of this process), and on again after."""
    seen: list[bool] = []
    original = actions.set_flags

    async def set_flags(*args: Any, **kwargs: Any) -> list[int]:
        seen.append(gc.isenabled())
        return await original(*args, **kwargs)

    monkeypatch.setattr(actions, "set_flags", set_flags)
    [message, *_] = await mailbox.messages()
    assert gc.isenabled()
    await mailbox.client.data(mutation("updateMessages"), {"input": {"ids": [message["id"]], "starred": True}})
    assert seen == [False]
    assert gc.isenabled()


@pytest.mark.parametrize(
    "label",
    [
        "two words",
        "(paren",
        "paren)",
        "brace{",
        "back\\slash",
        "per%cent",
        "star*",
        'quo"te',
        "bracket]",
        "ctl\x01",
        "del\x7f",
        "naïve",
        "\\Seen",
        "Subject: x\r\nBcc: eve@example.test",
        "",
        "x" * 129,
    ],
)
async def test_labels_must_be_imap_atoms(shared_mailbox: Mailbox, label: str) -> None:
    queued = await shared_mailbox.action_count()
    [first, *_] = await shared_mailbox.messages()
    for key in ("addLabels", "removeLabels"):
        answer = await shared_mailbox.client.run(
            mutation("updateMessages"), {"input": {"ids": [first["id"]], key: [label]}}
        )
        assert codes(answer) == ["BAD_USER_INPUT"], answer
    assert await shared_mailbox.action_count() == queued


async def test_a_128_character_keyword_is_queued_and_a_server_refusal_undone(shared_mailbox: Mailbox) -> None:
    """128 characters is the gateway's limit; Dovecot's is lower (mail_max_keyword_length, 50): its refusal
    fails the action with the server's reason and takes the label off the mirror again."""
    [first, *_] = await shared_mailbox.messages()
    short, long = "s" * 50, "k" * 128
    for label in (short, long):
        ok = await shared_mailbox.client.data(
            mutation("updateMessages"), {"input": {"ids": [first["id"]], "addLabels": [label]}}
        )
        assert {"name": label} in ok["updateMessages"]["messages"][0]["labels"]
    await shared_mailbox.sync()
    on_server = shared_mailbox.imap.folder("INBOX")[header_of(first)]
    assert short in on_server
    assert long not in on_server
    [refused] = (await shared_mailbox.actions("FAILED"))["nodes"]
    assert refused["error"]
    assert (await shared_mailbox.actions("DONE"))["totalCount"] == 1
    labels = by_header(await shared_mailbox.messages())[header_of(first)]["labels"]
    assert {"name": short} in labels
    assert {"name": long} not in labels
    await shared_mailbox.identical()


@pytest.fixture(scope="module")
async def shared_mailbox(
    gw_store: Store, credential_box: CredentialBox, dovecot: DovecotServer, http: httpx.AsyncClient
) -> Mailbox:
    return await make_mailbox(gw_store, credential_box, dovecot, http, count=3, seed=9)


@pytest.mark.parametrize(
    "input_",
    [
        {"ids": []},
        {"ids": ["junk"], "unread": True},
        {"unread": True, "ids": [to_global("Folder", 1)]},
    ],
)
async def test_malformed_updates_are_bad_user_input(shared_mailbox: Mailbox, input_: dict[str, Any]) -> None:
    answer = await shared_mailbox.client.run(mutation("updateMessages"), {"input": input_})
    assert codes(answer) == ["BAD_USER_INPUT"], answer


async def test_nothing_to_change_and_a_flag_both_added_and_removed_are_refused(shared_mailbox: Mailbox) -> None:
    [first, *_] = await shared_mailbox.messages()
    for input_ in ({"ids": [first["id"]]}, {"ids": [first["id"]], "addLabels": ["a"], "removeLabels": ["a"]}):
        assert codes(await shared_mailbox.client.run(mutation("updateMessages"), {"input": input_})) == [
            "BAD_USER_INPUT"
        ]


async def test_at_most_1000_ids_and_mutations_are_costed_by_their_ids(shared_mailbox: Mailbox) -> None:
    [first, *_] = await shared_mailbox.messages()
    too_many = [first["id"]] * 1001
    answer = await shared_mailbox.client.run(mutation("updateMessages"), {"input": {"ids": too_many, "unread": True}})
    assert codes(answer) == ["BAD_USER_INPUT"]
    query = "mutation($input: UpdateMessagesInput!) { updateMessages(input: $input) { actions { id } } }"
    answer = await shared_mailbox.client.run(query, {"input": {"ids": [first["id"]] * 3, "unread": False}})
    assert "errors" not in answer, answer
    # 10 for the write, and per id: 1 plus the payload's selection (actions: 1).
    assert answer["extensions"]["cost"]["requested"] == 10 + 3 * (1 + 1)
    await shared_mailbox.identical()


# -- idempotency keys --------------------------------------------------------------------------------------


async def test_a_retry_with_the_same_key_changes_nothing_and_reads_the_current_state(mailbox: Mailbox) -> None:
    [first, second, *_] = await mailbox.messages()
    variables = {"input": {"ids": [first["id"]], "starred": True, "idempotencyKey": "retry-1"}}
    once = (await mailbox.client.data(mutation("updateMessages"), variables))["updateMessages"]
    twice = (await mailbox.client.data(mutation("updateMessages"), variables))["updateMessages"]
    assert once == twice
    assert await mailbox.action_count() == 1
    async with mailbox.store.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(MutationKey).where(MutationKey.key == "retry-1")) == 1

    # Even with other arguments, the key names the first request: its payload, now with the action done.
    await mailbox.sync()
    variables["input"]["ids"] = [second["id"]]
    later = (await mailbox.client.data(mutation("updateMessages"), variables))["updateMessages"]
    assert [a["id"] for a in later["actions"]] == [a["id"] for a in once["actions"]]
    assert [a["state"] for a in later["actions"]] == ["DONE"]
    assert await mailbox.action_count() == 1

    other = await mailbox.client.run(
        mutation("trashMessages"), {"input": {"ids": [first["id"]], "idempotencyKey": "retry-1"}}
    )
    assert codes(other) == ["BAD_USER_INPUT"]
    for bad in ("k" * 129, "schlüssel", "", "tab\tkey"):
        bad_key = {"input": {"ids": [first["id"]], "starred": False, "idempotencyKey": bad}}
        assert codes(await mailbox.client.run(mutation("updateMessages"), bad_key)) == ["BAD_USER_INPUT"], bad
    assert await mailbox.action_count() == 1
    # A key belongs to its token: another token's same key is a new request.
    async with mailbox.store.sessions() as session, session.begin():
        other_token = Client(mailbox.client.http, await tokens.create_token(session, [mailbox.id]))
    fresh = await other_token.data(
        mutation("updateMessages"), {"input": {"ids": [second["id"]], "starred": True, "idempotencyKey": "retry-1"}}
    )
    assert len(fresh["updateMessages"]["actions"]) == 1
    assert await mailbox.action_count() == 2
    await mailbox.identical()


async def test_a_key_is_kept_a_day_then_forgotten_and_deleted(mailbox: Mailbox) -> None:
    [first, *_] = await mailbox.messages()
    variables = {"input": {"ids": [first["id"]], "starred": True, "idempotencyKey": "day-old"}}
    await mailbox.client.data(mutation("updateMessages"), variables)
    async with mailbox.store.sessions() as s, s.begin():  # a day and a minute later
        await s.execute(
            update(MutationKey)
            .where(MutationKey.key == "day-old")
            .values(created_at=utcnow() - idempotency.KEEP - timedelta(minutes=1))
        )
    variables["input"]["starred"] = False
    again = (await mailbox.client.data(mutation("updateMessages"), variables))["updateMessages"]
    assert len(again["actions"]) == 1  # a new request: the old key's result is not replayed
    assert await mailbox.action_count() == 2
    async with mailbox.store.sessions() as s, s.begin():
        await s.execute(update(MutationKey).values(created_at=utcnow() - idempotency.KEEP - timedelta(minutes=1)))
        assert await idempotency.expire(s) >= 1
        assert await s.scalar(select(func.count()).select_from(MutationKey)) == 0


async def test_concurrent_requests_with_one_key_do_the_work_once(mailbox: Mailbox) -> None:
    [first, *_] = await mailbox.messages()
    variables = {"input": {"ids": [first["id"]], "starred": True, "idempotencyKey": "race"}}
    answers = await asyncio.gather(*(mailbox.client.run(mutation("updateMessages"), variables) for _ in range(4)))
    assert all("errors" not in a for a in answers), answers
    assert len({json.dumps(a["data"]) for a in answers}) == 1
    assert await mailbox.action_count() == 1


# -- moves, trash, restore, delete ---------------------------------------------------------------------------


async def test_move_by_folder_id_or_role_moves_on_the_server_and_keeps_ids(mailbox: Mailbox) -> None:
    [first, second, third, *_] = await mailbox.messages()
    folders = await mailbox.folders()
    start = await mailbox.cursor()
    by_id = await mailbox.client.data(
        mutation("moveMessages"), {"input": {"ids": [first["id"]], "folderId": folders["Archive"]["id"]}}
    )
    assert by_id["moveMessages"]["messages"][0]["folders"] == [{"name": "Archive"}]
    # Both folders are recounted at once: the one the message left and the one it entered.
    counted = await mailbox.folders()
    assert counted["INBOX"]["messageCount"] == folders["INBOX"]["messageCount"] - 1
    assert counted["Archive"]["messageCount"] == folders["Archive"]["messageCount"] + 1
    by_role = await mailbox.client.data(mutation("moveMessages"), {"input": {"ids": [second["id"]], "role": "archive"}})
    assert [a["kind"] for a in by_role["moveMessages"]["actions"]] == ["move"]
    logged = logged_messages(await mailbox.changes(start))
    assert set(logged) == {first["id"], second["id"]}
    assert all(states[-1]["folder_ids"] == [_pk(folders["Archive"]["id"])] for states in logged.values())

    for refused in (
        {"ids": [third["id"]]},
        {"ids": [third["id"]], "role": "archive", "folderId": folders["Archive"]["id"]},
    ):
        assert codes(await mailbox.client.run(mutation("moveMessages"), {"input": refused})) == ["BAD_USER_INPUT"]
    no_role = await mailbox.client.run(
        mutation("moveMessages"), {"input": {"ids": [third["id"]], "role": "nosuchrole"}}
    )
    assert codes(no_role) == ["NOT_FOUND"]

    await mailbox.sync()
    in_archive, in_inbox = mailbox.imap.folder("Archive"), mailbox.imap.folder("INBOX")
    for m in (first, second):
        assert header_of(m) in in_archive
        assert header_of(m) not in in_inbox
    after = by_header(await mailbox.messages())
    assert after[header_of(first)]["id"] == first["id"]  # the same message, moved: not deleted and re-created
    assert after[header_of(first)]["folders"] == [{"name": "Archive"}]
    synced = await mailbox.folders()
    assert synced["INBOX"]["messageCount"] == folders["INBOX"]["messageCount"] - 2 == len(in_inbox)
    assert synced["Archive"]["messageCount"] == folders["Archive"]["messageCount"] + 2 == len(in_archive)
    await mailbox.identical()


async def test_trash_then_restore_returns_each_message_where_it_was(mailbox: Mailbox) -> None:
    mailbox.imap.run("create", "Projects")
    await mailbox.sync()
    [first, second, *_] = await mailbox.messages()
    await mailbox.client.data(
        mutation("moveMessages"),
        {"input": {"ids": [first["id"]], "folderId": (await mailbox.folders())["Projects"]["id"]}},
    )
    await mailbox.sync()

    trashed = await mailbox.client.data(mutation("trashMessages"), {"input": {"ids": [first["id"], second["id"]]}})
    assert all(m["folders"] == [{"name": "Trash"}] for m in trashed["trashMessages"]["messages"])
    await mailbox.sync()
    in_trash = mailbox.imap.folder("Trash")
    assert {header_of(first), header_of(second)} <= set(in_trash)
    assert header_of(first) not in mailbox.imap.folder("Projects")

    restored = await mailbox.client.data(mutation("restoreMessages"), {"input": {"ids": [first["id"], second["id"]]}})
    folders_now = {m["id"]: m["folders"] for m in restored["restoreMessages"]["messages"]}
    assert folders_now == {first["id"]: [{"name": "Projects"}], second["id"]: [{"name": "INBOX"}]}
    await mailbox.sync()
    assert header_of(first) in mailbox.imap.folder("Projects")
    assert header_of(second) in mailbox.imap.folder("INBOX")
    assert not {header_of(first), header_of(second)} & set(mailbox.imap.folder("Trash"))
    # Restoring what is not in the trash does nothing.
    again = await mailbox.client.data(mutation("restoreMessages"), {"input": {"ids": [first["id"]]}})
    assert again["restoreMessages"]["actions"] == []
    await mailbox.identical()


async def test_delete_messages_expunges_on_the_server_and_logs_the_delete(mailbox: Mailbox) -> None:
    [first, second, *_] = await mailbox.messages()
    start = await mailbox.cursor()
    deleted = await mailbox.client.data(mutation("deleteMessages"), {"input": {"ids": [first["id"]]}})
    assert [a["kind"] for a in deleted["deleteMessages"]["actions"]] == ["expunge"]
    assert deleted["deleteMessages"]["messages"][0]["folders"] == []  # gone from every folder at once
    await mailbox.sync()
    inbox = mailbox.imap.folder("INBOX")
    assert header_of(first) not in inbox
    assert header_of(second) in inbox
    node = await mailbox.client.data("query($id: ID!) { node(id: $id) { id } }", {"id": first["id"]})
    assert node == {"node": None}
    ops = [(c["operation"], c["objectType"]) for c in await mailbox.changes(start) if c["objectId"] == first["id"]]
    assert ops[0] == ("UPDATE", "MESSAGE")  # optimistic: no folder
    assert ops[-1] == ("DELETE", "MESSAGE")  # the server agreed: the message is gone
    await mailbox.identical()


async def test_a_move_into_a_folder_deleted_on_the_server_fails_and_is_undone(mailbox: Mailbox) -> None:
    mailbox.imap.run("create", "Doomed")
    await mailbox.sync()
    [first, *_] = await mailbox.messages()
    doomed = (await mailbox.folders())["Doomed"]
    start = await mailbox.cursor()
    moved = await mailbox.client.data(
        mutation("moveMessages"), {"input": {"ids": [first["id"]], "folderId": doomed["id"]}}
    )
    assert moved["moveMessages"]["messages"][0]["folders"] == [{"name": "Doomed"}]
    mailbox.imap.run("delete", "Doomed")

    await mailbox.sync()
    failed = await mailbox.actions("FAILED")
    assert failed["totalCount"] == 1
    [action] = failed["nodes"]
    assert action["kind"] == "move"
    assert action["affectedMessage"] == {"id": first["id"]}
    assert action["affectedMessages"] == [{"id": first["id"]}]
    assert action["error"]  # the server's reason
    assert action["finishedAt"] is not None
    assert "Doomed" in action["error"] or "refused" in action["error"].lower() or "exist" in action["error"].lower()
    after = by_header(await mailbox.messages())
    assert after[header_of(first)]["folders"] == [{"name": "INBOX"}]  # back where it was
    assert header_of(first) in mailbox.imap.folder("INBOX")
    # The feed holds both: the optimistic move, then its undo.
    states = logged_messages(await mailbox.changes(start))[first["id"]]
    folder_sets = [s["folder_ids"] for s in states]
    doomed_pk = _pk(doomed["id"])
    assert [doomed_pk] in folder_sets
    assert doomed_pk not in folder_sets[-1]
    assert folder_sets[-1]
    assert folder_sets.index([doomed_pk]) < len(folder_sets) - 1
    await mailbox.identical()


def _pk(gid: str) -> int:
    return from_global(gid)[1]


# -- folders -----------------------------------------------------------------------------------------------


async def test_create_rename_delete_folders_on_the_server(mailbox: Mailbox) -> None:
    start = await mailbox.cursor()
    created = await mailbox.client.data(
        mutation("createFolder", FOLDER_PAYLOAD), {"input": {"accountId": mailbox.gid, "name": "Clients"}}
    )
    clients = created["createFolder"]["folder"]
    assert clients["name"] == "Clients"
    assert created["createFolder"]["action"]["kind"] == "folder_create"
    child = await mailbox.client.data(
        mutation("createFolder", FOLDER_PAYLOAD),
        {"input": {"accountId": mailbox.gid, "name": "Acme", "parentId": clients["id"]}},
    )
    assert child["createFolder"]["folder"]["name"] == "Clients/Acme"
    ops = {(c["operation"], c["objectType"], c["objectId"]) for c in await mailbox.changes(start)}
    assert ("CREATE", "FOLDER", clients["id"]) in ops
    await mailbox.sync()
    assert {"Clients", "Clients/Acme"} <= mailbox.imap.folders()

    renamed = await mailbox.client.data(
        mutation("renameFolder", FOLDER_PAYLOAD), {"input": {"id": clients["id"], "name": "Customers"}}
    )
    assert renamed["renameFolder"]["folder"] == {**clients, "name": "Customers", "syncState": "follow"}
    assert "Customers/Acme" in await mailbox.folders()
    await mailbox.sync()
    on_server = mailbox.imap.folders()
    assert {"Customers", "Customers/Acme"} <= on_server
    assert not {"Clients", "Clients/Acme"} & on_server

    acme = (await mailbox.folders())["Customers/Acme"]
    gone = await mailbox.client.data(mutation("deleteFolder", FOLDER_PAYLOAD), {"input": {"id": acme["id"]}})
    assert gone["deleteFolder"]["folder"]["syncState"] == "deleting"
    await mailbox.sync()
    assert "Customers/Acme" not in mailbox.imap.folders()
    assert "Customers/Acme" not in await mailbox.folders()
    done = await mailbox.actions("DONE")
    assert sorted(a["kind"] for a in done["nodes"]) == [
        "folder_create",
        "folder_create",
        "folder_delete",
        "folder_rename",
    ]
    await mailbox.identical()


async def test_folder_names_and_role_folders_are_refused(shared_mailbox: Mailbox) -> None:
    queued = await shared_mailbox.action_count()
    folders = await shared_mailbox.folders()
    inbox, trash, archive = folders["INBOX"]["id"], folders["Trash"]["id"], folders["Archive"]["id"]
    create = mutation("createFolder", FOLDER_PAYLOAD)
    for name, parent in (
        ("", None),
        ("   ", None),
        ("x" * 256, None),
        ("Archive", None),
        ("inbox", None),
        ("a/b", archive),
        ("Evil\r\nSubject: hi", None),
        ("wild*", None),
        ("/leading", None),
    ):
        input_: dict[str, Any] = {"accountId": shared_mailbox.gid, "name": name, "parentId": parent}
        assert codes(await shared_mailbox.client.run(create, {"input": input_})) == ["BAD_USER_INPUT"], name
    rename = mutation("renameFolder", FOLDER_PAYLOAD)
    delete = mutation("deleteFolder", FOLDER_PAYLOAD)
    for folder in (inbox, trash, archive):
        assert codes(await shared_mailbox.client.run(rename, {"input": {"id": folder, "name": "Other"}})) == [
            "BAD_USER_INPUT"
        ]
        assert codes(await shared_mailbox.client.run(delete, {"input": {"id": folder}})) == ["BAD_USER_INPUT"]
    assert await shared_mailbox.action_count() == queued


# -- who may write -----------------------------------------------------------------------------------------

Make = Callable[[list[str], str | None, str], dict[str, Any]]
EVERY_MUTATION: dict[str, Make] = {
    "updateMessages": lambda ids, folder, account: {"input": {"ids": ids, "unread": False}},
    "moveMessages": lambda ids, folder, account: {"input": {"ids": ids, "folderId": folder}},
    "trashMessages": lambda ids, folder, account: {"input": {"ids": ids}},
    "restoreMessages": lambda ids, folder, account: {"input": {"ids": ids}},
    "deleteMessages": lambda ids, folder, account: {"input": {"ids": ids}},
    "createFolder": lambda ids, folder, account: {"input": {"accountId": account, "name": "New", "parentId": folder}},
    "renameFolder": lambda ids, folder, account: {"input": {"id": folder, "name": "Renamed"}},
    "deleteFolder": lambda ids, folder, account: {"input": {"id": folder}},
}


def every_mutation_call(name: str) -> str:
    payload = FOLDER_PAYLOAD if "Folder" in name else PAYLOAD
    return mutation(name, payload)


async def test_a_read_only_token_reads_but_every_mutation_is_forbidden(
    shared_mailbox: Mailbox, http: httpx.AsyncClient, world: World
) -> None:
    queued = await shared_mailbox.action_count()
    [first, *_] = await shared_mailbox.messages()
    readable = await shared_mailbox.read_only.data(MESSAGES, {"a": shared_mailbox.gid})
    assert readable["messages"]["nodes"] == await shared_mailbox.messages()
    projects = (await shared_mailbox.folders())["Archive"]["id"]
    for name, make in EVERY_MUTATION.items():
        for ids in ([first["id"]], ["not an id"], [to_global("Message", 10**12)]):
            response = await shared_mailbox.read_only.post(
                every_mutation_call(name), make(ids, projects, shared_mailbox.gid)
            )
            assert codes(response.json()) == ["FORBIDDEN"], name
    # The webhook mutations too, before their arguments are looked at.
    for query in (
        'mutation { createWebhook(accountId: "x", url: "https://example.com", events: ["*"]) { secret } }',
        'mutation { deleteWebhook(id: "x") }',
        'mutation { enableWebhook(id: "x") { state } }',
    ):
        assert codes(await shared_mailbox.read_only.run(query)) == ["FORBIDDEN"], query
    assert await shared_mailbox.action_count() == queued


async def test_no_token_is_unauthenticated(anonymous: Client, shared_mailbox: Mailbox) -> None:
    queued = await shared_mailbox.action_count()
    [first, *_] = await shared_mailbox.messages()
    archive = (await shared_mailbox.folders())["Archive"]["id"]
    for name, make in EVERY_MUTATION.items():
        answer = await anonymous.run(every_mutation_call(name), make([first["id"]], archive, shared_mailbox.gid))
        assert codes(answer) == ["UNAUTHENTICATED"], name
    assert await shared_mailbox.action_count() == queued


async def test_one_foreign_id_makes_the_whole_mutation_not_found(
    shared_mailbox: Mailbox,
    gw_store: Store,
    credential_box: CredentialBox,
    dovecot: DovecotServer,
    http: httpx.AsyncClient,
) -> None:
    queued = await shared_mailbox.action_count()
    other = await make_mailbox(gw_store, credential_box, dovecot, http, count=2, seed=3)
    mine = await shared_mailbox.messages()
    theirs = await other.messages()
    my_folder = (await shared_mailbox.folders())["Archive"]["id"]
    their_folder = (await other.folders())["Archive"]["id"]
    before = (mine, await other.messages(), await other.folders())
    mixed = [[mine[0]["id"], theirs[0]["id"]], [mine[0]["id"], theirs[0]["thread"]["id"]]]
    cases: dict[str, list[dict[str, Any]]] = {
        name: [EVERY_MUTATION[name](ids, my_folder, shared_mailbox.gid) for ids in mixed]
        for name in ("updateMessages", "moveMessages", "trashMessages", "restoreMessages", "deleteMessages")
    }
    cases["moveMessages"].append(EVERY_MUTATION["moveMessages"]([mine[0]["id"]], their_folder, shared_mailbox.gid))
    cases["createFolder"] = [
        EVERY_MUTATION["createFolder"]([], None, other.gid),
        EVERY_MUTATION["createFolder"]([], their_folder, shared_mailbox.gid),
    ]
    cases["renameFolder"] = [EVERY_MUTATION["renameFolder"]([], their_folder, shared_mailbox.gid)]
    cases["deleteFolder"] = [EVERY_MUTATION["deleteFolder"]([], their_folder, shared_mailbox.gid)]
    for name, calls in cases.items():
        for variables in calls:
            answer = await shared_mailbox.client.run(every_mutation_call(name), variables)
            assert codes(answer) == ["NOT_FOUND"], (name, variables, answer)
    assert (await shared_mailbox.messages(), await other.messages(), await other.folders()) == before
    assert await shared_mailbox.action_count() == queued
    assert await other.action_count() == 0


# -- a live client sees the optimistic change -------------------------------------------------------------

FOLLOW = """subscription($a: ID!, $after: String) { changes(accountId: $a, after: $after) {
    cursor operation objectType objectId state } }"""


async def test_a_graphql_ws_subscriber_sees_the_optimistic_change(gateway: ServerThread, mailbox: Mailbox) -> None:
    node_ready()
    [first, *_] = await mailbox.messages()
    start = await mailbox.cursor()
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "subscribe.mjs"),
        ws_url(gateway),
        mailbox.client.token or "",
        FOLLOW,
        json.dumps({"a": mailbox.gid, "after": start}),
        "100",
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(30):
            assert json.loads(await proc.stdout.readline()) == {"ready": True}
            await mailbox.client.data(mutation("updateMessages"), {"input": {"ids": [first["id"]], "starred": True}})
            while True:
                change = json.loads(await proc.stdout.readline())["data"]["changes"]
                if change["objectType"] == "MESSAGE":
                    break
    finally:
        proc.kill()
        await proc.wait()
    assert (change["operation"], change["objectType"], change["objectId"]) == ("UPDATE", "MESSAGE", first["id"])
    assert change["state"]["starred"] is True
    # Before the server was told: the action is still pending.
    assert (await mailbox.actions("PENDING"))["totalCount"] == 1
    await mailbox.sync()
    assert "\\Flagged" in mailbox.imap.folder("INBOX")[header_of(first)]
