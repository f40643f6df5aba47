"""What the FULLTEXT index holds, read from the real MariaDB."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

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


async def test_the_cache_reads_each_shard_once(engine: AsyncEngine) -> None:
    cache = VocabularyCache()
    opened: list[int] = []

    def connect(shard: int) -> Callable[[], AbstractAsyncContextManager[AsyncConnection]]:
        def opening() -> AbstractAsyncContextManager[AsyncConnection]:
            opened.append(shard)
            return engine.connect()

        return opening

    first = await cache.get(0, connect(0))
    assert await cache.get(0, connect(0)) is first
    assert await cache.get(1, connect(1)) == first  # the same server here, read again for its own shard
    assert opened == [0, 1]
