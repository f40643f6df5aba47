"""GraphQL over HTTP as a client sees it: media types, status codes, auth, health."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from gateway import graphiql
from gateway.graphql.loaders import Reader
from gateway.http import GRAPHQL_RESPONSE, preferred_media_type
from gateway.ids import to_global
from gateway.render import dumps
from gateway.testing import Client, World
from schema.unit import Store

TYPENAME = {"query": "{ __typename }"}


async def test_health_and_readiness(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    ready = await http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "redis": "ok"}


async def test_answers_graphql_response_json_when_accepted(http: httpx.AsyncClient) -> None:
    r = await http.post("/graphql", json=TYPENAME, headers={"accept": f"{GRAPHQL_RESPONSE}, application/json"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(GRAPHQL_RESPONSE)
    assert r.json()["data"] == {"__typename": "Query"}


async def test_answers_json_to_legacy_clients(http: httpx.AsyncClient) -> None:
    r = await http.post("/graphql", json=TYPENAME, headers={"accept": "application/json"})
    assert r.headers["content-type"].startswith("application/json")
    r = await http.post("/graphql", json=TYPENAME, headers={"accept": "*/*"})
    assert r.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/json"),
        ("application/json", "application/json"),
        (GRAPHQL_RESPONSE, GRAPHQL_RESPONSE),
        (f"application/json;q=0.9, {GRAPHQL_RESPONSE}", GRAPHQL_RESPONSE),
        (f"application/json, {GRAPHQL_RESPONSE};q=0.5", "application/json"),
        (f"{GRAPHQL_RESPONSE};q=0, application/json", "application/json"),
        ("text/html", "application/json"),
    ],
)
def test_negotiates_the_media_type(accept: str | None, expected: str) -> None:
    assert preferred_media_type(accept) == expected


async def test_a_request_error_has_no_data_and_a_4xx_status(http: httpx.AsyncClient) -> None:
    r = await http.post("/graphql", json={"query": "{ nope "}, headers={"accept": GRAPHQL_RESPONSE})
    assert r.status_code == 400
    body = r.json()
    assert "data" not in body
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    r = await http.post("/graphql", json={"query": "{ nope }"}, headers={"accept": "application/json"})
    assert r.status_code == 200
    assert "data" not in r.json()
    assert r.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_queries_over_get(http: httpx.AsyncClient) -> None:
    r = await http.get("/graphql", params={"query": "{ __typename }"}, headers={"accept": "application/json"})
    assert r.json()["data"] == {"__typename": "Query"}


async def test_an_invalid_token_is_refused_with_401(http: httpx.AsyncClient) -> None:
    for header in ("Bearer iqt_not-a-real-token", "Bearer", "Basic dXNlcjpwdw=="):
        r = await http.post("/graphql", json=TYPENAME, headers={"authorization": header})
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_without_a_token_data_fields_say_unauthenticated(anonymous: Client) -> None:
    answer = await anonymous.run("{ __typename accounts { totalCount } }")
    assert answer["data"] is None
    assert [e["extensions"]["code"] for e in answer["errors"]] == ["UNAUTHENTICATED"]
    answer = await anonymous.run('{ node(id: "QWNjb3VudDox") { id } }')
    assert answer["data"] == {"node": None}
    assert answer["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_revoked_token_stops_working(http: httpx.AsyncClient, world: World, gw_store: Store) -> None:
    from schema import tokens

    async with gw_store.sessions() as session, session.begin():
        token = await tokens.create_token(session, [world.alice.id])
    async with gw_store.sessions() as session, session.begin():
        assert await tokens.revoke(session, token)
    r = await http.post("/graphql", json=TYPENAME, headers={"authorization": f"Bearer {token}"})
    assert r.status_code == 401


async def test_stores_tokens_only_as_hashes(world: World, gw_store: Store) -> None:
    from sqlalchemy import select

    from schema.tokens import ApiToken, accounts_for_token, token_hash

    async with gw_store.sessions() as session:
        rows = (await session.execute(select(ApiToken.token_hash, ApiToken.hint))).all()
        assert token_hash(world.token_alice) in {r.token_hash for r in rows}
        assert all(world.token_alice not in (r.hint, r.token_hash.hex()) for r in rows)
        assert await accounts_for_token(session, world.token_both) == {world.alice.id, world.bob.id}
        assert await accounts_for_token(session, world.token_alice + "x") is None


async def test_the_browser_gets_graphiql(http: httpx.AsyncClient) -> None:
    r = await http.get("/graphql", headers={"accept": "text/html"})
    if graphiql.missing_assets():
        assert r.status_code == 503
        assert "scripts/vendor-graphiql" in r.text
    else:
        assert r.status_code == 200
        assert "/graphiql/static/graphiql.min.js" in r.text
        assert "unpkg.com" not in r.text
        assert "cdn" not in r.text.lower()


def test_graphiql_says_clearly_when_its_assets_are_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    monkeypatch.setattr(graphiql, "STATIC_DIR", tmp_path)
    page = graphiql.graphiql_page()
    assert page.status_code == 503
    assert b"scripts/vendor-graphiql" in page.body


async def test_answers_compact_utf8_json(alice: Client, world: World) -> None:
    r = await alice.post(
        'query($a: ID!) { search(accountId: $a, query: "Viktualienmarkt") { nodes { subject from { name } } } }',
        {"a": to_global("Account", world.alice.id)},
    )
    assert r.json()["data"]["search"]["nodes"] == [
        {"subject": "Grüße aus München", "from": [{"name": "Jürgen Müller"}]}
    ]
    assert "Grüße aus München".encode() in r.content  # UTF-8, as the content type says, not \u escapes
    assert b'": ' not in r.content
    assert b'", "' not in r.content


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"a": [1, "ü", None, True]}, '{"a":[1,"ü",null,true]}'),
        ({"n": 2**70}, '{"n":1180591620717411303424}'),  # beyond orjson's 64 bits: json.dumps writes it
        ({1: "x"}, '{"1":"x"}'),  # a key that is not a string: json.dumps too
        ({"f": float("nan")}, '{"f":null}'),  # json.dumps would write NaN, which is not JSON
    ],
)
def test_dumps_writes_json_for_anything_a_result_holds(value: object, text: str) -> None:
    assert dumps(value) == text


async def test_every_http_response_says_how_long_the_gateway_took(http: httpx.AsyncClient) -> None:
    """`server-timing: app;dur=<ms>, cpu;dur=<ms>` (W3C Server Timing) on answers of every kind: never more than the
    client waited, and the loop's CPU meanwhile never more than that time."""
    for method, path, body in [
        ("POST", "/graphql", TYPENAME),
        ("POST", "/graphql", {"query": "{ nope "}),
        ("GET", "/healthz", None),
        ("GET", "/no-such-page", None),
    ]:
        started = time.perf_counter()
        r = await http.request(method, path, json=body)
        waited = (time.perf_counter() - started) * 1000
        timings = dict(entry.strip().partition(";dur=")[::2] for entry in r.headers["server-timing"].split(","))
        assert set(timings) == {"app", "cpu"}, r.headers["server-timing"]
        assert 0 <= float(timings["app"]) <= waited, (path, timings, waited)
        # A thread cannot use more CPU than time passes (the two clocks are read a moment apart: a hair's room).
        assert 0 <= float(timings["cpu"]) <= float(timings["app"]) + 0.1, (path, timings)


async def test_the_answer_leaves_before_the_request_gives_back_its_connection(
    alice: Client, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Giving the reader's connection back ends its transaction (a ROLLBACK, a round trip to the server): the
    client has its answer first, and the connection still goes back once the answer is out."""
    may_close = threading.Event()
    closed = threading.Event()
    give_back = Reader.close

    async def held_close(self: Reader) -> None:
        await asyncio.to_thread(may_close.wait, 10)
        await give_back(self)
        closed.set()

    monkeypatch.setattr(Reader, "close", held_close)
    query = "query($a: ID!) { messages(accountId: $a, first: 2) { nodes { subject } } }"
    try:
        answer = await asyncio.wait_for(alice.data(query, {"a": to_global("Account", world.alice.id)}), 5)
        assert len(answer["messages"]["nodes"]) == 2
        assert not closed.is_set()
    finally:
        may_close.set()
    assert await asyncio.to_thread(closed.wait, 10)
