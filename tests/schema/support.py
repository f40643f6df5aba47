"""Helpers of the schema tests: an account and a folder written through the write API; a database's id counters."""

from __future__ import annotations

import secrets

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from schema import accounts, folders
from schema.crypto import CredentialBox
from schema.shards import id_tables
from schema.unit import Store


async def new_account(store: Store, box: CredentialBox) -> int:
    user = f"u{secrets.token_hex(4)}"
    endpoint = accounts.ImapEndpoint("127.0.0.1", 143, "none", user)
    return await accounts.create(store, box, f"{user}@example.org", endpoint, "password")


async def new_folder(store: Store, account_id: int, name: str = "INBOX") -> int:
    async with store.unit(account_id) as uow:
        folder = await folders.create(uow, folders.Discovered(name, "/", (), None))
    return folder.id


async def next_ids(engine: AsyncEngine) -> dict[str, int]:
    """The id each numbered table hands out next (its AUTO_INCREMENT counter), by table name."""
    found = {}
    async with engine.connect() as conn:
        for table in id_tables():
            next_id = await conn.scalar(
                text(
                    "SELECT AUTO_INCREMENT FROM information_schema.TABLES "
                    "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = :t"
                ),
                {"t": table.name},
            )
            found[table.name] = int(next_id)
    return found
