"""The engine's pool pings a connection only when it has sat idle (schema.db._ping_when_idle), and a dead one is
replaced before anyone uses it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from schema.db import create_engine


def _counting_pings(engine: Any) -> list[int]:
    dialect = engine.sync_engine.dialect
    pings: list[int] = []
    original = dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        pings.append(1)
        return bool(original(dbapi_connection))

    dialect.do_ping = do_ping
    return pings


async def _connection_id(engine: Any) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(text("SELECT CONNECTION_ID()")))


async def _kill(database_url: str, connection_id: int) -> None:
    killer = create_engine(database_url, pool_size=1)
    try:
        async with killer.connect() as conn:
            await conn.execute(text(f"KILL CONNECTION {connection_id}"))
    finally:
        await killer.dispose()


async def test_a_connection_back_in_the_pool_a_moment_ago_is_not_pinged(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, ping_after=0.5)
    try:
        pings = _counting_pings(engine)
        first = await _connection_id(engine)  # a new connection: not pinged either
        for _ in range(5):
            assert await _connection_id(engine) == first
        assert pings == []
        await asyncio.sleep(0.6)
        assert await _connection_id(engine) == first
        assert pings == [1]  # idle past the threshold: pinged, and it answered
    finally:
        await engine.dispose()


async def test_a_connection_killed_while_idle_is_replaced_before_use(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, ping_after=0.2)
    try:
        victim = await _connection_id(engine)
        await _kill(database_url, victim)
        await asyncio.sleep(0.3)
        assert await _connection_id(engine) != victim  # the ping found it dead: a new connection, no error
    finally:
        await engine.dispose()


async def test_a_connection_killed_within_the_window_fails_once_then_the_pool_reconnects(database_url: str) -> None:
    engine = create_engine(database_url, pool_size=1, ping_after=60)
    try:
        victim = await _connection_id(engine)
        await _kill(database_url, victim)
        with pytest.raises(DBAPIError) as failed:
            await _connection_id(engine)
        assert failed.value.connection_invalidated
        assert await _connection_id(engine) != victim
    finally:
        await engine.dispose()
