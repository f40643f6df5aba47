"""What the FULLTEXT index holds, read from the real MariaDB."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schema.fulltext import INNODB_DEFAULT_STOPWORDS, VocabularyCache, read_vocabulary


async def test_reads_the_token_sizes_and_stopwords_of_the_server(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        vocabulary = await read_vocabulary(conn)
        sizes = (await conn.execute(text("SELECT @@innodb_ft_min_token_size, @@innodb_ft_max_token_size"))).one()
    assert (vocabulary.min_length, vocabulary.max_length) == tuple(sizes)
    # The test server runs with InnoDB's defaults: its list is the one kept for users who cannot read it.
    assert vocabulary.stopwords == INNODB_DEFAULT_STOPWORDS
    assert not vocabulary.indexed("the")
    assert vocabulary.indexed("invoice")


async def test_the_cache_reads_once(engine: AsyncEngine) -> None:
    cache = VocabularyCache(engine)
    assert await cache.get() is await cache.get()
