"""The tables that grow with the mail are page compressed, by the models and by the migration that changes an
existing database: what they hold comes back unchanged through that migration and its downgrade, and their
files take less of the disk than their pages."""

from __future__ import annotations

import asyncio

from sqlalchemy import text

from schema.db import create_database, create_engine, drop_database
from schema.migrate import downgrade, upgrade
from schema.models import Base
from tests.conftest import fresh_database_url

# The page-compression migration and the one before it.
REVISION, BEFORE = "0015", "0014"


def _growing_tables() -> set[str]:
    return {name for name, t in Base.metadata.tables.items() if t.dialect_options["mysql"].get("page_compressed")}


async def _page_compressed(url: str) -> set[str]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT table_name, create_options FROM information_schema.tables WHERE table_schema = DATABASE()")
            )
            return {name for name, options in rows if "`PAGE_COMPRESSED`='1'" in (options or "")}
    finally:
        await engine.dispose()


def test_the_tables_that_grow_with_the_mail_are_the_compressed_ones() -> None:
    assert _growing_tables() == {
        "mime_blobs",
        "mime_blob_chunks",
        "messages",
        "attachments",
        "message_places",
        "message_labels",
        "threads",
        "thread_refs",
        "change_log",
    }


async def test_a_migrated_database_page_compresses_exactly_those_tables(database_url: str) -> None:
    assert await _page_compressed(database_url) == _growing_tables()


async def _execute(url: str, *statements: str) -> None:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.begin() as conn:
            for statement in statements:
                await conn.execute(text(statement))
    finally:
        await engine.dispose()


async def _stored(url: str) -> tuple[bytes, str]:
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            blob = await conn.scalar(text("SELECT data FROM mime_blobs WHERE id = 1"))
            log = await conn.scalar(text("SELECT data FROM change_log WHERE account_id = 1 AND seq = 1"))
            return bytes(blob), str(log)
    finally:
        await engine.dispose()


async def _change_log_file(url: str) -> tuple[int, int]:
    """change_log's file after its dirty pages are written out: (allocated bytes, apparent size)."""
    engine = create_engine(url, pool_size=1)
    try:
        async with engine.connect() as conn:
            await conn.execute(text("FLUSH TABLES change_log FOR EXPORT"))
            await conn.execute(text("UNLOCK TABLES"))
            row = (
                await conn.execute(
                    text(
                        "SELECT allocated_size, file_size FROM information_schema.innodb_sys_tablespaces"
                        " WHERE name = CONCAT(DATABASE(), '/change_log')"
                    )
                )
            ).one()
            return int(row[0]), int(row[1])
    finally:
        await engine.dispose()


async def test_the_migration_compresses_an_existing_mirror_keeping_its_rows_and_reverses() -> None:
    url = fresh_database_url("inboxql_storage")
    assert await create_database(url)
    packed = bytes(range(256)) * 40  # more than a page's half: stored off-page
    try:
        await asyncio.to_thread(upgrade, url, BEFORE)
        assert await _page_compressed(url) == set()
        await _execute(
            url,
            f"INSERT INTO mime_blobs (sha256, size, codec, data, chunks) VALUES (REPEAT('a', 32), 1, 'raw',"
            f" X'{packed.hex()}', 0)",
            "INSERT INTO change_log (account_id, seq, object_type, object_id, op, data, created_at)"
            """ VALUES (1, 1, 'message', 7, 'create', '{"subject": "caf\u00e9"}', UTC_TIMESTAMP(6))""",
        )
        before = await _stored(url)
        assert before[0] == packed

        await asyncio.to_thread(upgrade, url, REVISION)
        assert await _page_compressed(url) == _growing_tables()
        assert await _stored(url) == before

        # States like the sync's: the log's pages take a fraction of their size on disk.
        state = '{"subject": "Quarterly report", "from": [{"name": "Anna Wilson", "address": "anna@example.net"}]}'
        await _execute(
            url,
            "INSERT INTO change_log (account_id, seq, object_type, object_id, op, data, created_at)"
            f" SELECT 2, seq, 'message', seq, 'create', '{state}', UTC_TIMESTAMP(6)"
            " FROM seq_1_to_20000",
        )
        allocated, size = await _change_log_file(url)
        assert size > 2 * 1024 * 1024
        assert allocated < size / 2

        await asyncio.to_thread(downgrade, url, BEFORE)
        assert await _page_compressed(url) == set()
        assert await _stored(url) == before
    finally:
        await drop_database(url)
