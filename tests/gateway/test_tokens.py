"""`inboxql token create [--admin]`: what the CLI calls (inboxql.commands.new_token), and the admin scope as
the gateway sees it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from gateway.auth import TokenCache
from gateway.ids import to_global
from gateway.testing import Client, World
from inboxql.commands import new_token
from schema.db import create_engine, session_factory
from schema.models import ApiToken
from schema.settings import Settings
from schema.tokens import PREFIX, UnknownAccounts, lookup, lookup_id, token_hash


async def test_a_created_token_reads_its_accounts(gw_settings: Settings, world: World, http: httpx.AsyncClient) -> None:
    token = await new_token(gw_settings, [world.bob.id])
    assert token.startswith(PREFIX)
    data = await Client(http, token).data("{ accounts { nodes { address } } }")
    assert data == {"accounts": {"nodes": [{"address": world.bob.address}]}}


async def test_unknown_accounts_get_no_token(gw_settings: Settings, world: World) -> None:
    with pytest.raises(UnknownAccounts, match="999999"):
        await new_token(gw_settings, [world.alice.id, 999999])
    with pytest.raises(UnknownAccounts):
        await new_token(gw_settings, [])


# --- the admin scope --------------------------------------------------------------------------------

HOOKS = "query($a: ID!) { webhooks(accountId: $a) { totalCount } }"


async def test_a_token_is_not_admin_unless_asked_and_lookups_say_which(gw_settings: Settings, world: World) -> None:
    plain = await new_token(gw_settings, [world.bob.id])
    admin = await new_token(gw_settings, [world.bob.id], admin=True)
    engine = create_engine(gw_settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            plain_grant = await lookup(session, plain)
            admin_grant = await lookup(session, admin)
            assert plain_grant is not None
            assert admin_grant is not None
            assert (plain_grant.account_ids, plain_grant.admin) == (frozenset({world.bob.id}), False)
            assert (admin_grant.account_ids, admin_grant.admin) == (frozenset({world.bob.id}), True)
            assert await lookup_id(session, plain_grant.token_id) == plain_grant
            assert await lookup_id(session, admin_grant.token_id) == admin_grant
            stored = await session.scalar(select(ApiToken.admin).where(ApiToken.token_hash == token_hash(admin)))
            assert stored is True
        cache = TokenCache(engine, ttl=60)
        plain_viewer = await cache.viewer(plain)
        admin_viewer = await cache.viewer(admin)
        assert plain_viewer is not None
        assert not plain_viewer.admin
        assert admin_viewer is not None
        assert admin_viewer.admin
        by_id = await cache.viewer_by_id(admin_grant.token_id)  # signed download links name the token by id
        assert by_id is not None
        assert by_id.admin
    finally:
        await engine.dispose()


async def test_the_admin_scope_opens_webhooks_of_the_tokens_own_accounts_only(
    gw_settings: Settings, world: World, http: httpx.AsyncClient
) -> None:
    plain = Client(http, await new_token(gw_settings, [world.bob.id]))
    admin = Client(http, await new_token(gw_settings, [world.bob.id], admin=True))
    bob = {"a": to_global("Account", world.bob.id)}
    alice = {"a": to_global("Account", world.alice.id)}
    reads = "{ accounts { nodes { address } } }"
    expected = {"accounts": {"nodes": [{"address": world.bob.address}]}}
    assert await plain.data(reads) == expected
    assert await admin.data(reads) == expected  # admin reads the same accounts, no more

    assert await admin.data(HOOKS, bob) == {"webhooks": {"totalCount": 0}}
    refused = await plain.run(HOOKS, bob)
    assert refused["data"] is None
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    foreign = await admin.run(HOOKS, alice)
    assert foreign["data"] is None
    assert foreign["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert await admin.data("query($a: ID!) { node(id: $a) { id } }", alice) == {"node": None}


async def test_token_create_admin_on_an_unknown_account_creates_nothing(gw_settings: Settings, world: World) -> None:
    engine = create_engine(gw_settings.database_url, pool_size=1)
    try:
        async with session_factory(engine)() as session:
            before = await session.scalar(select(func.count()).select_from(ApiToken))
        with pytest.raises(UnknownAccounts, match="999999"):
            await new_token(gw_settings, [world.bob.id, 999999], admin=True)
        async with session_factory(engine)() as session:
            assert await session.scalar(select(func.count()).select_from(ApiToken)) == before
    finally:
        await engine.dispose()


async def test_many_sockets_rechecking_one_token_at_once_send_one_query(
    gw_settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When a token's cached grant expires, every socket of that token re-checks it (gateway.auth.until_revoked):
    those asking at once share one lookup, for a live token and for a revoked one, instead of a query each (at
    10,000 sockets the queries emptied the pool)."""
    from schema import tokens as token_store

    live = await new_token(gw_settings, [world.bob.id])
    unknown = PREFIX + "x" * 40
    looked_up: list[str] = []
    real_lookup = token_store.lookup

    async def counted(session: Any, token: str) -> Any:
        looked_up.append(token)
        return await real_lookup(session, token)

    monkeypatch.setattr(token_store, "lookup", counted)
    engine = create_engine(gw_settings.database_url, pool_size=2)
    try:
        cache = TokenCache(engine, ttl=60)
        viewers = await asyncio.gather(*(cache.viewer(live) for _ in range(200)))
        refused = await asyncio.gather(*(cache.viewer(unknown) for _ in range(200)))
    finally:
        await engine.dispose()
    assert {v.token_id if v is not None else None for v in viewers} != {None}
    assert all(v == viewers[0] for v in viewers)
    assert refused == [None] * 200
    assert sorted(looked_up) == sorted([live, unknown])


async def test_a_grant_past_half_its_period_answers_at_once_and_is_looked_up_again_behind_the_request(
    gw_settings: Settings, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy token's requests never wait for its lookup (which writes `last_used_at` and commits): past half the
    cache period the cached grant answers and a lookup runs beside it, renewing the grant; a revocation still
    shows within one period."""
    from schema import tokens as token_store

    token = await new_token(gw_settings, [world.bob.id])
    gate = asyncio.Event()
    looked_up: list[str] = []
    real_lookup = token_store.lookup

    async def held(session: Any, token: str) -> Any:
        looked_up.append(token)
        if len(looked_up) > 1:
            await gate.wait()  # the lookup behind the request: as slow as the test says
        return await real_lookup(session, token)

    monkeypatch.setattr(token_store, "lookup", held)
    engine = create_engine(gw_settings.database_url, pool_size=2)
    ttl = 10.0
    try:
        cache = TokenCache(engine, ttl=ttl)
        first = await cache.viewer(token, now=0.0)
        assert first is not None
        assert looked_up == [token]
        # Young: no lookup at all.
        assert await cache.viewer(token, now=ttl / 2 - 0.1) == first
        await asyncio.sleep(0)
        assert len(looked_up) == 1
        # Past half the period: answered from the cache while the lookup it started is held.
        assert await asyncio.wait_for(cache.viewer(token, now=ttl / 2 + 0.1), 1) == first
        for _ in range(20):
            await asyncio.sleep(0.01)
            if len(looked_up) == 2:
                break
        assert len(looked_up) == 2
        # Many requests meanwhile start no second lookup.
        assert all(v == first for v in await asyncio.gather(*(cache.viewer(token, now=ttl / 2 + 1) for _ in range(50))))
        await asyncio.sleep(0.05)
        assert len(looked_up) == 2
        # Revoked, then the held lookup goes on: the grant is dropped, and the next request is refused (looked up
        # itself, as the cache no longer holds it).
        async with session_factory(engine)() as session, session.begin():
            assert await token_store.revoke(session, token)
        gate.set()
        await asyncio.wait_for(asyncio.gather(*cache._refreshes.values()), 10)
        assert await cache.viewer(token, now=ttl / 2 + 2) is None
        await cache.close()
    finally:
        await engine.dispose()


async def test_a_grant_looked_up_again_in_the_background_lives_a_new_period(
    gw_settings: Settings, world: World
) -> None:
    token = await new_token(gw_settings, [world.bob.id])
    engine = create_engine(gw_settings.database_url, pool_size=2)
    try:
        cache = TokenCache(engine, ttl=10.0)
        assert await cache.viewer(token, now=0.0) is not None
        expires = cache._grants[token_hash(token)][0]
        assert await cache.viewer(token, now=6.0) is not None
        await asyncio.wait_for(asyncio.gather(*cache._refreshes.values()), 10)
        # A period from the request that started the lookup.
        assert expires == 10.0
        assert cache._grants[token_hash(token)][0] == 16.0
        await cache.close()
    finally:
        await engine.dispose()
