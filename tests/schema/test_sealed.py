"""Every credential column is re-sealed by a rotation (schema.sealed), and re-sealing keeps what it seals."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import select

from schema import accounts
from schema.crypto import CredentialBox, KeyRing, Purpose
from schema.db import create_engine
from schema.keyring import Key
from schema.models import Account, Base
from schema.sealed import SEALED, reseal
from schema.unit import Store
from tests.conftest import throwaway_database


def test_every_password_or_secret_column_is_listed_for_rotation() -> None:
    """A new sealed column that rotation does not know would stay under an old key and break once it is pruned."""
    listed = {(s.column.class_.__tablename__, s.column.key) for s in SEALED}
    found = {
        (table.name, column.name)
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if any(word in column.name for word in ("password", "secret"))
        or column.name.endswith("_token")  # OAuth2 refresh and access tokens (not token_hash, token_id)
    }
    assert found == listed


RING = [Key(1, "old master"), Key(2, "new master")]


@pytest.fixture
def own_database() -> Iterator[str]:
    """Rotation re-seals every credential of its database: one of its own, sealed with these keys only."""
    with throwaway_database("inboxql_sealed_test") as url:
        yield url


@pytest.fixture
async def own_store(own_database: str) -> AsyncIterator[Store]:
    engine = create_engine(own_database, pool_size=2)
    yield Store(engine)
    await engine.dispose()


async def test_rotation_reseals_under_the_newest_key_and_never_overwrites_a_newer_value(
    own_store: Store, own_database: str
) -> None:
    """A password set by another process between the rotation's read and its write stays as that process set it."""
    store, database_url = own_store, own_database
    old = CredentialBox(KeyRing(RING[:1]))
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", "rotated")
    quiet = await accounts.create(store, old, "quiet@example.test", endpoint, "quiet-pw")
    busy = await accounts.create(store, old, "busy@example.test", endpoint, "busy-pw")

    async def another_process() -> None:
        engine = create_engine(database_url, pool_size=1)
        try:
            await accounts.set_password(Store(engine), CredentialBox(KeyRing(RING)), busy, "set-meanwhile")
        finally:
            await engine.dispose()

    class Racing(CredentialBox):
        """Opens like any box; once the rotation has read `busy`'s old value, another process (a thread with a
        loop and connection of its own) sets a new password, before the rotation writes."""

        raced = False

        def open(self, sealed: bytes, purpose: Purpose) -> str:
            plaintext = super().open(sealed, purpose)
            if plaintext == "busy-pw" and not self.raced:
                self.raced = True
                writer = threading.Thread(target=asyncio.run, args=(another_process(),))
                writer.start()
                writer.join()
            return plaintext

    box = Racing(KeyRing(RING))
    done = await reseal(store.engine, box)
    assert box.raced
    async with store.sessions() as s:
        rows = {a.id: a for a in await s.scalars(select(Account).where(Account.id.in_([quiet, busy])))}
    quiet_sealed, busy_sealed = rows[quiet].imap_password, rows[busy].imap_password
    assert quiet_sealed is not None
    assert busy_sealed is not None
    assert box.key_id(quiet_sealed) == 2
    assert box.open(quiet_sealed, Purpose.ACCOUNT) == "quiet-pw"
    assert box.open(busy_sealed, Purpose.ACCOUNT) == "set-meanwhile"
    assert box.key_id(busy_sealed) == 2
    assert done.changed_meanwhile == 1
    assert done.resealed >= 1
