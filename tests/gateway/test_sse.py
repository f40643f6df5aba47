"""Subscriptions over graphql-sse (distinct connections mode, gateway/sse.py) against a real gateway over real HTTP:
the npm graphql-sse client follows changes; a raw httpx client checks auth, request errors (4xx, typed, never a
500), validation errors in the stream, queries and mutations, resuming by `after` and by Last-Event-ID, the
keep-alive comments, and that a closed stream gives its database connection back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import pytest

from gateway import sse
from gateway.ids import to_global
from gateway.testing import Mail, ServerThread, World, deliver
from schema.crypto import CredentialBox
from schema.unit import Store
from tests.gateway.test_changes import Fresh, fresh_account, mail
from tests.gateway.test_subscriptions import FOLLOW, NODE_DIR, cursor_now, node_ready, seq_of

STREAM = {"accept": "text/event-stream"}
T = TypeVar("T")


@dataclass
class Event:
    kind: str  # "next", "complete", or "comment" (a line starting with a colon: the stream's keep-alive)
    data: Any = None
    id: str | None = None


async def events(response: httpx.Response) -> AsyncIterator[Event]:
    """The response's SSE events, as the SSE spec's interpretation reads them (only the fields we send)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if "event" in fields:
                data = json.loads(fields["data"]) if fields.get("data") else None
                yield Event(fields["event"], data, fields.get("id"))
            fields = {}
        elif line.startswith(":"):
            yield Event("comment")
        else:
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")


@asynccontextmanager
async def stream(
    http: httpx.AsyncClient,
    query: str,
    variables: dict[str, Any] | None = None,
    token: str | None = None,
    *,
    method: str = "POST",
    headers: dict[str, str] | None = None,
) -> AsyncIterator[httpx.Response]:
    all_headers = {**STREAM, **({"authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
    if method == "GET":
        params = {"query": query, **({"variables": json.dumps(variables)} if variables is not None else {})}
        request = http.build_request("GET", "/graphql", params=params, headers=all_headers)
    else:
        body = {"query": query, **({"variables": variables} if variables is not None else {})}
        request = http.build_request("POST", "/graphql", json=body, headers=all_headers)
    response = await http.send(request, stream=True)
    try:
        yield response
    finally:
        await response.aclose()


async def take(feed: AsyncIterator[Event], n: int, timeout: float = 15) -> list[Event]:
    """The next n `next` events (keep-alive comments skipped); a `complete` before them fails the test."""
    out: list[Event] = []
    async with asyncio.timeout(timeout):
        while len(out) < n:
            event = await anext(feed)
            if event.kind == "complete":
                pytest.fail(f"the stream completed after {len(out)} of {n} events: {out}")
            if event.kind == "next":
                out.append(event)
    return out


async def rest(feed: AsyncIterator[Event], timeout: float = 15) -> list[Event]:
    """Every event up to the end of the stream (which must come)."""
    out: list[Event] = []
    async with asyncio.timeout(timeout):
        async for event in feed:
            if event.kind != "comment":
                out.append(event)
    return out


def on_server(gateway: ServerThread, fn: Callable[[], T]) -> T:
    """Run fn in the gateway's event loop (its thread) and return what it returns."""
    loop = gateway.app.state.services.fanout._task.get_loop()

    async def call() -> T:
        return fn()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=10)


def sse_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("sse-")]


async def eventually(check: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


@pytest.fixture
async def fresh(gw_store: Store, credential_box: CredentialBox, http: httpx.AsyncClient) -> Fresh:
    return await fresh_account(gw_store, credential_box, http)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        ("text/event-stream", True),
        ("text/event-stream; charset=utf-8", True),
        ("application/json, text/event-stream", True),
        ("application/json;q=0.9, text/event-stream", True),
        ("application/json, text/event-stream;q=0.5", False),
        ("text/event-stream;q=0", False),
        ("*/*", False),
        ("application/json", False),
        (None, False),
    ],
)
def test_which_requests_are_event_streams(accept: str | None, expected: bool) -> None:
    assert sse.wants_event_stream(accept) is expected


def test_an_event_is_one_data_line_whatever_its_strings_hold() -> None:
    value = {"subject": "a\r\nb\u2028c\u2029d\x85e Grüße", "n": 1}
    encoded = sse.encode_event("next", {"data": value}, "Y3Vyc29y").decode()
    assert encoded.endswith("\n\n")
    lines = encoded.splitlines()  # the strictest splitter: also at U+2028, U+2029, U+0085
    assert lines == ["id: Y3Vyc29y", "event: next", lines[2], ""]  # the blank line ends the event
    assert json.loads(lines[2].removeprefix("data: ")) == {"data": value}
    assert sse.encode_event("complete") == b"event: complete\ndata:\n\n"


async def test_the_npm_graphql_sse_client_follows_changes(gateway: ServerThread, fresh: Fresh, gw_store: Store) -> None:
    node_ready("graphql-sse")
    start = await cursor_now(fresh)
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("for sse"), [])])
    backlog = seq_of(await cursor_now(fresh)) - seq_of(start)
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(NODE_DIR / "sse.mjs"),
        gateway.url + "/graphql",
        fresh.client.token or "",
        FOLLOW,
        json.dumps({"acc": fresh.gid, "after": start}),
        "0",  # until killed
        cwd=NODE_DIR,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(30):
            assert json.loads(await proc.stdout.readline()) == {"connected": True}
            for _ in range(backlog):
                lines.append(json.loads(await proc.stdout.readline()))
            # Committed while the client listens: it gets every change of it, live.
            await deliver(gw_store, fresh.id, fresh.inbox, [(mail("live for sse"), [])], first_uid=2)
            live = seq_of(await cursor_now(fresh)) - seq_of(start) - backlog
            for _ in range(live):
                lines.append(json.loads(await proc.stdout.readline()))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    assert all("clientError" not in line and "errors" not in line for line in lines), lines
    events = [line["data"]["changes"] for line in lines]
    assert [seq_of(e["cursor"]) for e in events] == list(range(seq_of(start) + 1, seq_of(start) + 1 + len(events)))
    subjects = [e["object"]["subject"] for e in events if e["objectType"] == "MESSAGE"]
    assert subjects == ["for sse", "live for sse"]
    # The client is gone: the gateway closed the subscription (it left the account's doorbell).
    await eventually(lambda: on_server(gateway, lambda: fresh.id not in gateway.app.state.services.fanout._bells))
    assert on_server(gateway, sse_tasks) == []


async def test_a_bad_token_is_refused_with_401(http: httpx.AsyncClient, fresh: Fresh) -> None:
    for header in ("Bearer iqt_not-a-real-token", "Bearer", "Basic dXNlcjpwdw=="):
        async with stream(http, FOLLOW, {"acc": fresh.gid}, headers={"authorization": header}) as r:
            await r.aread()
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_subscription_without_a_token_says_unauthenticated_in_the_stream(
    http: httpx.AsyncClient, fresh: Fresh
) -> None:
    async with stream(http, FOLLOW, {"acc": fresh.gid}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        got = await rest(events(r))
    assert [e.kind for e in got] == ["next", "complete"], got
    assert got[0].data.get("data") is None
    assert [e["extensions"]["code"] for e in got[0].data["errors"]] == ["UNAUTHENTICATED"]
    assert got[0].id is None


@pytest.mark.parametrize(
    ("method", "body", "params", "content_type", "status"),
    [
        ("POST", {"query": "subscription { changes(accountId: "}, None, "application/json", 400),  # syntax
        ("POST", {"query": "{ " + "__typename " * 6000 + "}"}, None, "application/json", 400),  # tokens
        ("POST", b"{not json", None, "application/json", 400),
        ("POST", {"variables": {}}, None, "application/json", 400),  # no query
        ("POST", {"query": 42}, None, "application/json", 400),
        ("POST", {"query": "{ __typename }", "variables": [1]}, None, "application/json", 400),
        ("POST", [{"query": "{ __typename }"}], None, "application/json", 400),  # a batch
        ("POST", "a string", None, "application/json", 400),
        ("POST", {"query": "query A { __typename }", "operationName": "B"}, None, "application/json", 400),
        ("POST", {"query": "query A { __typename } query B { __typename }"}, None, "application/json", 400),
        ("POST", b"query=%7B__typename%7D", None, "application/x-www-form-urlencoded", 415),
        ("GET", None, {"query": 'mutation { deleteWebhook(id: "x") }'}, None, 405),
        ("GET", None, {"query": "{ __typename }", "variables": "{nope"}, None, 400),
        ("GET", None, {}, None, 400),
    ],
)
async def test_request_errors_are_typed_4xx_responses_never_500(
    http: httpx.AsyncClient,
    world: World,
    method: str,
    body: object,
    params: dict[str, str] | None,
    content_type: str | None,
    status: int,
) -> None:
    headers = {**STREAM, "authorization": f"Bearer {world.token_alice}"}
    if content_type is not None:
        headers["content-type"] = content_type
    content = body if isinstance(body, bytes) else None if body is None else json.dumps(body).encode()
    r = await http.request(method, "/graphql", content=content, params=params, headers=headers)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    errors = r.json()["errors"]
    assert errors[0]["extensions"]["code"] == "BAD_USER_INPUT"
    if status == 405:
        assert r.headers["allow"] == "POST"
    if "Syntax Error" in errors[0]["message"] and "tokens" not in errors[0]["message"]:
        assert errors[0]["locations"]


@pytest.mark.parametrize(
    "query",
    [
        "subscription { nope }",
        "{ " + " ".join(f"a{i}: __typename" for i in range(40)) + " }",  # above max_aliases
        "subscription { changes(accountId: 1) { cursor } changes2: changes(accountId: 2) { cursor } }",
    ],
)
async def test_validation_errors_come_in_the_stream(http: httpx.AsyncClient, world: World, query: str) -> None:
    """The protocol: errors of validation are a `next` event of an accepted stream (then `complete`), not a 400."""
    async with stream(http, query, token=world.token_alice) as r:
        assert r.status_code == 200
        got = await rest(events(r))
    assert [e.kind for e in got] == ["next", "complete"]
    assert "data" not in got[0].data  # failed before execution: no data entry, as over HTTP
    assert {e["extensions"]["code"] for e in got[0].data["errors"]} == {"BAD_USER_INPUT"}


async def test_a_too_costly_subscription_is_refused(http: httpx.AsyncClient, fresh: Fresh) -> None:
    costly = (
        "subscription($acc: ID!) { changes(accountId: $acc) { cursor object { ... on Message { thread {"
        " messages(first: 100) { nodes { thread { messages(first: 100) { nodes { subject } } } } } } } } } }"
    )
    async with stream(http, costly, {"acc": fresh.gid}, fresh.client.token) as r:
        got = await rest(events(r), timeout=3)
    assert [e.kind for e in got] == ["next", "complete"]
    assert got[0].data["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert got[0].data["extensions"]["cost"]["requested"] > got[0].data["extensions"]["cost"]["maximum"]


async def test_a_foreign_account_reads_like_a_missing_one(http: httpx.AsyncClient, world: World) -> None:
    async with stream(http, FOLLOW, {"acc": to_global("Account", world.bob.id)}, world.token_alice) as r:
        got = await rest(events(r))
    assert [e.kind for e in got] == ["next", "complete"]
    assert got[0].data["errors"][0]["extensions"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("method", ["POST", "GET"])
async def test_a_query_gives_one_next_then_complete(http: httpx.AsyncClient, world: World, method: str) -> None:
    async with stream(http, "{ accounts { nodes { address } } }", token=world.token_alice, method=method) as r:
        assert r.status_code == 200
        assert r.headers["cache-control"].startswith("no-cache")
        got = await rest(events(r))
    assert [e.kind for e in got] == ["next", "complete"]
    assert got[0].data["data"] == {"accounts": {"nodes": [{"address": world.alice.address}]}}
    assert got[0].data["extensions"]["cost"]["requested"] > 0  # the cost limiter ran, as over HTTP
    assert got[0].id is None


async def test_a_mutation_runs_over_post(http: httpx.AsyncClient, world: World) -> None:
    query = 'mutation { deleteWebhook(id: "V2ViaG9vazo5OTk5OTk5") }'
    async with stream(http, query, token=world.token_alice) as r:
        got = await rest(events(r))
    assert [e.kind for e in got] == ["next", "complete"]
    [error] = got[0].data["errors"]
    assert error["path"] == ["deleteWebhook"]  # the mutation ran: its resolver answered (this token may not)
    assert error["extensions"]["code"] in ("FORBIDDEN", "NOT_FOUND")


async def test_resuming_with_after_gets_exactly_the_missed_changes(
    http: httpx.AsyncClient, fresh: Fresh, gw_store: Store
) -> None:
    start = await cursor_now(fresh)
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("one"), []), (mail("two"), [])])
    first_total = seq_of(await cursor_now(fresh)) - seq_of(start)
    seen: list[Event] = []
    async with stream(http, FOLLOW, {"acc": fresh.gid, "after": start}, fresh.client.token) as r:
        seen += await take(events(r), first_total - 2)  # cut off before the end of the backlog
    # Missed while disconnected: the rest of that backlog and a new delivery.
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("three"), [])], first_uid=3)
    missed = seq_of(await cursor_now(fresh)) - seq_of(seen[-1].data["data"]["changes"]["cursor"])
    async with stream(http, FOLLOW, {"acc": fresh.gid, "after": seen[-1].id}, fresh.client.token) as r:
        seen += await take(events(r), missed)
    changes = [e.data["data"]["changes"] for e in seen]
    assert [e.id for e in seen] == [c["cursor"] for c in changes]  # each event's SSE id is its cursor
    assert [seq_of(c["cursor"]) for c in changes] == list(range(seq_of(start) + 1, seq_of(start) + 1 + len(seen)))
    subjects = [c["object"]["subject"] for c in changes if c["objectType"] == "MESSAGE"]
    assert sorted(subjects[:2]) == ["one", "two"]
    assert subjects[2:] == ["three"]


@pytest.mark.parametrize(
    "resume",
    [
        FOLLOW,  # `after` is a variable: Last-Event-ID replaces its value
        "subscription { changes(accountId: ACC) { cursor operation objectType } }",  # no `after`: it is added
        'subscription { changes(accountId: ACC, after: "START") { cursor objectType } }',  # a literal: replaced
    ],
)
async def test_last_event_id_resumes_a_subscription(
    http: httpx.AsyncClient, fresh: Fresh, gw_store: Store, resume: str
) -> None:
    start = await cursor_now(fresh)
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail("a"), []), (mail("b"), [])])
    total = seq_of(await cursor_now(fresh)) - seq_of(start)
    args = {"acc": fresh.gid, "after": start}
    async with stream(http, FOLLOW, args, fresh.client.token) as r:
        before = await take(events(r), 2)
    # Reconnects as an SSE client does: the request again, with the id of the last event it saw.
    query = resume.replace("ACC", json.dumps(fresh.gid)).replace("START", start)
    variables = args if "$acc" in query else None
    async with stream(http, query, variables, fresh.client.token, headers={"last-event-id": before[-1].id or ""}) as r:
        after = await take(events(r), total - 2)
    seqs = [seq_of(e.id or "") for e in before + after]
    assert seqs == list(range(seq_of(start) + 1, seq_of(start) + 1 + total))


async def test_keep_alive_comments_while_nothing_happens(
    http: httpx.AsyncClient, fresh: Fresh, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sse, "KEEP_ALIVE_SECONDS", 0.2)  # the gateway runs in this process
    async with stream(http, FOLLOW, {"acc": fresh.gid}, fresh.client.token) as r:
        feed = events(r)
        async with asyncio.timeout(10):
            kinds = [(await anext(feed)).kind for _ in range(4)]
    assert kinds == ["comment"] * 4  # one when the stream opens, then one per quiet interval


BIG = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.\n" * 6000  # ~0.5 MB
COPIES = 20  # a message event selects the body this often: ~10 MB, more than the socket buffers hold


async def test_a_blocked_stream_holds_no_database_connection_and_closing_it_ends_the_subscription(
    gateway: ServerThread, http: httpx.AsyncClient, fresh: Fresh, gw_store: Store
) -> None:
    """A client that stops reading mid-batch blocks the server's writes, but the subscription holds no
    database connection meanwhile (events load through their batch, a connection per statement); when the
    client goes away, the subscription ends and leaves the fan-out."""
    start = await cursor_now(fresh)
    raws = [Mail(f"big {i}", "s@example.test", ["me@example.test"], BIG).raw() for i in range(3)]
    await deliver(gw_store, fresh.id, fresh.inbox, [(raw, []) for raw in raws])
    # More changes after the big ones, so that the batch is not over when the server blocks writing.
    await deliver(gw_store, fresh.id, fresh.inbox, [(mail(f"small {i}"), []) for i in range(3)], first_uid=4)
    pool = gateway.app.state.services.engine.pool
    await eventually(lambda: pool.checkedout() == 0)
    bodies = " ".join(f"b{i}: textBody" for i in range(COPIES))
    query = (
        "subscription($acc: ID!, $after: String) { changes(accountId: $acc, after: $after)"
        f" {{ cursor object {{ ... on Message {{ {bodies} }} }} }} }}"
    )
    async with stream(http, query, {"acc": fresh.gid, "after": start}, fresh.client.token) as r:
        assert r.status_code == 200
        # Read nothing: the server renders the big events (statements come and go) and blocks writing.
        await eventually(lambda: on_server(gateway, lambda: fresh.id in gateway.app.state.services.fanout._bells))
        await asyncio.sleep(1.0)
        for _ in range(10):
            await asyncio.sleep(0.05)
            assert pool.checkedout() == 0
        assert on_server(gateway, sse_tasks) != []
    await eventually(lambda: on_server(gateway, lambda: fresh.id not in gateway.app.state.services.fanout._bells))
    await eventually(lambda: on_server(gateway, sse_tasks) == [])
    assert pool.checkedout() == 0


async def test_a_query_gives_its_connection_back(gateway: ServerThread, http: httpx.AsyncClient, world: World) -> None:
    pool = gateway.app.state.services.engine.pool
    async with stream(http, "{ accounts { nodes { address } } }", token=world.token_alice) as r:
        await rest(events(r))
    await eventually(lambda: pool.checkedout() == 0)
