"""Limits and errors: depth, tokens, aliases, computed cost, the Redis rate limit, codes and masking."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from graphql import GraphQLError, parse

from gateway import limits
from gateway.config import GatewayConfig
from gateway.errors import INTERNAL_MESSAGE, NotFound, coded
from gateway.graphql.schema import build_schema
from gateway.ids import to_global
from gateway.limits import costed, query_cost
from gateway.testing import Client, ServerThread, World, deliver, start_gateway
from schema import changelog, tokens
from schema.crypto import CredentialBox
from schema.settings import Settings
from schema.unit import Store
from tests.gateway.test_changes import CURSOR, fresh_account, mail
from tests.gateway.test_hardening import Socket
from tests.gateway.test_subscriptions import seq_of


def codes(answer: dict[str, object]) -> list[str]:
    errors = answer.get("errors")
    assert isinstance(errors, list)
    return [e["extensions"]["code"] for e in errors]


async def test_too_deep_a_query_is_refused_before_it_runs(alice: Client, world: World) -> None:
    nested = "id"
    for _ in range(8):
        nested = f"thread {{ lastMessage {{ {nested} }} }}"
    answer = await alice.run(f'{{ node(id: "{to_global("Message", 1)}") {{ ... on Message {{ {nested} }} }} }}')
    assert codes(answer) == ["BAD_USER_INPUT"]
    assert "data" not in answer
    assert "exceeds maximum operation depth" in str(answer["errors"])


async def test_too_many_aliases_are_refused(alice: Client) -> None:
    query = "{ " + " ".join(f"a{i}: __typename" for i in range(40)) + " }"
    answer = await alice.run(query)
    assert codes(answer) == ["BAD_USER_INPUT"]


async def test_too_many_tokens_are_refused(alice: Client) -> None:
    query = "{ " + " ".join("__typename" for _ in range(6000)) + " }"
    answer = await alice.run(query)
    assert codes(answer) == ["BAD_USER_INPUT"]
    assert "token" in str(answer["errors"]).lower()


async def test_the_cost_is_reported_and_a_costly_query_refused(alice: Client, world: World) -> None:
    account = to_global("Account", world.alice.id)
    cheap = await alice.run(
        "query($a: ID!) { threads(accountId: $a, first: 10) { nodes { subject } } }", {"a": account}
    )
    assert cheap["extensions"]["cost"]["requested"] == 2 + 10 * 1
    assert cheap["extensions"]["cost"]["maximum"] == GatewayConfig().max_cost
    costly = await alice.run(
        """query($a: ID!) { threads(accountId: $a, first: 100) { nodes {
            messages(first: 100) { nodes { subject attachments { filename } } } } } }""",
        {"a": account},
    )
    assert codes(costly) == ["BAD_USER_INPUT"]
    assert "data" not in costly
    assert costly["extensions"]["cost"]["requested"] == 2 + 100 * (1 + 2 + 100 * (1 + 1))


@pytest.mark.parametrize(
    ("query", "variables", "expected"),
    [
        ("{ __typename }", {}, 0),
        ("{ accounts { totalCount } }", {}, 3),
        ("{ accounts(first: 5) { edges { node { id progress { folders } } } } }", {}, 2 + 5 * 2),
        ("query($n: Int) { accounts(last: $n) { nodes { id } } }", {"n": 7}, 2 + 7),
        ('{ nodes(ids: ["a", "b", "c"]) { id ... on Message { thread { id } } } }', {}, 3 * 2),
        ("fragment F on Account { progress { folders } } { accounts(first: 2) { nodes { ...F } } }", {}, 2 + 2 * 2),
        # The delta feed's page is counted at its size (first, 100 when absent), like a connection.
        ('{ changes(accountId: "a") { changes { cursor } } }', {}, 2 + 100 * 1),
        ('{ changes(accountId: "a", first: 500) { changes { object { id } } } }', {}, 2 + 500 * 2),
        # A row's parts: the list is one read, what each item nests counts LIST_BOUND (5) times.
        ('{ node(id: "m") { ... on Message { attachments { filename } from { address } } } }', {}, 1 + 1 + 1),
        ('{ node(id: "m") { ... on Message { folders { account { id } } } } }', {}, 1 + 1 + 5 * 1),
        # A list with a page size of its own counts at it: an action's messages (up to 1,000), 20 by default.
        ('{ node(id: "a") { ... on Action { affectedMessages { id } } } }', {}, 1 + 1 + 20 * 1),
        ('{ node(id: "a") { ... on Action { affectedMessages(first: 1000) { thread { id } } } } }', {}, 2 + 1000 * 2),
        # Variables count as the operation runs with them: a default stands for a variable not sent.
        ("query($n: Int = 50) { accounts(first: $n) { nodes { id } } }", {}, 2 + 50),
        ("query($n: Int = 50) { accounts(first: $n) { nodes { id } } }", {"n": 3}, 2 + 3),
        (
            "mutation($i: UpdateMessagesInput!) { updateMessages(input: $i) { messages { id } } }",
            {"i": {"ids": ["a", "b", "c"], "unread": False}},
            10 + 3 * (1 + 1),
        ),
    ],
)
def test_the_cost_model(query: str, variables: dict[str, object], expected: int) -> None:
    schema = build_schema()._schema
    assert query_cost(schema, parse(query), None, variables) == expected


@pytest.fixture
def costings(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The variables of each cost analysis actually run (not taken from what was kept)."""
    ran: list[Any] = []

    def counting(schema: Any, document: Any, operation_name: str | None, variables: Any) -> int:
        ran.append(variables)
        return query_cost(schema, document, operation_name, variables)

    monkeypatch.setattr(limits, "query_cost", counting)
    return ran


PAGED = "query($n: Int, $m: Int = 2) { accounts(first: $n) { nodes { id } } a2: accounts(first: $m) { totalCount } }"


def test_a_document_sent_again_with_the_same_variables_is_costed_once(costings: list[Any]) -> None:
    schema = build_schema()._schema
    document = parse(PAGED)
    assert costed(schema, document, None, {"n": 7}) == 2 + 7 + 2 + 1
    assert costed(schema, document, None, {"n": 7}) == 2 + 7 + 2 + 1
    assert costings == [{"n": 7}]
    # Other variables, another operation name, another schema, another document: costed anew, each right.
    assert costed(schema, document, None, {"n": 9}) == 2 + 9 + 2 + 1
    assert costed(schema, document, None, {"n": 7, "m": 50}) == 2 + 7 + 2 + 1
    assert costed(schema, document, None, {"n": 7.0}) == 2 + 7 + 2 + 1  # coerced to the Int 7
    assert costed(schema, document, None, None) == 2 + 20 + 2 + 1
    assert costed(schema, document, "Other", {"n": 7}) == 0  # no operation of that name
    assert costed(build_schema()._schema, document, None, {"n": 7}) == 2 + 7 + 2 + 1
    assert costed(schema, parse(PAGED), None, {"n": 7}) == 2 + 7 + 2 + 1
    assert len(costings) == 8


class Size(int):
    """An int of another type: its JSON text is an int's, but it is not plain JSON."""


def test_variables_that_are_not_plain_json_are_costed_each_time(costings: list[Any]) -> None:
    schema = build_schema()._schema
    document = parse(PAGED)
    for variables in ({"n": Size(5)}, {"n": 5, "x": {"when": object()}}, {"n": 5, "x": list(range(300))}):
        assert costed(schema, document, None, variables) == 2 + 5 + 2 + 1
        assert costed(schema, document, None, variables) == 2 + 5 + 2 + 1
    assert len(costings) == 6


def test_what_is_kept_per_document_is_bounded(costings: list[Any]) -> None:
    schema = build_schema()._schema
    document = parse(PAGED)
    for n in range(limits.KEPT_COSTS + 10):
        assert costed(schema, document, None, {"n": n}) == 2 + n + 2 + 1
    address = id(document)
    assert len(limits._COSTS._entries[address][1]) == limits.KEPT_COSTS
    del document
    assert address not in limits._COSTS._entries  # dropped with its document


NESTED = """query($a: ID!, $n: Int) { threads(accountId: $a, first: $n) { nodes {
    messages(first: $n) { nodes { subject } } } } }"""


async def test_a_kept_cost_does_not_let_a_costly_query_through(alice: Client, world: World) -> None:
    """The same document, costed once with small pages, is refused with pages too large."""
    account = to_global("Account", world.alice.id)
    for _ in range(2):
        cheap = await alice.run(NESTED, {"a": account, "n": 5})
        assert "errors" not in cheap, cheap
        assert cheap["extensions"]["cost"]["requested"] == 2 + 5 * (1 + 2 + 5)
    costly = await alice.run(NESTED, {"a": account, "n": 100})
    assert codes(costly) == ["BAD_USER_INPUT"]
    assert "data" not in costly
    assert costly["extensions"]["cost"]["requested"] == 2 + 100 * (1 + 2 + 100)
    again = await alice.run(NESTED, {"a": account, "n": 5})
    assert again["extensions"]["cost"]["requested"] == 2 + 5 * (1 + 2 + 5)


# A page of 500 changes, each nesting its thread's 100 messages and their bodies: 500 * (1 + 1 + 1 + 2 + 100).
FEED_OF_THREADS = """query($a: ID!) { changes(accountId: $a, first: 500) { changes { object { ... on Message {
    thread { messages(first: 100) { nodes { textBody htmlBody } } } } } } } }"""
# Sent without variables, it runs 100 threads of 100 messages: 2 + 100 * (1 + 2 + 100).
DEFAULTED = """query($a: ID!, $n: Int = 100) { threads(accountId: $a, first: $n) { nodes {
    messages(first: $n) { nodes { subject } } } } }"""


@pytest.mark.parametrize(("query", "cost"), [(FEED_OF_THREADS, 2 + 500 * 105), (DEFAULTED, 2 + 100 * 103)])
async def test_undercounted_queries_are_refused_over_http(alice: Client, world: World, query: str, cost: int) -> None:
    """Both used to pass the limit of 5000 (106 and 462 points) and run."""
    answer = await alice.run(query, {"a": to_global("Account", world.alice.id)})
    assert codes(answer) == ["BAD_USER_INPUT"], answer
    assert "data" not in answer
    assert answer["extensions"]["cost"]["requested"] == cost


# Each event of this subscription costs 1 + (1 + 1) = 3 (the change, its object, the message's thread).
EVENTS = """subscription($a: ID!, $after: String) { changes(accountId: $a, after: $after) {
    cursor object { id ... on Message { thread { id } } } } }"""
BUDGET = 40


@pytest.fixture
async def metered(gw_settings: Settings, world: World) -> AsyncIterator[ServerThread]:
    server = start_gateway(gw_settings, GatewayConfig(rate_limit_points=BUDGET, rate_limit_window_seconds=3600))
    try:
        yield server
    finally:
        server.stop()


async def test_a_subscription_spends_its_cost_for_every_event(
    metered: ServerThread, gw_store: Store, credential_box: CredentialBox
) -> None:
    """A replay of 20 messages' changes (`after:`) costs more than the token's budget of 40: the subscription gets
    the events the budget pays for, then RATE_LIMITED. (It used to be charged 3 once, and replay everything.)"""
    each = query_cost(build_schema()._schema, parse(EVENTS), None, {"a": "a"})
    assert each == 3
    async with httpx.AsyncClient(base_url=metered.url, timeout=30) as http:
        fresh = await fresh_account(gw_store, credential_box, http)
        start = (await fresh.client.data(CURSOR, {"acc": fresh.gid}))["changesCursor"]  # spends 1
        await deliver(gw_store, fresh.id, fresh.inbox, [(mail(f"replayed {i}"), []) for i in range(20)])
        async with gw_store.sessions() as session:
            logged = len(await changelog.read(session, fresh.id, seq_of(start), 1000, None))
        assert logged * each > 2 * BUDGET

        socket = await Socket.open(metered, fresh.client.token)
        try:
            variables = {"a": fresh.gid, "after": start}
            await socket.ws.send(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": EVENTS, "variables": variables}})
            )
            events: list[dict[str, Any]] = []
            errors: list[dict[str, Any]] = []
            async with asyncio.timeout(15):
                while not errors:
                    message = json.loads(await socket.ws.recv())
                    if message["type"] == "error":
                        errors = message["payload"]
                    elif message["type"] == "next" and message["payload"].get("errors"):
                        errors = message["payload"]["errors"]
                    elif message["type"] == "next":
                        events.append(message["payload"]["data"]["changes"])
        finally:
            await socket.ws.close()
    assert [e["extensions"]["code"] for e in errors] == ["RATE_LIMITED"]
    # The cursor query spent 1 and the start 3: the rest pays for (40 - 1 - 3) // 3 = 12 events.
    assert len(events) == (BUDGET - 1 - each) // each
    assert [seq_of(e["cursor"]) for e in events] == sorted(seq_of(e["cursor"]) for e in events)


# An hour's window: six quick requests will not straddle two windows.
TIGHT = GatewayConfig(rate_limit_points=60, rate_limit_window_seconds=3600, introspection=False)


@pytest.fixture
async def tight(gw_settings: Settings, world: World) -> AsyncIterator[httpx.AsyncClient]:
    server = start_gateway(gw_settings, TIGHT)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        server.stop()


async def test_the_rate_limit_answers_rate_limited(tight: httpx.AsyncClient, world: World, gw_store: Store) -> None:
    async with gw_store.sessions() as session, session.begin():
        client = Client(tight, await tokens.create_token(session, [world.bob.id]))
    query = "{ accounts(first: 10) { nodes { id } } }"  # costs 12: the sixth request is over 60
    answers = [await client.post(query) for _ in range(6)]
    assert [r.status_code for r in answers] == [200] * 5 + [429]
    assert answers[4].json()["extensions"]["cost"]["remaining"] == 0
    limited = answers[5].json()
    assert codes(limited) == ["RATE_LIMITED"]
    assert "data" not in limited
    assert 0 < int(answers[5].headers["retry-after"]) <= TIGHT.rate_limit_window_seconds + 1


async def test_introspection_can_be_switched_off(tight: httpx.AsyncClient, world: World) -> None:
    client = Client(tight, world.token_alice)
    answer = await client.run("{ __schema { types { name } } }")
    assert codes(answer) == ["FORBIDDEN"]
    assert (await client.data("{ __typename }")) == {"__typename": "Query"}


@pytest.fixture
async def guarded_schema(gw_settings: Settings, world: World) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway without anonymous introspection, and 3 anonymous or introspection requests per address."""
    config = GatewayConfig(anonymous_introspection=False, address_rate_limit=3, rate_limit_window_seconds=3600)
    server = start_gateway(gw_settings, config)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            yield client
    finally:
        server.stop()


def from_address(n: int) -> dict[str, str]:
    """A client address of this test alone (uvicorn takes it from the loopback proxy's X-Forwarded-For)."""
    return {"x-forwarded-for": f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{n}"}


async def test_anonymous_introspection_can_be_switched_off_alone(
    guarded_schema: httpx.AsyncClient, world: World
) -> None:
    anonymous = Client(guarded_schema, None)
    refused = await anonymous.run("{ __schema { queryType { name } } }")
    assert codes(refused) == ["FORBIDDEN"]
    assert "token" in refused["errors"][0]["message"]
    refused = await anonymous.run('fragment T on Query { __type(name: "Message") { name } } { ...T }')
    assert codes(refused) == ["FORBIDDEN"]
    assert (await anonymous.data("{ __typename }")) == {"__typename": "Query"}
    authenticated = Client(guarded_schema, world.token_alice)
    assert (await authenticated.data("{ __schema { queryType { name } } }"))["__schema"]["queryType"]["name"] == "Query"


async def test_anonymous_and_introspection_requests_are_limited_per_address(
    guarded_schema: httpx.AsyncClient, world: World
) -> None:
    me, other = from_address(1), from_address(2)
    query = {"query": "{ __typename }"}
    answers = [await guarded_schema.post("/graphql", json=query, headers=me) for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert codes(answers[3].json()) == ["RATE_LIMITED"]
    assert int(answers[3].headers["retry-after"]) > 0
    alice = {**me, "authorization": f"Bearer {world.token_alice}"}
    # The address's budget is spent for introspection too, with a token; the token's own queries go on.
    introspection = await guarded_schema.post(
        "/graphql", json={"query": "{ __schema { queryType { name } } }"}, headers=alice
    )
    assert introspection.status_code == 429
    assert (await guarded_schema.post("/graphql", json=query, headers=alice)).status_code == 200
    assert (await guarded_schema.post("/graphql", json=query, headers=other)).status_code == 200


def test_unexpected_errors_are_masked_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise RuntimeError("connection string mysql://root:hunter2@db")
    except RuntimeError as exc:
        error = GraphQLError("connection string mysql://root:hunter2@db", path=["threads"], original_error=exc)
    with caplog.at_level(logging.ERROR, logger="gateway.errors"):
        masked = coded(error)
    assert masked.message == INTERNAL_MESSAGE
    assert masked.extensions == {"code": "INTERNAL"}
    assert "hunter2" not in str(masked.formatted)
    assert any(r.exc_info and "hunter2" in str(r.exc_info[1]) for r in caplog.records)


def test_our_own_errors_keep_their_message_and_code() -> None:
    error = GraphQLError("x", path=["node"], original_error=NotFound("Thread not found"))
    assert coded(error).formatted["message"] == "Thread not found"
    assert coded(error).extensions == {"code": "NOT_FOUND"}
