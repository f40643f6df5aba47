"""Persisted queries (gateway.graphql.persisted): a hash in place of a registered document, over real HTTP."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

import httpx
import pytest
from strawberry.http import GraphQLRequestData

from gateway.errors import BadUserInput, PersistedQueryNotFound
from gateway.graphql.persisted import PersistedQueries
from gateway.http import GRAPHQL_RESPONSE
from gateway.ids import to_global
from gateway.testing import World


def document() -> tuple[str, str]:
    """A document no other test registered (a fresh alias), and its hash."""
    query = (
        f"query($a: ID!) {{ t{secrets.token_hex(4)}: threads(accountId: $a, first: 3) {{ nodes {{ id subject }} }} }}"
    )
    return query, hashlib.sha256(query.encode()).hexdigest()


def persisted(sha256: str, version: Any = 1) -> dict[str, Any]:
    return {"persistedQuery": {"version": version, "sha256Hash": sha256}}


async def post(http: httpx.AsyncClient, token: str, body: dict[str, Any], accept: str = "application/json") -> Any:
    return await http.post("/graphql", json=body, headers={"authorization": f"Bearer {token}", "accept": accept})


@pytest.mark.parametrize("accept", ["application/json", GRAPHQL_RESPONSE])
async def test_an_unknown_hash_is_a_typed_error_and_spends_nothing(
    http: httpx.AsyncClient, world: World, accept: str
) -> None:
    _, sha256 = document()
    r = await post(http, world.token_alice, {"extensions": persisted(sha256), "variables": {"a": "x"}}, accept)
    assert r.status_code == (400 if accept == GRAPHQL_RESPONSE else 200)
    assert r.headers["content-type"].startswith(accept)
    body = r.json()
    assert "data" not in body
    assert "extensions" not in body
    assert [e["extensions"]["code"] for e in body["errors"]] == ["PERSISTED_QUERY_NOT_FOUND"]


async def test_a_document_sent_once_with_its_hash_runs_by_its_hash(http: httpx.AsyncClient, world: World) -> None:
    query, sha256 = document()
    variables = {"a": to_global("Account", world.alice.id)}
    full = await post(
        http, world.token_alice, {"query": query, "variables": variables, "extensions": persisted(sha256)}
    )
    assert full.status_code == 200
    assert "errors" not in full.json(), full.text
    by_hash = await post(http, world.token_alice, {"variables": variables, "extensions": persisted(sha256.upper())})
    assert by_hash.json()["data"] == full.json()["data"]
    assert len(next(iter(full.json()["data"].values()))["nodes"]) == 3
    assert by_hash.json()["extensions"]["cost"]["requested"] > 0  # costed as the document it stands for


async def test_a_hash_grants_nothing_the_token_could_not_ask_for(http: httpx.AsyncClient, world: World) -> None:
    query, sha256 = document()
    variables = {"a": to_global("Account", world.alice.id)}
    await post(http, world.token_alice, {"query": query, "variables": variables, "extensions": persisted(sha256)})
    r = await post(http, world.token_bob, {"variables": variables, "extensions": persisted(sha256)})
    assert r.json()["data"] is None
    assert [e["extensions"]["code"] for e in r.json()["errors"]] == ["NOT_FOUND"]  # alice's account, to bob


@pytest.mark.parametrize(
    "extensions",
    [
        persisted("0" * 64),  # not the document's hash
        persisted("abc"),
        persisted("g" * 64),
        persisted(hashlib.sha256(b"{ __typename }").hexdigest(), version=2),
        {"persistedQuery": "yes"},
    ],
)
async def test_a_malformed_persisted_query_is_bad_user_input(
    http: httpx.AsyncClient, world: World, extensions: dict[str, Any]
) -> None:
    r = await post(http, world.token_alice, {"query": "{ __typename }", "extensions": extensions})
    assert [e["extensions"]["code"] for e in r.json()["errors"]] == ["BAD_USER_INPUT"]
    assert "data" not in r.json()
    # A document sent under a wrong hash is not registered under it.
    if extensions.get("persistedQuery", {}) == persisted("0" * 64)["persistedQuery"]:
        again = await post(http, world.token_alice, {"extensions": extensions})
        assert again.json()["errors"][0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_FOUND"


def request(query: str | None, sha256: str) -> GraphQLRequestData:
    return GraphQLRequestData(query=query, variables=None, operation_name=None, extensions=persisted(sha256))


def test_the_store_keeps_the_most_recently_used_within_its_bounds() -> None:
    store = PersistedQueries(max_documents=3, max_chars=100, max_document_chars=40)
    docs = [f"{{ a{i}: __typename }}" for i in range(5)]
    hashes = [hashlib.sha256(d.encode()).hexdigest() for d in docs]
    for d, h in zip(docs[:3], hashes[:3], strict=True):
        store.resolve(request(d, h))
    store.resolve(request(None, hashes[0]))  # used: the oldest is now the second
    store.resolve(request(docs[3], hashes[3]))
    assert store.get(hashes[1]) is None
    assert len(store) == 3
    found = request(None, hashes[0])
    store.resolve(found)
    assert found.query == docs[0]
    with pytest.raises(PersistedQueryNotFound):
        store.resolve(request(None, hashes[1]))
    long = "{ __typename }" + " " * 50
    store.resolve(request(long, hashlib.sha256(long.encode()).hexdigest()))  # runs, but is not kept
    assert len(store) == 3
    big = PersistedQueries(max_documents=100, max_chars=60)
    for d, h in zip(docs, hashes, strict=True):
        big.resolve(request(d, h))
    assert len(big) == 60 // len(docs[0])  # the characters bound the store too
    with pytest.raises(BadUserInput):
        big.resolve(request(docs[0], hashes[1]))
