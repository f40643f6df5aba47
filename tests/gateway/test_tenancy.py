"""Tenancy, walked by introspection: with Alice's token nothing of Bob's is ever returned, and an id of
Bob's reads exactly like an id that does not exist. New root fields, filters or node types are picked up
by the walk (and fail it until it knows how to call them). The walk covers queries, mutations and every
subscription, over a real websocket (graphql-transport-ws) and over SSE.

Operator fields (their description says "Operator-scoped": they manage every account) are FORBIDDEN to every
token without the operator scope, admin and read-only ones included, and an operator token reads no mail."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from gateway.ids import NODE_TYPES, encode_change_cursor, to_global
from gateway.testing import Client, ServerThread, World
from inboxql.commands import new_token
from schema.settings import Settings
from tests.gateway.test_sse import events as sse_events
from tests.gateway.test_sse import stream as sse_stream

INTROSPECTION = """{ __schema { queryType { name } mutationType { name } subscriptionType { name } types { name kind
    fields { name description
             args { name type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }
             type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } }
    inputFields { name type { kind name ofType { kind name } } }
    possibleTypes { name } } } }"""
LEAF = {"SCALAR", "ENUM"}
MISSING_PK = 10**12
BOB_MARKERS = ("zanzibar", "bob@other.test", "eve@other.test", "secret.txt", "Secret")


def named(t: dict[str, Any]) -> str:
    while t.get("ofType"):
        t = t["ofType"]
    return str(t["name"])


def spelled(t: dict[str, Any]) -> str:
    """A type reference as a query spells it: [ID!]!"""
    if t["kind"] == "NON_NULL":
        return spelled(t["ofType"]) + "!"
    if t["kind"] == "LIST":
        return f"[{spelled(t['ofType'])}]"
    return str(t["name"])


def required(arg: dict[str, Any]) -> bool:
    return bool(arg["type"]["kind"] == "NON_NULL")


def operator_scoped(field: dict[str, Any]) -> bool:
    return "Operator-scoped" in (field.get("description") or "")


class Schema:
    def __init__(self, data: dict[str, Any]) -> None:
        self.types = {t["name"]: t for t in data["__schema"]["types"]}
        self.query = self.types[data["__schema"]["queryType"]["name"]]
        self.mutation = data["__schema"]["mutationType"]
        self.subscription = self.types[data["__schema"]["subscriptionType"]["name"]]

    def kind(self, name: str) -> str:
        return str(self.types[name]["kind"])

    def selection(self, type_name: str, depth: int, clashing: frozenset[str] = frozenset()) -> str:
        """Every field callable without arguments (connections with first: 2), `depth` objects deep.

        Below an interface, fields that two of its types spell with different types (Action.state and
        OutboxEntry.state are different enums) get the type's name as an alias prefix, as a client's must."""
        t = self.types[type_name]
        parts = ["__typename"]
        if t["kind"] in ("INTERFACE", "UNION"):
            spellings: dict[str, set[str]] = {}
            for possible in t["possibleTypes"]:
                for f in self.types[possible["name"]]["fields"]:
                    spellings.setdefault(f["name"], set()).add(spelled(f["type"]))
            clash = frozenset(name for name, types in spellings.items() if len(types) > 1)
            for possible in t["possibleTypes"]:
                parts.append(f"... on {possible['name']} {{ {self.selection(possible['name'], depth, clash)} }}")
            return " ".join(parts)
        for f in t["fields"]:
            if any(required(a) for a in f["args"]):
                continue
            target = named(f["type"])
            alias = f"{type_name}_{f['name']}: " if f["name"] in clashing else ""
            if self.kind(target) in LEAF:
                parts.append(f"{alias}{f['name']}")
            elif depth > 0:
                args = "(first: 2)" if any(a["name"] == "first" for a in f["args"]) else ""
                parts.append(f"{alias}{f['name']}{args} {{ {self.selection(target, depth - 1)} }}")
        return " ".join(parts)


@pytest.fixture(scope="module")
async def schema(alice: Client) -> Schema:
    return Schema(await alice.data(INTROSPECTION))


@pytest.fixture(scope="module")
async def bobs_ids(bob: Client, world: World) -> dict[str, list[str]]:
    """Every id of every type that Bob's token can see."""
    account = to_global("Account", world.bob.id)
    data = await bob.data(
        """query($a: ID!) {
            folders(accountId: $a) { nodes { id } } labels(accountId: $a) { nodes { id } }
            threads(accountId: $a) { nodes { id } }
            messages(accountId: $a) { nodes { id attachments { id } } }
            actions(accountId: $a) { nodes { id } } outbox(accountId: $a) { nodes { id } } }""",
        {"a": account},
    )
    ids = {
        "Account": [account],
        "Folder": [n["id"] for n in data["folders"]["nodes"]],
        "Label": [n["id"] for n in data["labels"]["nodes"]],
        "Thread": [n["id"] for n in data["threads"]["nodes"]],
        "Message": [n["id"] for n in data["messages"]["nodes"]],
        "Attachment": [a["id"] for n in data["messages"]["nodes"] for a in n["attachments"]],
        "Action": [n["id"] for n in data["actions"]["nodes"]],
        "OutboxEntry": [n["id"] for n in data["outbox"]["nodes"]],
    }
    assert all(ids.values()), ids
    return ids


def without_cost(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "extensions"}


async def test_every_node_type_is_covered(schema: Schema, bobs_ids: dict[str, list[str]]) -> None:
    node_types = {t["name"] for t in schema.types["Node"]["possibleTypes"]}
    assert node_types == set(NODE_TYPES) == set(bobs_ids)


async def test_node_with_a_foreign_id_reads_like_a_missing_one(
    alice: Client, schema: Schema, bobs_ids: dict[str, list[str]]
) -> None:
    for type_name, ids in bobs_ids.items():
        query = f"query($id: ID!) {{ node(id: $id) {{ ... on {type_name} {{ {schema.selection(type_name, 2)} }} }} }}"
        missing = without_cost(await alice.run(query, {"id": to_global(type_name, MISSING_PK)}))
        assert missing == {"data": {"node": None}}
        for gid in ids:
            assert without_cost(await alice.run(query, {"id": gid})) == missing, (type_name, gid)
    every = [gid for ids in bobs_ids.values() for gid in ids]
    answer = await alice.data("query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": every})
    assert answer == {"nodes": [None] * len(every)}


# Root fields with an accountId that are not connections (the change feed): what to select of them.
ROOT_SELECTIONS = {"changes": "{ cursor changes { cursor } }", "changesCursor": ""}


async def test_root_fields_with_a_foreign_account_read_like_a_missing_one(
    alice: Client, schema: Schema, bobs_ids: dict[str, list[str]]
) -> None:
    walked = 0
    for field in schema.query["fields"]:
        names = {a["name"] for a in field["args"]}
        if "accountId" not in names:
            continue
        extra = ', query: "zanzibar"' if "query" in names else ""
        selection = ROOT_SELECTIONS.get(field["name"], "{ totalCount nodes { __typename } }")
        query = f"query($a: ID!) {{ {field['name']}(accountId: $a{extra}) {selection} }}"
        missing = without_cost(await alice.run(query, {"a": to_global("Account", MISSING_PK)}))
        foreign = without_cost(await alice.run(query, {"a": bobs_ids["Account"][0]}))
        assert foreign == missing, field["name"]
        assert missing["data"] is None
        assert [e["extensions"]["code"] for e in missing["errors"]] == ["NOT_FOUND"]
        walked += 1
    assert walked >= 5


async def test_filters_with_foreign_ids_read_like_missing_ones(
    alice: Client, schema: Schema, world: World, bobs_ids: dict[str, list[str]]
) -> None:
    mine = to_global("Account", world.alice.id)
    walked = 0
    for field in schema.query["fields"]:
        filter_arg = next((a for a in field["args"] if a["name"] == "filter"), None)
        if filter_arg is None:
            continue
        input_type = named(filter_arg["type"])
        extra = ', query: "quarterly"' if any(a["name"] == "query" for a in field["args"]) else ""
        for input_field in schema.types[input_type]["inputFields"]:
            if named(input_field["type"]) != "ID":
                continue
            type_name = input_field["name"].removesuffix("Id").capitalize()
            assert type_name in bobs_ids, input_field["name"]
            call = f"{field['name']}(accountId: $a, filter: $f{extra}, first: 100)"
            query = f"query($a: ID!, $f: {input_type}) {{ {call} {{ totalCount nodes {{ id }} }} }}"
            missing = without_cost(
                await alice.run(query, {"a": mine, "f": {input_field["name"]: to_global(type_name, MISSING_PK)}})
            )
            assert missing == {"data": {field["name"]: {"totalCount": 0, "nodes": []}}}
            for gid in bobs_ids[type_name]:
                foreign = without_cost(await alice.run(query, {"a": mine, "f": {input_field["name"]: gid}}))
                assert foreign == missing, (field["name"], input_field["name"], gid)
                walked += 1
    assert walked >= 8


async def test_the_whole_schema_walked_with_alices_token_shows_nothing_of_bobs(
    alice: Client, schema: Schema, world: World, bobs_ids: dict[str, list[str]]
) -> None:
    mine = to_global("Account", world.alice.id)
    every_foreign = [gid for ids in bobs_ids.values() for gid in ids]
    values: dict[str, Any] = {"accountId": mine, "query": "zanzibar quarterly", "id": every_foreign[0]}
    values["ids"] = every_foreign
    walked = []
    messages_seen = 0
    for field in schema.query["fields"]:
        if operator_scoped(field):
            continue  # FORBIDDEN to Alice: test_every_operator_field_is_forbidden_without_the_operator_scope
        args = [a for a in field["args"] if required(a)]
        for a in args:
            assert a["name"] in values, f"the walk does not know how to call {field['name']}({a['name']}:)"
        declared = ", ".join(f"${a['name']}: {spelled(a['type'])}" for a in args)
        call = ", ".join(f"{a['name']}: ${a['name']}" for a in args)
        if any(a["name"] == "first" for a in field["args"]):
            call = f"{call}, first: 5" if call else "first: 5"
        target = named(field["type"])
        selection = "" if schema.kind(target) in LEAF else f" {{ {schema.selection(target, 3)} }}"
        head = f"query({declared})" if declared else "query"
        query = f"{head} {{ {field['name']}{f'({call})' if call else ''}{selection} }}"
        answer = await alice.run(query, {a["name"]: values[a["name"]] for a in args})
        assert "errors" not in answer, (field["name"], answer.get("errors"))
        text = json.dumps(answer, ensure_ascii=False)
        for gid in every_foreign:
            assert gid not in text, (field["name"], gid)
        for marker in BOB_MARKERS:
            assert marker.lower() not in text.lower(), (field["name"], marker)
        walked.append(field["name"])
        messages_seen += text.count('"__typename": "Message"')
    assert messages_seen > 20  # the walk read real data, not only empty lists
    assert {"accounts", "folders", "labels", "threads", "messages", "search", "node", "nodes"} <= set(walked)


# Every mutation, called with Alice's token and one of Bob's ids (next to ids of Alice's own, where a list is
# taken): how to call each. A new mutation fails the walk until it is listed here.
MESSAGE_PAYLOAD = "{ actions { id state } messages { id } }"
FOLDER_PAYLOAD = "{ action { id state } folder { id } }"


def _input(name: str, payload: str) -> str:
    return f"mutation($input: {name[0].upper()}{name[1:]}Input!) {{ {name}(input: $input) {payload} }}"


SEND_PAYLOAD = "{ id state outbox { id state } message { id } }"


def foreign_calls(mine: dict[str, str], theirs: dict[str, list[str]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """mine: one id of Alice's per type; theirs: every id of Bob's per type (uploads under "Upload")."""
    messages = [[mine["Message"], gid] for kind in ("Message", "Thread") for gid in theirs[kind]]
    calls: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, extra in (
        ("updateMessages", {"starred": True, "addLabels": ["walked"]}),
        ("moveMessages", {"role": "archive"}),
        ("trashMessages", {}),
        ("restoreMessages", {}),
        ("deleteMessages", {}),
    ):
        calls[name] = [(_input(name, MESSAGE_PAYLOAD), {"input": {"ids": ids, **extra}}) for ids in messages]
    calls["moveMessages"] += [
        (_input("moveMessages", MESSAGE_PAYLOAD), {"input": {"ids": [mine["Message"]], "folderId": gid}})
        for gid in theirs["Folder"]
    ]
    folder_calls = [
        ("createFolder", {"accountId": theirs["Account"][0], "name": "Walked"}),
        *(("createFolder", {"accountId": mine["Account"], "name": "Walked", "parentId": g}) for g in theirs["Folder"]),
        *(("renameFolder", {"id": g, "name": "Walked"}) for g in theirs["Folder"]),
        *(("deleteFolder", {"id": g}) for g in theirs["Folder"]),
    ]
    for name, input_ in folder_calls:
        calls.setdefault(name, []).append((_input(name, FOLDER_PAYLOAD), {"input": input_}))
    draft_payload = "{ action { id state } draft { id } }"
    draft_calls = [
        ("createDraft", {"accountId": theirs["Account"][0], "subject": "Walked"}),
        *(("createDraft", {"accountId": mine["Account"], "replyTo": g}) for g in theirs["Message"]),
        *(("updateDraft", {"id": g, "subject": "Walked"}) for g in theirs["Message"]),
        *(("deleteDraft", {"id": g}) for g in theirs["Message"]),
    ]
    for name, input_ in draft_calls:
        calls.setdefault(name, []).append((_input(name, draft_payload), {"input": input_}))
    calls["sendDraft"] = [
        (_input("sendDraft", "{ outboxId state action { id } }"), {"input": {"id": g}}) for g in theirs["Message"]
    ]
    create_hook = (
        'mutation($a: ID!) { createWebhook(accountId: $a, url: "https://example.com/h", events: ["*"]) { secret } }'
    )
    send = _input("sendMessage", SEND_PAYLOAD)
    to = [{"address": "carol@example.test"}]
    calls["sendMessage"] = [
        (send, {"input": {"accountId": theirs["Account"][0], "to": to, "text": "walked"}}),
        *((send, {"input": {"accountId": mine["Account"], "to": to, "replyTo": g}}) for g in theirs["Message"]),
        *((send, {"input": {"accountId": mine["Account"], "to": to, "forward": g}}) for g in theirs["Message"]),
        *((send, {"input": {"accountId": mine["Account"], "to": to, "attachments": [g]}}) for g in theirs["Upload"]),
    ]
    calls["cancelSend"] = [
        (_input("cancelSend", "{ id state outbox { id } }"), {"input": {"id": g}}) for g in theirs["OutboxEntry"]
    ]
    calls["createWebhook"] = [(create_hook, {"a": theirs["Account"][0]})]
    # The operator API, called with Bob's account: Alice's token is not an operator's.
    for name, query, variables in operator_calls(theirs["Account"][0]):
        calls.setdefault(name, []).append((query, variables))
    # Bob has no hooks: a missing one stands in (test_webhooks walks another account's hooks).
    missing_hook = to_global("Webhook", MISSING_PK)
    calls["deleteWebhook"] = [("mutation($id: ID!) { deleteWebhook(id: $id) }", {"id": missing_hook})]
    calls["enableWebhook"] = [("mutation($id: ID!) { enableWebhook(id: $id) { state } }", {"id": missing_hook})]
    return calls


def operator_calls(account: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Every operator field (root Query and Mutation), how to call it, aimed at `account`."""
    imap = {"host": "127.0.0.1", "port": 143, "security": "NONE", "username": "walked", "password": "walked"}
    return [
        ("managedAccounts", "{ managedAccounts { totalCount nodes { id address } } }", {}),
        (
            "addAccount",
            "mutation($i: AddAccountInput!) { addAccount(input: $i) { account { id } problem { code } } }",
            {"i": {"imap": imap}},
        ),
        (
            "setAccountCredentials",
            "mutation($i: SetAccountCredentialsInput!) { setAccountCredentials(input: $i) { account { id } } }",
            {"i": {"accountId": account, "password": "walked"}},
        ),
        ("removeAccount", "mutation($a: ID!) { removeAccount(accountId: $a) { accountId } }", {"a": account}),
        (
            "createOAuth2ConsentLink",
            "mutation($i: OAuth2ConsentInput!) { createOAuth2ConsentLink(input: $i) { url } }",
            {
                "i": {
                    "provider": "google",
                    "login": "walked",
                    "imap": {k: imap[k] for k in ("host", "port", "security")},
                }
            },
        ),
    ]


async def test_every_operator_field_is_forbidden_without_the_operator_scope(
    alice: Client, anonymous: Client, schema: Schema, world: World, gw_settings: Settings
) -> None:
    """Found by their description, so a new operator field must be listed in operator_calls to pass; called
    with a plain, an admin and a read-only token (FORBIDDEN) and without one (UNAUTHENTICATED). Nothing
    changes: every account is still there, with its state."""
    fields = [f for f in schema.query["fields"] + schema.types[schema.mutation["name"]]["fields"] if operator_scoped(f)]
    calls = operator_calls(to_global("Account", world.bob.id))
    assert sorted(f["name"] for f in fields) == sorted(name for name, _, _ in calls)
    http = alice.http
    tokens = {
        "plain": alice,
        "admin": Client(http, await new_token(gw_settings, [world.alice.id, world.bob.id], admin=True)),
        "read-only": Client(http, await new_token(gw_settings, [world.alice.id], read_only=True)),
    }
    operator = Client(http, await new_token(gw_settings, [], operator=True))
    listing = "{ managedAccounts(first: 100) { nodes { id syncState } } }"
    before = await operator.data(listing)
    for name, query, variables in calls:
        for kind, client in tokens.items():
            answer = await client.run(query, variables)
            assert answer.get("data") in (None, {name: None}), (name, kind, answer)
            assert [e["extensions"]["code"] for e in answer["errors"]] == ["FORBIDDEN"], (name, kind, answer)
            assert "operator" in answer["errors"][0]["message"] or kind == "read-only"
        unauthenticated = await anonymous.run(query, variables)
        assert [e["extensions"]["code"] for e in unauthenticated["errors"]] == ["UNAUTHENTICATED"], name
    assert await operator.data(listing) == before


async def test_an_operator_token_reads_no_mail(
    alice: Client, schema: Schema, world: World, gw_settings: Settings, bobs_ids: dict[str, list[str]]
) -> None:
    operator = Client(alice.http, await new_token(gw_settings, [], operator=True))
    assert await operator.data("{ accounts { totalCount nodes { id } } }") == {
        "accounts": {"totalCount": 0, "nodes": []}
    }
    every = [gid for ids in bobs_ids.values() for gid in ids]
    assert await operator.data("query($ids: [ID!]!) { nodes(ids: $ids) { id } }", {"ids": every}) == {
        "nodes": [None] * len(every)
    }
    for field in schema.query["fields"]:
        names = {a["name"] for a in field["args"]}
        if "accountId" not in names:
            continue
        extra = ', query: "zanzibar"' if "query" in names else ""
        selection = ROOT_SELECTIONS.get(field["name"], "{ __typename }")
        query = f"query($a: ID!) {{ {field['name']}(accountId: $a{extra}) {selection} }}"
        expected = ["FORBIDDEN"] if field["name"] == "webhooks" else ["NOT_FOUND"]  # webhooks need the admin scope
        for account in (world.alice.id, world.bob.id):
            answer = await operator.run(query, {"a": to_global("Account", account)})
            assert [e["extensions"]["code"] for e in answer["errors"]] == expected, (field["name"], answer)


SNAPSHOT = """query($a: ID!) {
    folders(accountId: $a, first: 100) { nodes { id name syncState messageCount unreadCount } }
    labels(accountId: $a, first: 100) { nodes { id name } }
    messages(accountId: $a, first: 100) { nodes { id unread starred folders { id } labels { id } } }
    actions(accountId: $a, first: 100) { totalCount nodes { id state } }
    outbox(accountId: $a, first: 100) { totalCount nodes { id state message { id } } }
    changesCursor(accountId: $a) }"""


async def test_every_mutation_with_a_foreign_id_is_not_found_and_changes_nothing(
    alice: Client, bob: Client, schema: Schema, world: World, bobs_ids: dict[str, list[str]]
) -> None:
    mine_account = to_global("Account", world.alice.id)
    alices = await alice.data(
        "query($a: ID!) { messages(accountId: $a, first: 1) { nodes { id } } }", {"a": mine_account}
    )
    mine = {"Account": mine_account, "Message": alices["messages"]["nodes"][0]["id"]}
    before = (
        await alice.data(SNAPSHOT, {"a": mine_account}),
        await bob.data(SNAPSHOT, {"a": bobs_ids["Account"][0]}),
    )
    calls = foreign_calls(mine, {**bobs_ids, "Upload": [to_global("Upload", pk) for pk in world.bob.uploads]})
    walked = []
    for field in schema.types[schema.mutation["name"]]["fields"]:
        assert field["name"] in calls, f"the walk does not know how to call the mutation {field['name']}"
        expected = ["FORBIDDEN"] if operator_scoped(field) else ["NOT_FOUND"]
        for query, variables in calls[field["name"]]:
            answer = await alice.run(query, variables)
            assert [e["extensions"]["code"] for e in answer.get("errors") or ()] == expected, (query, variables)
            text = json.dumps(answer, ensure_ascii=False)
            for marker in BOB_MARKERS:
                assert marker.lower() not in text.lower(), (field["name"], marker)
        walked.append(field["name"])
    after = (
        await alice.data(SNAPSHOT, {"a": mine_account}),
        await bob.data(SNAPSHOT, {"a": bobs_ids["Account"][0]}),
    )
    assert after == before
    assert {"updateMessages", "moveMessages", "createFolder", "renameFolder", "deleteFolder"} <= set(walked)
    assert {"sendMessage", "cancelSend"} <= set(walked)


# Subscriptions, over a real websocket (graphql-transport-ws) and over SSE: every field of the Subscription type,
# called with Alice's token and Bob's account (Bob's ids in its other ID arguments, `after` at Bob's first change),
# answers exactly as for an account that does not exist. A field that skipped the account check would replay
# Bob's history at once instead. New fields are walked as they come; one with an argument the walk cannot fill
# fails it.
WS_PROTOCOL = "graphql-transport-ws"
REFUSAL_WAIT = 10.0  # seconds for a refused subscription to end
QUIET = 1.5  # seconds a subscription that must stay silent is watched (its replay comes at once)


def id_arguments(field: dict[str, Any]) -> dict[str, str]:
    """A field's ID arguments besides accountId, with the node type each takes (folderId: Folder)."""
    found = {}
    for a in field["args"]:
        if named(a["type"]) == "ID" and a["name"] != "accountId":
            kind = a["name"].removesuffix("Id")
            found[a["name"]] = kind[:1].upper() + kind[1:]
    return found


def subscription_call(schema: Schema, field: dict[str, Any], values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The document calling a Subscription field with those of `values` it takes, and its variables."""
    for a in field["args"]:
        assert a["name"] in values or not required(a), (
            f"the walk does not know how to call the subscription {field['name']}({a['name']}:)"
        )
    args = [a for a in field["args"] if a["name"] in values]
    declared = ", ".join(f"${a['name']}: {spelled(a['type'])}" for a in args)
    call = ", ".join(f"{a['name']}: ${a['name']}" for a in args)
    selection = schema.selection(named(field["type"]), 1)
    query = f"subscription({declared}) {{ {field['name']}({call}) {{ {selection} }} }}"
    return query, {a["name"]: values[a["name"]] for a in args}


def foreign_values(field: dict[str, Any], account: str, after: str, ids: dict[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {"accountId": account, "after": after}
    for name, kind in id_arguments(field).items():
        assert kind in ids, f"the walk has no {kind} id for {field['name']}({name}:)"
        values[name] = ids[kind]
    return values


def without_extensions(message: dict[str, Any]) -> dict[str, Any]:
    payload = message.get("payload")
    if isinstance(payload, dict):
        message = {**message, "payload": {k: v for k, v in payload.items() if k != "extensions"}}
    return message


class Socket:
    """A graphql-transport-ws connection of one token, running one operation at a time."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.last_id = 0

    async def operation(self, query: str, variables: dict[str, Any], wait: float) -> list[dict[str, Any]]:
        """The operation's messages (without id and extensions) up to its `complete` or `error`, or those that
        came within `wait` seconds (then the client completes it)."""
        self.last_id += 1
        op = str(self.last_id)
        payload = {"query": query, "variables": variables}
        await self.ws.send(json.dumps({"id": op, "type": "subscribe", "payload": payload}))
        got: list[dict[str, Any]] = []
        try:
            async with asyncio.timeout(wait):
                while True:
                    message = json.loads(await self.ws.recv())
                    if message.get("id") != op:
                        continue  # a late event of an operation completed before
                    got.append(without_extensions({k: v for k, v in message.items() if k != "id"}))
                    if message["type"] in ("complete", "error"):
                        return got
        except TimeoutError:
            await self.ws.send(json.dumps({"id": op, "type": "complete"}))
        return got


@asynccontextmanager
async def socket(gateway: ServerThread, token: str) -> AsyncIterator[Socket]:
    url = gateway.url.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=[websockets.Subprotocol(WS_PROTOCOL)]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        yield Socket(ws)


async def first_cursor(client: Client, account: str) -> str:
    """The cursor right after the account's first change: a replay from it holds all its mail."""
    data = await client.data("query($a: ID!) { changes(accountId: $a, first: 1) { cursor } }", {"a": account})
    cursor: str = data["changes"]["cursor"]
    return cursor


def shows_nothing_of_bobs(answer: object, bobs_ids: dict[str, list[str]], where: str) -> None:
    text = json.dumps(answer, ensure_ascii=False)
    for gid in (gid for ids in bobs_ids.values() for gid in ids):
        assert gid not in text, (where, gid)
    for marker in BOB_MARKERS:
        assert marker.lower() not in text.lower(), (where, marker)


@pytest.fixture(scope="module")
async def refusal_calls(
    bob: Client, schema: Schema, bobs_ids: dict[str, list[str]]
) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """Per Subscription field: its name, its document, the variables naming Bob's account and ids, and the
    same naming a missing account and missing ids."""
    bobs_first = await first_cursor(bob, bobs_ids["Account"][0])
    foreign = {kind: ids[0] for kind, ids in bobs_ids.items()}
    missing = {kind: to_global(kind, MISSING_PK) for kind in bobs_ids}
    missing_after = encode_change_cursor(MISSING_PK, 1)
    calls = []
    for field in schema.subscription["fields"]:
        query, theirs = subscription_call(schema, field, foreign_values(field, foreign["Account"], bobs_first, foreign))
        _, nobodys = subscription_call(schema, field, foreign_values(field, missing["Account"], missing_after, missing))
        calls.append((field["name"], query, theirs, nobodys))
    return calls


async def test_every_subscription_with_a_foreign_account_reads_like_a_missing_one_over_websockets(
    gateway: ServerThread,
    world: World,
    bobs_ids: dict[str, list[str]],
    refusal_calls: list[tuple[str, str, dict[str, Any], dict[str, Any]]],
) -> None:
    async with socket(gateway, world.token_alice) as ws:
        for name, query, theirs, nobodys in refusal_calls:
            missing = await ws.operation(query, nobodys, REFUSAL_WAIT)
            foreign = await ws.operation(query, theirs, REFUSAL_WAIT)
            shows_nothing_of_bobs(foreign, bobs_ids, name)
            assert foreign == missing, name
            assert [m["type"] for m in missing] == ["next", "complete"], (name, missing)
            assert [e["extensions"]["code"] for e in missing[0]["payload"]["errors"]] == ["NOT_FOUND"], name
    assert {"changes", "messageAdded", "threadUpdated", "folderCountsChanged"} <= {c[0] for c in refusal_calls}


async def test_every_subscription_with_a_foreign_account_reads_like_a_missing_one_over_sse(
    http: httpx.AsyncClient,
    world: World,
    bobs_ids: dict[str, list[str]],
    refusal_calls: list[tuple[str, str, dict[str, Any], dict[str, Any]]],
) -> None:
    async def answer(query: str, variables: dict[str, Any]) -> list[tuple[str, Any]]:
        """The stream's events up to `complete`, or those that came within REFUSAL_WAIT."""
        got: list[tuple[str, Any]] = []
        async with sse_stream(http, query, variables, world.token_alice) as response:
            assert response.status_code == 200, response.text
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(REFUSAL_WAIT):
                    async for event in sse_events(response):
                        if event.kind == "comment":
                            continue
                        data = {k: v for k, v in event.data.items() if k != "extensions"} if event.data else None
                        got.append((event.kind, data))
                        if event.kind == "complete":
                            break
        return got

    for name, query, theirs, nobodys in refusal_calls:
        missing = await answer(query, nobodys)
        foreign = await answer(query, theirs)
        shows_nothing_of_bobs(foreign, bobs_ids, name)
        assert foreign == missing, name
        assert [kind for kind, _ in missing] == ["next", "complete"], (name, missing)
        assert [e["extensions"]["code"] for e in missing[0][1]["errors"]] == ["NOT_FOUND"], name


async def test_subscriptions_of_alices_account_with_foreign_ids_read_like_missing_ones(
    gateway: ServerThread, alice: Client, schema: Schema, world: World, bobs_ids: dict[str, list[str]]
) -> None:
    """Alice's own account with Bob's ids in the other ID arguments (messageAdded's folderId): the replay of
    Alice's history through Bob's folder is what it is through a folder that does not exist. Alice's own folder
    shows the replay comes within the watch."""
    mine = to_global("Account", world.alice.id)
    own = {"Folder": to_global("Folder", world.alice.folders["INBOX"])}
    base = {"accountId": mine, "after": await first_cursor(alice, mine)}
    walked = []
    async with socket(gateway, world.token_alice) as ws:
        for field in schema.subscription["fields"]:
            for name, kind in id_arguments(field).items():
                assert kind in own, f"the walk has no {kind} id of Alice's for {field['name']}({name}:)"
                assert kind in bobs_ids, f"the walk has no {kind} ids of Bob's for {field['name']}({name}:)"
                query, variables = subscription_call(schema, field, {**base, name: own[kind]})
                control = await ws.operation(query, variables, QUIET)
                assert control, (field["name"], name)
                assert all(m["type"] == "next" and "errors" not in m["payload"] for m in control)
                missing = await ws.operation(query, {**variables, name: to_global(kind, MISSING_PK)}, QUIET)
                for gid in bobs_ids[kind]:
                    foreign = await ws.operation(query, {**variables, name: gid}, QUIET)
                    assert foreign == missing, (field["name"], name, gid)
                    shows_nothing_of_bobs(foreign, bobs_ids, field["name"])
                walked.append((field["name"], name))
    assert ("messageAdded", "folderId") in walked
