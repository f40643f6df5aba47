"""Tenancy, walked by introspection: with Alice's token nothing of Bob's is ever returned, and an id of
Bob's reads exactly like an id that does not exist. New root fields, filters or node types are picked up
by the walk (and fail it until it knows how to call them).

Operator fields (their description says "Operator-scoped": they manage every account) are FORBIDDEN to every
token without the operator scope, admin and read-only ones included, and an operator token reads no mail."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.ids import NODE_TYPES, to_global
from gateway.testing import Client, World
from inboxql.commands import new_token
from schema.settings import Settings

INTROSPECTION = """{ __schema { queryType { name } mutationType { name } types { name kind
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
