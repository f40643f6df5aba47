"""What an InnoDB FULLTEXT index holds: the words of innodb_ft_min_token_size to innodb_ft_max_token_size
characters that are not stopwords (when innodb_ft_enable_stopword is on: the server's stopword table if
innodb_ft_server_stopword_table names one, else InnoDB's default list).

A word outside the index matches nothing, so a search that requires it finds nothing: the gateway's search
drops such words from what it requires (gateway.graphql.search). The server fixes these settings when an index
is built; the gateway reads each shard's once, at the first search of an account it holds.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

from sqlalchemy import column, select, table, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger(__name__)

# InnoDB's default stopword list (INFORMATION_SCHEMA.INNODB_FT_DEFAULT_STOPWORD), for a database user who may
# not read that table (it needs the PROCESS privilege).
INNODB_DEFAULT_STOPWORDS = frozenset(
    {
        "a", "about", "an", "are", "as", "at", "be", "by", "com", "de", "en", "for", "from", "how", "i", "in",
        "is", "it", "la", "of", "on", "or", "that", "the", "this", "to", "was", "what", "when", "where", "who",
        "will", "with", "und", "www",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Vocabulary:
    min_length: int = 3
    max_length: int = 84
    stopwords: frozenset[str] = INNODB_DEFAULT_STOPWORDS

    def indexed(self, word: str) -> bool:
        """Whether the index can hold this word (a run of word characters)."""
        return self.min_length <= len(word) <= self.max_length and word.lower() not in self.stopwords


async def _stopwords(conn: AsyncConnection, enabled: bool, server_table: str | None) -> frozenset[str]:
    if not enabled:
        return frozenset()
    if server_table:
        database, _, name = server_table.partition("/")  # "db_name/table_name"
        words = table(name, column("value"), schema=database)
    else:
        words = table("INNODB_FT_DEFAULT_STOPWORD", column("value"), schema="information_schema")
    try:
        found = (await conn.execute(select(words.c.value))).scalars().all()
    except DBAPIError as error:
        log.warning("cannot read the full-text stopwords (%s): using InnoDB's default list", error.orig)
        return INNODB_DEFAULT_STOPWORDS
    return frozenset(str(w).lower() for w in found)


async def read_vocabulary(conn: AsyncConnection) -> Vocabulary:
    row = (
        await conn.execute(
            text(
                "SELECT @@innodb_ft_min_token_size, @@innodb_ft_max_token_size, @@innodb_ft_enable_stopword,"
                " @@innodb_ft_server_stopword_table"
            )
        )
    ).one()
    smallest, largest, enabled, server_table = row
    return Vocabulary(int(smallest), int(largest), await _stopwords(conn, bool(enabled), server_table))


class VocabularyCache:
    """Each shard's vocabulary (its server fixes the token sizes and stopwords of the indexes it holds), read
    at the first search of one of its accounts and kept for the life of the process."""

    def __init__(self) -> None:
        self._found: dict[int, Vocabulary] = {}
        self._lock = asyncio.Lock()

    async def get(self, shard: int, connect: Callable[[], AbstractAsyncContextManager[AsyncConnection]]) -> Vocabulary:
        """The vocabulary of `shard`; `connect` opens a connection to it, called only when it was never read."""
        found = self._found.get(shard)
        if found is None:
            async with self._lock:
                found = self._found.get(shard)
                if found is None:
                    async with connect() as conn:
                        found = self._found[shard] = await read_vocabulary(conn)
        return found
