"""Gateway fixtures: two accounts of mail written through the schema write API, tokens, a running gateway.

The gateway tests get a database of their own (`gw_*` fixtures, named apart from the root conftest's so that
no session-scoped fixture of the other tests is ever built from ours): until the migration has it, they add a
generated column and a FULLTEXT index to it, and the shared database must keep equalling the models for
tests/schema/test_migrations.py.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.testing import Client, ServerThread, World, seed_world, start_gateway
from schema.crypto import CredentialBox
from schema.db import create_engine
from schema.settings import Settings
from schema.unit import Store
from tests.conftest import REDIS_URL, throwaway_database


@pytest.fixture(scope="session")
def gw_database_url() -> Iterator[str]:
    with throwaway_database("inboxql_gateway_test") as url:
        yield url


@pytest.fixture(scope="session")
def gw_settings(gw_database_url: str) -> Settings:
    return Settings(database_url=gw_database_url, redis_url=REDIS_URL, secret_key=secrets.token_urlsafe(32))


@pytest.fixture(scope="session")
async def gw_engine(gw_database_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(gw_database_url)
    yield eng
    await eng.dispose()


@pytest.fixture(scope="session")
async def gw_store(gw_engine: AsyncEngine, redis: Redis) -> Store:
    return Store(gw_engine, redis)


@pytest.fixture(scope="session")
async def world(gw_store: Store, credential_box: CredentialBox) -> World:
    return await seed_world(gw_store, credential_box)


@pytest.fixture(scope="session")
def gateway(gw_settings: Settings, world: World) -> Iterator[ServerThread]:
    server = start_gateway(gw_settings)
    yield server
    server.stop()


@pytest.fixture(scope="session")
async def http(gateway: ServerThread) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="session")
def alice(http: httpx.AsyncClient, world: World) -> Client:
    return Client(http, world.token_alice)


@pytest.fixture(scope="session")
def bob(http: httpx.AsyncClient, world: World) -> Client:
    return Client(http, world.token_bob)


@pytest.fixture(scope="session")
def anonymous(http: httpx.AsyncClient) -> Client:
    return Client(http, None)
