"""The Alembic migrations build exactly the tables the models describe, and they run backwards too."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from schema.db import create_database, create_engine, drop_database
from schema.migrate import downgrade, upgrade
from schema.models import Base
from tests.conftest import fresh_database_url


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True, "compare_server_default": False})
    return list(compare_metadata(context, Base.metadata))


def _tables(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names())


async def _inspect_database(url: str) -> tuple[list[Any], set[str], str | None]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            diffs = await conn.run_sync(_differences)
            tables = await conn.run_sync(_tables)
            version = None
            if "alembic_version" in tables:
                version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
            return diffs, tables, version
    finally:
        await engine.dispose()


async def test_upgraded_database_equals_the_models(database_url: str) -> None:
    diffs, tables, version = await _inspect_database(database_url)
    assert diffs == []
    assert set(Base.metadata.tables) <= tables
    assert version is not None


async def test_migrations_downgrade_to_base_and_upgrade_again() -> None:
    url = fresh_database_url("inboxql_migrations")
    assert await create_database(url)
    try:
        # Alembic's env.py runs its own event loop: give it a thread of its own.
        await asyncio.to_thread(upgrade, url)
        _, tables, head = await _inspect_database(url)
        assert set(Base.metadata.tables) <= tables
        assert head is not None

        await asyncio.to_thread(downgrade, url, "base")
        _, tables, version = await _inspect_database(url)
        assert tables - {"alembic_version"} == set()
        assert version is None

        await asyncio.to_thread(upgrade, url)
        diffs, tables, version = await _inspect_database(url)
        assert diffs == []
        assert set(Base.metadata.tables) <= tables
        assert version == head
    finally:
        await drop_database(url)


async def test_upgrade_twice_is_a_no_op(database_url: str) -> None:
    _, _, before = await _inspect_database(database_url)
    await asyncio.to_thread(upgrade, database_url)
    diffs, _, after = await _inspect_database(database_url)
    assert after == before
    assert diffs == []


async def _token_scopes(url: str) -> tuple[set[str], dict[str, Any]]:
    """The columns of api_tokens, and each token's admin flag by hint (None where there is no such column)."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            columns = {c["name"] for c in await conn.run_sync(lambda c: inspect(c).get_columns("api_tokens"))}
            admin = "admin" if "admin" in columns else "NULL"
            rows = await conn.execute(text(f"SELECT hint, {admin} AS admin FROM api_tokens"))
            return columns, {row.hint: row.admin for row in rows}
    finally:
        await engine.dispose()


async def _execute(url: str, statement: str, **params: Any) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(text(statement), params)
    finally:
        await engine.dispose()


async def test_the_admin_scope_migration_gives_no_old_token_admin_and_reverses() -> None:
    url = fresh_database_url("inboxql_migrations")
    assert await create_database(url)
    insert = "INSERT INTO api_tokens (token_hash, hint, created_at) VALUES (:hash, :hint, UTC_TIMESTAMP(6))"
    insert_admin = (
        "INSERT INTO api_tokens (token_hash, hint, created_at, admin) VALUES (:hash, :hint, UTC_TIMESTAMP(6), 1)"
    )
    try:
        await asyncio.to_thread(upgrade, url, "0002")
        await _execute(url, insert, hash=bytes(32), hint="iqt_old")
        columns, _ = await _token_scopes(url)
        assert "admin" not in columns

        await asyncio.to_thread(upgrade, url, "0003")
        columns, scopes = await _token_scopes(url)
        assert "admin" in columns
        assert scopes == {"iqt_old": 0}  # a token from before the scope existed does not gain it
        await _execute(url, insert_admin, hash=bytes([1]) * 32, hint="iqt_admin")
        assert (await _token_scopes(url))[1] == {"iqt_old": 0, "iqt_admin": 1}

        await asyncio.to_thread(downgrade, url, "0002")
        columns, scopes = await _token_scopes(url)
        assert "admin" not in columns
        assert scopes == {"iqt_old": None, "iqt_admin": None}  # the tokens stay; only the scope goes
        _, _, version = await _inspect_database(url)
        assert version == "0002"

        await asyncio.to_thread(upgrade, url)
        diffs, _, _ = await _inspect_database(url)
        assert diffs == []
        assert (await _token_scopes(url))[1] == {"iqt_old": 0, "iqt_admin": 0}  # a downgrade forgets the scope
    finally:
        await drop_database(url)
